#include "worker/agent/agent_flags.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <system_error>

#include "worker/agent/device_probe.h"

namespace qlorad::agent {
namespace {

std::string Hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

// qlorad-train lands in the same bin/ folder as qlorad-worker (see CMAKE_RUNTIME_OUTPUT_DIRECTORY).
StatusOr<std::filesystem::path> TrainerNextToThisExecutable() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return FailedPrecondition("--trainer: cannot read /proc/self/exe: " + ec.message());
  return self.parent_path() / "qlorad-train";
}

}  // namespace

std::optional<int> ParseAgentFlags(int argc, char** argv, AgentFlags* flags) {
  CLI::App app{
      "qlorad-worker: runs qlorad-train jobs for a qlorad coordinator, one GPU (or the "
      "CPU) per agent"};
  app.add_option("--coordinator", flags->coordinator, "coordinator address host:port")
      ->capture_default_str();
  bool cpu_flag = false;
  CLI::Option* cpu = app.add_flag("--cpu", cpu_flag, "train on the CPU (the default)");
  int gpu = 0;
  CLI::Option* gpu_opt = app.add_option("--gpu", gpu, "train on GPU N (sets CUDA_VISIBLE_DEVICES)")
                             ->check(CLI::NonNegativeNumber);
  cpu->excludes(gpu_opt);
  app.add_option("--name", flags->name, "worker name (default <hostname>-cpu / <hostname>-gpuN)");
  app.add_option("--advertise-address", flags->advertise_address,
                 "the name or IPv4 address the other hosts reach this one by: the rendezvous of "
                 "multi-rank jobs whose rank 0 runs here (default: this host's name, which must "
                 "then resolve on every host to an address they reach, not to loopback)");
  app.add_option("--work-dir", flags->work_dir, "where job specs and trainer outputs land")
      ->capture_default_str();
  app.add_option("--read-root", flags->read_roots,
                 "a folder (with all below it) that job specs may read models, data and adapters "
                 "from; repeatable (default: --work-dir)");
  app.add_option("--write-root", flags->write_root,
                 "the folder that job outputs (checkpoint.output_dir) must lie under; readable "
                 "too (default: --work-dir)");
  app.add_option("--trainer", flags->trainer,
                 "the qlorad-train executable (default: next to this executable)");
  app.add_option("--grace-period-s", flags->grace_period_s,
                 "seconds between SIGTERM and SIGKILL when cancelling a trainer")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  CLI::Option* test_memory =
      app.add_option("--test-gpu-memory-bytes", flags->test_gpu_memory_bytes,
                     "test hook: report a GPU with this much memory while training on the CPU")
          ->check(CLI::PositiveNumber)
          ->excludes(gpu_opt);
  app.add_option("--test-gpu-free-memory-bytes", flags->test_gpu_free_memory_bytes,
                 "test hook: report this much of --test-gpu-memory-bytes free while idle")
      ->check(CLI::NonNegativeNumber)
      ->needs(test_memory);
  app.add_option("--enroll-token", flags->enroll_token,
                 "enrollment token (qlorad token create --role enroll): used once, when "
                 "--credential-file does not exist yet, to get this worker's credential")
      ->envname("QLORAD_ENROLL_TOKEN");
  app.add_option("--credential-file", flags->credential_file,
                 "this worker's credential (mode 0600) [default: <work-dir>/worker-credential]");
  app.add_flag("--tls", flags->security.tls,
               "connect with TLS, trusting the system's CAs or --ca-file");
  app.add_option("--ca-file", flags->security.ca_file,
                 "PEM CA that signed the coordinator's certificate")
      ->envname("QLORAD_CA_FILE");
  app.add_option("--cert", flags->security.cert_file, "PEM client certificate, for mutual TLS");
  app.add_option("--key", flags->security.key_file, "PEM private key of --cert");
  app.add_option("--log-level", flags->log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 gives each kind of usage error its own code; callers get one: 2.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (gpu_opt->count() > 0) flags->gpu = gpu;
  return std::nullopt;
}

StatusOr<AgentOptions> ResolveAgentOptions(const AgentFlags& flags) {
  AgentOptions options;
  options.coordinator = flags.coordinator;
  // The trainer splits its --rendezvous HOST:PORT at the last colon, so a host has none.
  if (flags.advertise_address.find_first_of(": \t\n") != std::string::npos) {
    return InvalidArgument("--advertise-address: '" + flags.advertise_address +
                           "' is not a host name or IPv4 address (no port, no spaces)");
  }
  const std::string hostname = Hostname();
  options.hostname = flags.advertise_address.empty() ? hostname : flags.advertise_address;
  options.name = !flags.name.empty()
                     ? flags.name
                     : hostname + (flags.gpu ? "-gpu" + std::to_string(*flags.gpu) : "-cpu");
  options.grace_period =
      std::chrono::milliseconds(static_cast<int64_t>(flags.grace_period_s * 1000));
  options.version = QLORAD_VERSION;

  if (!flags.trainer.empty()) {
    options.trainer.trainer = std::filesystem::absolute(flags.trainer);
  } else {
    QLORAD_ASSIGN_OR_RETURN(options.trainer.trainer, TrainerNextToThisExecutable());
  }
  if (::access(options.trainer.trainer.c_str(), X_OK) != 0) {
    return InvalidArgument("--trainer: " + options.trainer.trainer.string() +
                           " is not an executable file");
  }

  options.trainer.gpu = flags.gpu;
  if (flags.gpu) {
    QLORAD_ASSIGN_OR_RETURN(options.device, DetectGpuDevice(*flags.gpu));
    options.gpu_free_memory = [index = *flags.gpu] { return DetectGpuFreeMemory(index); };
  } else if (flags.test_gpu_memory_bytes) {
    options.device.set_kind("cuda");
    options.device.set_name("test hook (--test-gpu-memory-bytes): trains on the CPU");
    options.device.set_total_memory_bytes(*flags.test_gpu_memory_bytes);
    if (const auto free_bytes = flags.test_gpu_free_memory_bytes) {
      if (*free_bytes > *flags.test_gpu_memory_bytes) {
        return InvalidArgument("--test-gpu-free-memory-bytes: " + std::to_string(*free_bytes) +
                               " is more than --test-gpu-memory-bytes " +
                               std::to_string(*flags.test_gpu_memory_bytes));
      }
      options.gpu_free_memory = [bytes = *free_bytes]() -> StatusOr<int64_t> { return bytes; };
    }
  } else {
    QLORAD_ASSIGN_OR_RETURN(options.device, DetectCpuDevice());
  }

  std::error_code ec;
  std::filesystem::create_directories(flags.work_dir, ec);
  if (ec)
    return InvalidArgument("--work-dir: cannot create " + flags.work_dir + ": " + ec.message());
  // Absolute, because it is both the trainer's cwd and the prefix of the spec path passed to it.
  options.trainer.work_dir = std::filesystem::canonical(flags.work_dir, ec);
  if (ec) return InvalidArgument("--work-dir: " + flags.work_dir + ": " + ec.message());

  QLORAD_ASSIGN_OR_RETURN(options.security, connect::LoadSecurity(flags.security));
  // Flags name folders as the shell sees them: relative to our cwd, not to the work dir.
  PathRoots roots{options.trainer.work_dir, {}, options.trainer.work_dir};
  for (const std::string& r : flags.read_roots) roots.read.push_back(std::filesystem::absolute(r));
  if (roots.read.empty()) roots.read.push_back(options.trainer.work_dir);
  if (!flags.write_root.empty()) roots.write = std::filesystem::absolute(flags.write_root);
  QLORAD_ASSIGN_OR_RETURN(options.trainer.roots,
                          ResolveRoots(roots, "--read-root", "--write-root"));

  return options;
}

}  // namespace qlorad::agent
