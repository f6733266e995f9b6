// qlorad-worker: the per-GPU agent. Flags in agent_flags.h, behaviour in agent.h.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "common/process/free_port.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_flags.h"
#include "worker/agent/enrollment.h"

int main(int argc, char** argv) {
  qlorad::agent::AgentFlags flags;
  if (auto exit_code = qlorad::agent::ParseAgentFlags(argc, argv, &flags)) return *exit_code;
  spdlog::set_level(spdlog::level::from_str(flags.log_level));

  auto options = qlorad::agent::ResolveAgentOptions(flags);
  if (!options.ok()) {
    spdlog::error("{}", options.status().ToString());
    return 2;
  }
  // Before the signals are blocked: a worker stopped while it waits to enroll just ends.
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

  // SIGINT/SIGTERM are taken by one thread with sigwait, so shutdown can do real work (cancel
  // the trainer, flush events). Blocked before any other thread exists, so all inherit the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  qlorad::agent::Agent agent(std::move(options).value());
  std::thread([&agent, stop_signals] {
    while (true) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) != 0) continue;
      spdlog::info("signal {}: stopping", sig);
      agent.Stop();
    }
  }).detach();

  const qlorad::Status status = agent.Run();
  if (!status.ok()) {
    spdlog::error("{}", status.ToString());
    return 1;
  }
  return 0;
}
