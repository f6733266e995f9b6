#include "worker/trainer/parallel/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

#include "worker/trainer/exit_codes.h"

namespace qlorad::trainer::parallel {

namespace {

std::atomic<int> g_forward_signal{0};

// A port the kernel just handed out on loopback; rank 0's store binds it a moment later.
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

struct Rank {
  pid_t pid = -1;
  int out = -1;  // read ends of its stdout and stderr
  int err = -1;
  std::string out_partial, err_partial;
  bool running = true;
  bool stopped = false;  // SIGSTOP / SIGTSTP: it cannot act on SIGTERM until continued
  int exit_code = 0;
};

// Writes the complete lines of `chunk` (keeping a partial one for later) to rank 0's stdout or,
// prefixed, to stderr.
void Forward(int rank, bool is_stdout, std::string* partial, const char* data, size_t n) {
  partial->append(data, n);
  size_t start = 0;
  for (size_t nl; (nl = partial->find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = partial->substr(start, nl + 1 - start);
    if (rank == 0 && is_stdout) {
      std::cout << line << std::flush;
    } else {
      std::cerr << "[rank " << rank << "] " << line << std::flush;
    }
  }
  partial->erase(0, start);
}

pid_t Spawn(const LaunchOptions& o, int rank, const std::string& rendezvous, int out[2],
            int err[2]) {
  std::vector<std::string> args = {o.self,
                                   "run",
                                   o.spec_path,
                                   "--rank",
                                   std::to_string(rank),
                                   "--world-size",
                                   std::to_string(o.nproc),
                                   "--rendezvous",
                                   rendezvous};
  if (o.json) args.push_back("--json");
  if (!o.device.empty()) args.insert(args.end(), {"--device", o.device});
  if (!o.resume.empty()) args.insert(args.end(), {"--resume", o.resume});
  const std::string local_rank = std::to_string(rank);
  const std::string local_world_size = std::to_string(o.nproc);
  const pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: only async-signal-safe calls until exec.
  dup2(out[1], STDOUT_FILENO);
  dup2(err[1], STDERR_FILENO);
  close(out[0]);
  close(err[0]);
  setenv("QLORAD_LOCAL_RANK", local_rank.c_str(), 1);
  setenv("QLORAD_LOCAL_WORLD_SIZE", local_world_size.c_str(), 1);  // see cpu_threads.h
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(o.self.c_str(), argv.data());
  _exit(127);
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  return 128 + WTERMSIG(wait_status);
}

}  // namespace

int Launch(const LaunchOptions& o) {
  const int port = FreeLoopbackPort();
  if (port < 0) {
    std::cerr << "launch: no free loopback port: " << std::strerror(errno) << "\n";
    return kExitFailure;
  }
  const std::string rendezvous = "127.0.0.1:" + std::to_string(port);
  std::vector<Rank> ranks(static_cast<size_t>(o.nproc));
  for (int r = 0; r < o.nproc; ++r) {
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) {
      std::cerr << "launch: pipe: " << std::strerror(errno) << "\n";
      return kExitFailure;
    }
    ranks[r].pid = Spawn(o, r, rendezvous, out, err);
    close(out[1]);
    close(err[1]);
    ranks[r].out = out[0];
    ranks[r].err = err[0];
  }
  // SIGTERM / SIGINT reach every rank; they agree to stop at the same step.
  std::signal(SIGTERM, [](int sig) { g_forward_signal = sig; });
  std::signal(SIGINT, [](int sig) { g_forward_signal = sig; });

  int result = kExitDone;
  bool failed = false;
  auto failed_at = std::chrono::steady_clock::now();
  size_t running = ranks.size();
  size_t open_pipes = 2 * ranks.size();
  char buffer[65536];
  while (running > 0 || open_pipes > 0) {
    if (const int sig = g_forward_signal.exchange(0)) {
      for (const Rank& r : ranks) {
        if (r.running) kill(r.pid, sig);
      }
    }
    std::vector<pollfd> fds;
    std::vector<std::pair<int, bool>> owners;  // rank, is stdout
    for (int r = 0; r < o.nproc; ++r) {
      for (const bool is_stdout : {true, false}) {
        const int fd = is_stdout ? ranks[r].out : ranks[r].err;
        if (fd < 0) continue;
        fds.push_back({fd, POLLIN, 0});
        owners.emplace_back(r, is_stdout);
      }
    }
    if (!fds.empty()) poll(fds.data(), fds.size(), 100);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Rank& rank = ranks[owners[i].first];
      const bool is_stdout = owners[i].second;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n > 0) {
        Forward(owners[i].first, is_stdout, is_stdout ? &rank.out_partial : &rank.err_partial,
                buffer, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        std::string* partial = is_stdout ? &rank.out_partial : &rank.err_partial;
        if (!partial->empty()) Forward(owners[i].first, is_stdout, partial, "\n", 1);
        close(fds[i].fd);
        (is_stdout ? rank.out : rank.err) = -1;
        --open_pipes;
      }
    }
    for (int r = 0; r < o.nproc; ++r) {
      int status = 0;
      if (!ranks[r].running ||
          waitpid(ranks[r].pid, &status, WNOHANG | WUNTRACED | WCONTINUED) != ranks[r].pid) {
        continue;
      }
      if (WIFSTOPPED(status) || WIFCONTINUED(status)) {
        ranks[r].stopped = WIFSTOPPED(status);
        if (failed && ranks[r].stopped) kill(ranks[r].pid, SIGKILL);
        continue;
      }
      ranks[r].running = false;
      --running;
      const int code = ExitCodeOf(status);
      if (code == kExitStopped && !failed) result = kExitStopped;  // all stop at the same step
      if (code != kExitDone && code != kExitStopped && !failed) {
        // The first failure is the job's: stop the others, which would wait on it forever.
        failed = true;
        failed_at = std::chrono::steady_clock::now();
        result = code;
        std::cerr << "launch: rank " << r << " exited with " << code << "; stopping the others\n";
        for (const Rank& other : ranks) {
          // A stopped rank (the usual cause of a peer's timeout) would sit on SIGTERM forever.
          if (other.running) kill(other.pid, other.stopped ? SIGKILL : SIGTERM);
        }
      }
    }
    if (failed && running > 0 &&
        std::chrono::steady_clock::now() - failed_at > std::chrono::seconds(10)) {
      for (const Rank& other : ranks) {
        if (other.running) kill(other.pid, SIGKILL);  // stuck in a collective with a dead peer
      }
    }
    if (fds.empty() && running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return result;
}

}  // namespace qlorad::trainer::parallel
