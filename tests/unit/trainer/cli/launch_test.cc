// `qlorad-train launch` (worker/trainer/cli/launch.h) in-process.
#include "worker/trainer/cli/launch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <string>

#include "tests/unit/trainer/test_util.h"

namespace qlorad::trainer {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;
using testing::WriteFile;

// `launch` in-process, with a /bin/sh script in place of `qlorad-train run` (LaunchOptions::self):
// how rank output is forwarded, how a failure or a signal reaches every rank, and the exit code,
// in milliseconds and without LibTorch in the ranks (real ranks: test_parallel_launch.py).
class LaunchTest : public ::testing::Test {
 protected:
  struct Launched {
    int exit_code = -1;
    std::string out, err;
    double seconds = 0;
  };

  // Runs `nproc` ranks of `body`, a shell script that sees the rank as $RANK and the launcher's
  // arguments as "$@". `mark NAME` and `wait_for NAME` order the ranks; `idle` runs until a
  // signal ends the rank, or exits 9 after 20 s, so a launcher that fails to stop its ranks fails
  // the test instead of hanging it.
  Launched RunRanks(int nproc, const std::string& body) {
    const std::string script = dir_ / "rank.sh";
    WriteFile(script, "#!/bin/sh\nRANK=$4\nDIR=" + dir_.path() + R"sh(
mark() { touch "$DIR/$1"; }
wait_for() { n=0; until [ -e "$DIR/$1" ] || [ $n -ge 1000 ]; do sleep 0.01; n=$((n+1)); done; }
idle() { n=0; while [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done; exit 9; }
)sh" + body);
    chmod(script.c_str(), 0755);
    LaunchOptions options;
    options.nproc = nproc;
    options.spec_path = dir_ / "job.yaml";
    options.json = true;
    options.self = script;
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const auto t0 = std::chrono::steady_clock::now();
    Launched launched;
    launched.exit_code = Launch(options);
    launched.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    launched.out = ::testing::internal::GetCapturedStdout();
    launched.err = ::testing::internal::GetCapturedStderr();
    return launched;
  }

  TempDir dir_;
};

TEST_F(LaunchTest, RankZerosStdoutPassesThroughAndEverythingElseIsPrefixed) {
  const Launched r = RunRanks(2, R"sh(
echo "$RANK: $* ($QLORAD_LOCAL_RANK of $QLORAD_LOCAL_WORLD_SIZE)"
echo "note $RANK" >&2
printf 'last %s' "$RANK"
)sh");
  EXPECT_EQ(r.exit_code, 0);
  const std::string args = "run " + dir_ / "job.yaml" + " --rank ";
  EXPECT_THAT(r.out, ::testing::MatchesRegex("0: " + args +
                                             "0 --world-size 2 --rendezvous 127.0.0.1:[0-9]+ "
                                             "--json \\(0 of 2\\)\nlast 0\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 0] note 0\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 1] 1: " + args + "1 --world-size 2"));
  EXPECT_THAT(r.err, HasSubstr("--json (1 of 2)\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 1] note 1\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 1] last 1\n"));
}

// A rank that never ends its line cannot make the launcher hold an unbounded buffer: the line is
// forwarded in pieces of 1 MiB.
TEST_F(LaunchTest, ALineOverOneMibIsCutAtOneMib) {
  const Launched r = RunRanks(2, R"sh(
if [ "$RANK" = 1 ]; then head -c 1048586 /dev/zero | tr '\0' x; fi
)sh");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.err, "[rank 1] " + std::string(1 << 20, 'x') + "\n[rank 1] xxxxxxxxxx\n");
}

// The first failure is the launch's. The others get SIGTERM, and a stopped one (the usual cause
// of a peer's timeout) is continued so it acts on it rather than waiting 10 s for SIGKILL.
TEST_F(LaunchTest, TheFirstFailureStopsTheOthersEvenAStoppedOneAndIsTheExitCode) {
  const Launched r = RunRanks(3, R"sh(
trap 'echo "rank $RANK got SIGTERM"; exit 3' TERM
case $RANK in
  0) wait_for ready1; wait_for ready2
     n=0; until grep -q '^[0-9]* ([^)]*) T' /proc/$(cat "$DIR/ready2")/stat || [ $n -ge 1000 ]
     do sleep 0.01; n=$((n+1)); done
     echo "rank 0 fails" >&2; exit 5 ;;
  1) mark ready1; idle ;;
  2) echo $$ > "$DIR/ready2.tmp"; mv "$DIR/ready2.tmp" "$DIR/ready2"; kill -STOP $$
     idle ;;
esac
)sh");
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_THAT(r.err, HasSubstr("[rank 0] rank 0 fails\n"));
  EXPECT_THAT(r.err, HasSubstr("launch: rank 0 exited with 5; stopping the others\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 1] rank 1 got SIGTERM\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 2] rank 2 got SIGTERM\n"));
  EXPECT_LT(r.seconds, 8.0) << "a rank waited for SIGKILL";
}

TEST_F(LaunchTest, ARankKilledByASignalFailsTheLaunchWith128PlusTheSignal) {
  const Launched r = RunRanks(2, R"sh(
trap 'exit 3' TERM
if [ "$RANK" = 1 ]; then kill -KILL $$; fi
idle
)sh");
  EXPECT_EQ(r.exit_code, 137);
  EXPECT_THAT(r.err, HasSubstr("launch: rank 1 exited with 137; stopping the others\n"));
}

// SIGTERM to the launcher reaches every rank; ranks that stop on it make the launch exit 3.
TEST_F(LaunchTest, SigtermToTheLauncherReachesEveryRank) {
  const Launched r = RunRanks(3, R"sh(
trap 'echo "rank $RANK stops"; exit 3' TERM
mark "ready$RANK"
if [ "$RANK" = 0 ]; then wait_for ready1; wait_for ready2; kill -TERM $PPID; fi
idle
)sh");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "rank 0 stops\n");
  EXPECT_THAT(r.err, HasSubstr("[rank 1] rank 1 stops\n"));
  EXPECT_THAT(r.err, HasSubstr("[rank 2] rank 2 stops\n"));
  EXPECT_THAT(r.err, Not(HasSubstr("launch:")));
}

}  // namespace
}  // namespace qlorad::trainer
