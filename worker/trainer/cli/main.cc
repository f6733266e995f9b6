// qlorad-train: the trainer process (one per job rank). A thin CLI over qlorad_trainer.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <filesystem>
#include <iostream>

#include "common/jobspec.h"
#include "worker/trainer/cli/data_cli.h"
#include "worker/trainer/cli/estimate_cli.h"
#include "worker/trainer/cli/launch.h"
#include "worker/trainer/cli/model_cli.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/runtime/event_sink.h"
#include "worker/trainer/runtime/exit_codes.h"
#include "worker/trainer/train/trainer.h"

namespace {

using qlorad::trainer::EventSink;

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

void OnSigterm(int) {
  g_stop_requested.store(true);
}

// `context` is a prefix the message may start with (the spec's path) that is not the field.
int Fail(EventSink& events, const qlorad::Status& status, const std::string& context = "") {
  std::string rest = status.message();
  if (!context.empty() && rest.rfind(context + ": ", 0) == 0)
    rest = rest.substr(context.size() + 2);
  events.Error(status.message(), qlorad::trainer::ErrorField(rest));
  return qlorad::trainer::ExitCodeFor(status);
}

int RunJob(const std::string& spec_path, const qlorad::trainer::TrainOptions& options, bool json) {
  EventSink events(json, std::cout, std::cerr);
  auto spec = qlorad::LoadJobSpecFile(spec_path);
  if (!spec.ok()) return Fail(events, spec.status(), spec_path);
  if (qlorad::Status files = qlorad::CheckJobSpecFiles(*spec); !files.ok()) {
    return Fail(events, files);
  }
  struct sigaction action {};
  action.sa_handler = OnSigterm;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  try {
    auto result = qlorad::trainer::Train(*spec, options, events);
    if (!result.ok()) return Fail(events, result.status());
    return result->stopped ? qlorad::trainer::kExitStopped : qlorad::trainer::kExitDone;
  } catch (const c10::Error& e) {
    // Torch reports CUDA faults, OOM and shape bugs by throwing; the agent still needs an event.
    return Fail(events, qlorad::Internal(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return Fail(events, qlorad::Internal(e.what()));
  }
}

int MakeTinyModel(const std::string& out, uint64_t seed, bool json) {
  EventSink events(json, std::cout, std::cerr);
  if (qlorad::Status s = qlorad::trainer::MakeTinyModel(out, seed); !s.ok()) return Fail(events, s);
  events.Log("info", "tiny model (seed " + std::to_string(seed) + ") written to " +
                         std::filesystem::absolute(out).string());
  return qlorad::trainer::kExitDone;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qlorad-train: QLoRA fine-tuning of Llama-family models"};
  app.require_subcommand(1);

  auto* run = app.add_subcommand("run", "train the job described by a YAML spec");
  std::string spec_path;
  bool run_json = false;
  qlorad::trainer::TrainOptions options;
  std::string resume;
  std::string rendezvous;
  run->add_option("spec", spec_path, "job spec (YAML)")->required();
  run->add_flag("--json", run_json, "one JSON event per line on stdout");
  run->add_option("--device", options.device,
                  "auto | cpu | cuda (default: the spec's resources.device)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  run->add_option("--resume", resume,
                  "continue from a checkpoint: a step-N directory, or an output_dir / checkpoints "
                  "directory (its newest step-N)");
  int attempt = -1;
  run->add_option("--attempt", attempt,
                  "attempt of a service job (set by qlorad-worker): checkpoints go to "
                  "checkpoints/attempt-N, and a --resume that is gone falls back to the newest "
                  "complete checkpoint, else step 0")
      ->check(CLI::NonNegativeNumber);
  run->add_option("--rank", options.rank, "this process's rank")->check(CLI::NonNegativeNumber);
  run->add_option("--world-size", options.world_size, "number of ranks")
      ->check(CLI::PositiveNumber);
  run->add_option("--rendezvous", rendezvous, "HOST:PORT of the c10d store (world size > 1)");

  auto* launch = app.add_subcommand("launch", "run a job as N local ranks (real processes)");
  qlorad::trainer::LaunchOptions launch_options;
  launch->add_option("--nproc", launch_options.nproc, "number of ranks")
      ->required()
      ->check(CLI::PositiveNumber);
  launch->add_option("spec", launch_options.spec_path, "job spec (YAML)")->required();
  launch->add_flag("--json", launch_options.json, "one JSON event per line on stdout (rank 0's)");
  launch->add_option("--device", launch_options.device, "auto | cpu | cuda, passed to each rank")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  launch->add_option("--resume", launch_options.resume,
                     "continue from a checkpoint (as run --resume), passed to each rank");

  auto* tiny =
      app.add_subcommand("make-tiny-model", "write a deterministic tiny Llama (HF format)");
  std::string tiny_out;
  uint64_t tiny_seed = 0;
  bool tiny_json = false;
  tiny->add_option("--out", tiny_out, "output directory")->required();
  tiny->add_option("--seed", tiny_seed, "weight seed");
  tiny->add_flag("--json", tiny_json, "one JSON event per line on stdout");

  qlorad::trainer::DataCli data_cli;
  qlorad::trainer::AddDataSubcommands(app, data_cli);
  qlorad::trainer::ModelCli model_cli;
  qlorad::trainer::AddModelSubcommands(app, model_cli);
  qlorad::trainer::EstimateCli estimate_cli;
  qlorad::trainer::AddEstimateSubcommand(app, estimate_cli);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : qlorad::trainer::kExitBadInput;
  }
  if (launch->parsed()) {
    launch_options.self = std::filesystem::read_symlink("/proc/self/exe").string();
    return qlorad::trainer::Launch(launch_options);
  }
  if (run->parsed()) {
    if (!resume.empty()) options.resume = resume;
    if (attempt >= 0) options.attempt = attempt;
    options.rendezvous = rendezvous;
    options.should_stop = [] { return g_stop_requested.load(); };
    return RunJob(spec_path, options, run_json);
  }
  if (std::optional<qlorad::Status> done = qlorad::trainer::RunDataSubcommand(data_cli)) {
    EventSink events(data_cli.json, std::cout, std::cerr);
    return done->ok() ? qlorad::trainer::kExitDone : Fail(events, *done);
  }
  if (std::optional<qlorad::Status> done = qlorad::trainer::RunModelSubcommand(model_cli)) {
    EventSink events(model_cli.json, std::cout, std::cerr);
    return done->ok() ? qlorad::trainer::kExitDone : Fail(events, *done);
  }
  if (std::optional<qlorad::Status> done = qlorad::trainer::RunEstimateSubcommand(estimate_cli)) {
    EventSink events(estimate_cli.json, std::cout, std::cerr);
    return done->ok() ? qlorad::trainer::kExitDone : Fail(events, *done);
  }
  return MakeTinyModel(tiny_out, tiny_seed, tiny_json);
}
