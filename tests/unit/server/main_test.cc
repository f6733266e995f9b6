// The `qlorad` executable as a real process: the start line names the real ports (port 0 is
// resolved), it serves gRPC and HTTP there, bad flags fail naming the flag, and SIGTERM or
// SIGINT shut it down cleanly with the store intact.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>

#include "tests/unit/server/test_util.h"

namespace qlorad::server::testing {
namespace {

using ::testing::HasSubstr;

// A child process whose stdout and stderr come back through one pipe.
class Process {
 public:
  explicit Process(std::vector<std::string> args) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      dup2(fds[1], STDERR_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
  }
  ~Process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(out_);
  }

  // Reads output until `pattern` matches or the timeout passes; returns the match or "".
  std::smatch WaitForOutput(const std::regex& pattern, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::smatch match;
    while (!std::regex_search(output_, match, pattern)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !ReadSome(left)) break;
    }
    return match;
  }

  // Waits for the exit; returns the exit code (128 + signal when killed by one).
  int Wait() {
    while (ReadSome(10s)) {
    }
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  void Signal(int signal) { kill(pid_, signal); }
  const std::string& output() const { return output_; }

 private:
  bool ReadSome(std::chrono::milliseconds timeout) {
    pollfd p{out_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = read(out_, buf, sizeof(buf));
    if (n <= 0) return false;
    output_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  std::string output_;
};

const std::regex kStartLine(
    R"(qlorad listening on (127\.0\.0\.1):(\d+) \(http 127\.0\.0\.1:(\d+)\))");

void ExpectCleanShutdownOn(int signal) {
  TempDir dir;
  const std::string db = dir.File("qlorad.db");
  Process qlorad({QLORAD_BINARY, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", db,
                  "--grace-period-s", "1", "--insecure-local"});
  std::smatch start = qlorad.WaitForOutput(kStartLine);
  ASSERT_FALSE(start.empty()) << qlorad.output();
  const int grpc_port = std::stoi(start[2]);
  const int http_port = std::stoi(start[3]);
  EXPECT_GT(grpc_port, 0);

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::JobService::NewStub(channel);
  grpc::ClientContext ctx;
  v1::SubmitJobRequest request;
  request.set_spec_yaml(SpecYaml());
  v1::Job job;
  ASSERT_TRUE(stub->SubmitJob(&ctx, request, &job).ok());

  httplib::Client http("127.0.0.1", http_port);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("qlorad_jobs{state=\"queued\"} 1"));

  qlorad.Signal(signal);
  EXPECT_EQ(qlorad.Wait(), 0) << qlorad.output();

  auto store = Store::Open(db);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->GetJob(job.id())->job.state(), v1::JOB_STATE_QUEUED);
}

TEST(MainTest, ServesOnThePortsItPrintsAndStopsCleanlyOnSigterm) {
  ExpectCleanShutdownOn(SIGTERM);
}

TEST(MainTest, StopsCleanlyOnSigint) {
  ExpectCleanShutdownOn(SIGINT);
}

TEST(MainTest, BadListenAddressFailsNamingTheFlag) {
  TempDir dir;
  Process qlorad(
      {QLORAD_BINARY, "--listen", "no-port-here", "--http", "off", "--db", dir.File("qlorad.db")});
  EXPECT_NE(qlorad.Wait(), 0);
  EXPECT_THAT(qlorad.output(), HasSubstr("--listen"));
}

TEST(MainTest, UnknownFlagIsRefused) {
  Process qlorad({QLORAD_BINARY, "--lisen", "127.0.0.1:0"});
  EXPECT_NE(qlorad.Wait(), 0);
  EXPECT_THAT(qlorad.output(), HasSubstr("lisen"));
}

}  // namespace
}  // namespace qlorad::server::testing
