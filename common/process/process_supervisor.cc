#include "common/process/process_supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>

#include "common/process/line_splitter.h"

extern char** environ;

namespace qlorad::process {
namespace {

constexpr auto kDrainAfterExit = std::chrono::seconds(5);
constexpr int kDrainPollMs = 100;

std::string ErrnoText(int err) {
  return std::strerror(err);
}

// Closes the fds it owns unless released; keeps Start's error paths short.
class FdGuard {
 public:
  void Add(int fd) { fds_.push_back(fd); }
  void Release() { fds_.clear(); }
  ~FdGuard() {
    for (int fd : fds_) ::close(fd);
  }

 private:
  std::vector<int> fds_;
};

std::vector<std::string> MergedEnvironment(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> by_key;
  auto add = [&](const std::string& entry) {
    const std::size_t eq = entry.find('=');
    by_key[entry.substr(0, eq)] = entry;
  };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) add(*e);
  for (const std::string& e : extra) add(e);
  std::vector<std::string> env;
  for (auto& [key, entry] : by_key) env.push_back(std::move(entry));
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

ProcessExit ExitFromWaitStatus(int status) {
  ProcessExit exit;
  if (WIFEXITED(status)) {
    exit.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit.exit_code = -1;
    exit.signal = WTERMSIG(status);
  }
  return exit;
}

}  // namespace

StatusOr<std::unique_ptr<ProcessSupervisor>> ProcessSupervisor::Start(const SpawnSpec& spec,
                                                                      ProcessCallbacks callbacks) {
  if (spec.argv.empty()) return InvalidArgument("spawn: empty command line");
  FdGuard guard;
  std::array<int, 2> out{};
  std::array<int, 2> err{};
  // O_CLOEXEC: only the dup2'ed copies may reach the child, or a later child would inherit
  // this one's pipe ends and keep them open past its exit.
  if (::pipe2(out.data(), O_CLOEXEC) != 0 || ::pipe2(err.data(), O_CLOEXEC) != 0) {
    return Internal("spawn: pipe: " + ErrnoText(errno));
  }
  guard.Add(out[0]);
  guard.Add(out[1]);
  guard.Add(err[0]);
  guard.Add(err[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, spec.cwd.c_str());

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The agent blocks SIGINT/SIGTERM for its signal thread and gRPC ignores SIGPIPE; the trainer
  // must see neither, or a cancel would not reach it.
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> argv_strings = spec.argv;
  std::vector<std::string> env_strings = MergedEnvironment(spec.extra_env);
  std::vector<char*> argv = CStrings(argv_strings);
  std::vector<char*> envp = CStrings(env_strings);
  pid_t pid = 0;
  const int rc = spec.search_path
                     ? ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data())
                     : ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::string where = spec.cwd.empty() ? "" : " (in " + spec.cwd + ")";
    return FailedPrecondition("cannot start " + spec.argv[0] + where + ": " + ErrnoText(rc));
  }
  ::close(out[1]);
  ::close(err[1]);
  guard.Release();

  // The raw syscall: glibc 2.36's <sys/pidfd.h> declares pidfd_open without C linkage.
  const int pid_fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  const int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pid_fd < 0 || wake_fd < 0) {
    const std::string why = ErrnoText(errno);
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    for (int fd : {out[0], err[0], pid_fd, wake_fd}) {
      if (fd >= 0) ::close(fd);
    }
    return Internal("spawn: pidfd/eventfd: " + why);
  }
  return std::unique_ptr<ProcessSupervisor>(
      new ProcessSupervisor(pid, out[0], err[0], pid_fd, wake_fd, std::move(callbacks)));
}

ProcessSupervisor::ProcessSupervisor(pid_t pid, int stdout_fd, int stderr_fd, int pid_fd,
                                     int wake_fd, ProcessCallbacks callbacks)
    : pid_(pid),
      stdout_fd_(stdout_fd),
      stderr_fd_(stderr_fd),
      pid_fd_(pid_fd),
      wake_fd_(wake_fd),
      callbacks_(std::move(callbacks)) {
  thread_ = std::thread([this] { Loop(); });
}

ProcessSupervisor::~ProcessSupervisor() {
  if (!Finished()) Cancel(std::chrono::milliseconds(0));
  thread_.join();
  ::close(wake_fd_);
}

void ProcessSupervisor::SignalGroupLocked(int sig) {
  if (!reaped_) ::kill(-pid_, sig);
}

void ProcessSupervisor::Cancel(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    cancelled_ = true;
    const auto deadline = std::chrono::steady_clock::now() + grace;
    if (!kill_deadline_ || deadline < *kill_deadline_) kill_deadline_ = deadline;
    SignalGroupLocked(SIGTERM);
    // A stopped process (SIGSTOP, a debugger, a hung rank frozen by its launcher) leaves SIGTERM
    // pending until it runs again: continue it so it can checkpoint and exit now rather than be
    // killed when the grace period ends (systemd does the same).
    SignalGroupLocked(SIGCONT);
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

void ProcessSupervisor::Signal(int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  SignalGroupLocked(sig);
}

int ProcessSupervisor::KillIfGraceOver() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!kill_deadline_ || killed_ || reaped_) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*kill_deadline_ -
                                                                 std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    SignalGroupLocked(SIGKILL);
    killed_ = true;
    return -1;
  }
  return static_cast<int>(left.count());
}

void ProcessSupervisor::Loop() {
  LineSplitter out_lines;
  LineSplitter err_lines;
  const LineSplitter::Emit on_out = [this](std::string_view line) {
    if (callbacks_.on_stdout_line) callbacks_.on_stdout_line(line);
  };
  const LineSplitter::Emit on_err = [this](std::string_view line) {
    if (callbacks_.on_stderr_line) callbacks_.on_stderr_line(line);
  };
  std::array<char, 65536> buf{};
  auto drain = [&buf](int& fd, short revents, LineSplitter& lines, const LineSplitter::Emit& emit,
                      bool give_up) {
    if (fd < 0) return;
    if (revents != 0) {
      const ssize_t got = ::read(fd, buf.data(), buf.size());
      if (got > 0) {
        lines.Feed(std::string_view(buf.data(), static_cast<std::size_t>(got)), emit);
        return;
      }
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
    } else if (!give_up) {
      return;
    }
    lines.Finish(emit);
    ::close(fd);
    fd = -1;
  };

  int wait_status = 0;
  std::optional<std::chrono::steady_clock::time_point> drain_deadline;
  while (stdout_fd_ >= 0 || stderr_fd_ >= 0 || pid_fd_ >= 0) {
    std::array<pollfd, 4> fds{{{stdout_fd_, POLLIN, 0},
                               {stderr_fd_, POLLIN, 0},
                               {pid_fd_, POLLIN, 0},
                               {wake_fd_, POLLIN, 0}}};
    int timeout_ms = KillIfGraceOver();
    if (drain_deadline) timeout_ms = kDrainPollMs;
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (fds[3].revents != 0) {
      uint64_t count = 0;
      [[maybe_unused]] ssize_t r = ::read(wake_fd_, &count, sizeof(count));
    }
    // A process that left the group (setsid) can hold a pipe open forever; stop reading a while
    // after the child is gone rather than never reporting its exit.
    const bool give_up = drain_deadline && std::chrono::steady_clock::now() > *drain_deadline;
    drain(stdout_fd_, fds[0].revents, out_lines, on_out, give_up);
    drain(stderr_fd_, fds[1].revents, err_lines, on_err, give_up);
    if (fds[2].revents != 0) {
      // The child has exited. Before reaping it (which frees its pid, and with it the process
      // group id), kill whatever it left behind in its group: such orphans would hold our pipes
      // open, and GPU memory with them.
      siginfo_t info{};
      ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT);
      std::lock_guard<std::mutex> lock(mu_);
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &wait_status, 0);
      reaped_ = true;
      ::close(pid_fd_);
      pid_fd_ = -1;
      drain_deadline = std::chrono::steady_clock::now() + kDrainAfterExit;
    }
  }
  ProcessExit exit = ExitFromWaitStatus(wait_status);
  {
    std::lock_guard<std::mutex> lock(mu_);
    exit.cancelled = cancelled_;
    exit_ = exit;
  }
  if (callbacks_.on_exit) callbacks_.on_exit(exit);
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
  }
  finished_cv_.notify_all();
}

ProcessExit ProcessSupervisor::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  finished_cv_.wait(lock, [this] { return finished_; });
  return exit_;
}

std::optional<ProcessExit> ProcessSupervisor::WaitFor(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!finished_cv_.wait_for(lock, timeout, [this] { return finished_; })) return std::nullopt;
  return exit_;
}

bool ProcessSupervisor::Finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

}  // namespace qlorad::process
