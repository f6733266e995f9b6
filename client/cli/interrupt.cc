#include "client/cli/interrupt.h"

#include <signal.h>
#include <unistd.h>

namespace qlorad::cli {
namespace {

// The self-pipe: the handler writes a byte ('i'), the destructor another ('q') to end the waiter.
int pipe_fds[2] = {-1, -1};
struct sigaction previous;

void OnInterrupt(int) {
  const char byte = 'i';
  [[maybe_unused]] const ssize_t n = write(pipe_fds[1], &byte, 1);
}

}  // namespace

CancelOnInterrupt::CancelOnInterrupt() {
  if (pipe(pipe_fds) != 0) return;  // without a pipe Ctrl-C keeps its default: exit at once
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (sigaction(SIGINT, &action, &previous) != 0) {
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return;
  }
  installed_ = true;
  waiter_ = std::thread([this] {
    char byte = 0;
    while (read(pipe_fds[0], &byte, 1) != 1) {
    }
    if (byte == 'i') {
      const std::lock_guard<std::mutex> lock(mutex_);
      interrupted_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
  });
}

void CancelOnInterrupt::Track(grpc::ClientContext* context) {
  const std::lock_guard<std::mutex> lock(mutex_);
  context_ = context;
  if (interrupted_ && context_ != nullptr) context_->TryCancel();
}

CancelOnInterrupt::~CancelOnInterrupt() {
  if (!installed_) return;
  sigaction(SIGINT, &previous, nullptr);
  const char byte = 'q';
  [[maybe_unused]] const ssize_t n = write(pipe_fds[1], &byte, 1);
  waiter_.join();
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

}  // namespace qlorad::cli
