// qlorad-worker: the per-GPU agent. Flags in agent_flags.h, behaviour in agent.h.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "common/process/free_port.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_flags.h"
#include "worker/agent/enrollment.h"

int main(int argc, char** argv) {
  qlorad::agent::AgentFlags flags;
  if (auto exit_code = qlorad::agent::ParseAgentFlags(argc, argv, &flags)) return *exit_code;
  spdlog::set_level(spdlog::level::from_str(flags.log_level));

  // SIGINT/SIGTERM are taken by one thread with sigwait, so shutdown can do real work (cancel
  // the trainer, flush events). Blocked before any other thread exists, so that all inherit the
  // mask: enrolling already starts gRPC's threads, and a signal the kernel hands to one of those
  // would end the worker on the spot (killed by SIGTERM rather than stopping).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // Static: the detached thread may outlive main's frame while the process exits.
  static std::atomic<qlorad::agent::Agent*> running{nullptr};
  std::thread([stop_signals] {
    while (true) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) != 0) continue;
      qlorad::agent::Agent* agent = running.load();
      if (agent == nullptr) {
        // Still enrolling: there is nothing to stop or flush yet, so the worker just ends.
        spdlog::info("signal {} before the worker started: exiting", sig);
        std::_Exit(128 + sig);
      }
      spdlog::info("signal {}: stopping", sig);
      agent->Stop();
    }
  }).detach();

  auto options = qlorad::agent::ResolveAgentOptions(flags);
  if (!options.ok()) {
    spdlog::error("{}", options.status().ToString());
    return 2;
  }
  auto credential = qlorad::agent::ObtainCredential(
      *options, flags.enroll_token,
      qlorad::agent::CredentialPath(flags.credential_file, options->trainer.work_dir.string()));
  if (!credential.ok()) {
    spdlog::error("{}", credential.status().ToString());
    return 2;
  }
  options->security.token = *credential;
  // Held as long as the agent runs: rank 0's store listens on this port when a job's rank 0 runs
  // here, so it is one free on this host rather than the coordinator's guess from its own.
  auto rendezvous_port = qlorad::process::PortReservation::Reserve();
  if (!rendezvous_port.ok()) {
    spdlog::error("{}", rendezvous_port.status().ToString());
    return 1;
  }
  options->rendezvous_port = rendezvous_port->port();
  spdlog::info("holding port {} for the rendezvous of jobs whose rank 0 runs here",
               rendezvous_port->port());

  qlorad::agent::Agent agent(std::move(options).value());
  running.store(&agent);
  const qlorad::Status status = agent.Run();
  running.store(nullptr);  // a signal from here on finds nothing left to stop
  if (!status.ok()) {
    spdlog::error("{}", status.ToString());
    return 1;
  }
  return 0;
}
