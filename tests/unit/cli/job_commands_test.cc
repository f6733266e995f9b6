// Commands that fail before or at the connection; no coordinator is needed for these.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>

#include "client/cli/commands.h"

namespace qlorad::cli {
namespace {

// A loopback port with nothing listening: bound to reserve a number, then closed.
std::string ClosedLoopbackAddress() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

struct Ran {
  int exit_code;
  std::string out;
  std::string err;
};

Ran RunCli(const CliOptions& options) {
  std::ostringstream out, err;
  const int exit_code = RunCommand(options, out, err, /*tty=*/false);
  return {exit_code, out.str(), err.str()};
}

TEST(RunCommand, NoServerExitsThreeNamingTheAddress) {
  CliOptions options;
  options.server = ClosedLoopbackAddress();
  for (Command command : {Command::kJobs, Command::kStatus, Command::kWatch, Command::kLogs}) {
    options.command = command;
    options.job_id = "job-1";
    const Ran r = RunCli(options);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_TRUE(r.err.starts_with("error: cannot reach qlorad at " + options.server + ": "))
        << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST(RunCommand, SubmitOfAMissingFileNamesItBeforeConnecting) {
  CliOptions options;
  options.server = ClosedLoopbackAddress();
  options.command = Command::kSubmit;
  options.spec_file = "/nonexistent/dir/job.yaml";
  const Ran r = RunCli(options);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "error: cannot read job spec file '/nonexistent/dir/job.yaml': No such file or "
            "directory\n");
}

TEST(RunCommand, SubmitOfADirectorySaysSo) {
  CliOptions options;
  options.command = Command::kSubmit;
  options.spec_file = "/tmp";
  const Ran r = RunCli(options);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "error: job spec file '/tmp' is a directory\n");
}

}  // namespace
}  // namespace qlorad::cli
