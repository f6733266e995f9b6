#include "client/cli/args.h"

#include <CLI/CLI.hpp>
#include <string_view>

#include "client/cli/errors.h"
#include "client/cli/exit_codes.h"

namespace qlorad::cli {
namespace {

void AddReconnectTimeout(CLI::App* cmd, CliOptions& o) {
  cmd->add_option("--reconnect-timeout", o.reconnect_timeout_s,
                  "Seconds to keep reconnecting after the coordinator goes away (0: exit at once)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

void AddJobId(CLI::App* cmd, CliOptions& o) {
  cmd->add_option("id", o.job_id, "Job id, as printed by submit or jobs")->required();
}

// --json is looked for as a plain word: a usage error may come before CLI11 has parsed it.
bool AsksForJson(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--json") return true;
  }
  return false;
}

ParsedArgs UsageError(std::ostream& err, bool json, const std::string& what) {
  const std::string hint = json ? "" : "\nRun 'qloractl --help' for usage.";
  return {std::nullopt, ReportError(err, json, "USAGE", what + hint, kExitUsage)};
}

}  // namespace

ParsedArgs ParseArgs(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CliOptions o;
  CLI::App app{"qloractl: submit and watch QLoRA fine-tuning jobs on a qlorad coordinator",
               "qloractl"};
  app.add_option("--server", o.server, "Coordinator address host:port")
      ->envname("QLORAD_SERVER")
      ->capture_default_str();
  app.add_option("--token", o.security.token, "Access token (from `qlorad token create`)")
      ->envname("QLORAD_TOKEN");
  app.add_flag("--tls", o.security.tls, "Connect with TLS, trusting the system's CAs or --ca-file");
  app.add_option("--ca-file", o.security.ca_file,
                 "PEM CA that signed the coordinator's certificate")
      ->envname("QLORAD_CA_FILE");
  app.add_option("--cert", o.security.cert_file, "PEM client certificate, for mutual TLS")
      ->envname("QLORAD_CLIENT_CERT");
  app.add_option("--key", o.security.key_file, "PEM private key of --cert")
      ->envname("QLORAD_CLIENT_KEY");
  app.add_flag("--json", o.json, "Machine-readable output: one JSON object per line");
  // At most one command; "none" is reported after parsing, so that an unknown word is named
  // ("not expected: frobnicate") instead of hidden behind "a command is required".
  app.require_subcommand(0, 1);
  app.footer(
      "Exit codes: 0 success (watch: the job completed), 1 server error or the job failed or was\n"
      "cancelled, 2 usage error or unreadable spec file, 3 coordinator unreachable, 130 Ctrl-C\n"
      "while following (the job keeps running).");
  // Global options may also follow the command: `qloractl jobs --json`.
  app.fallthrough();

  auto* submit = app.add_subcommand("submit", "Submit a job spec (YAML) and print its id");
  submit->add_option("file", o.spec_file, "Job spec YAML file")->required();
  submit->add_flag("--follow,-f", o.follow, "Watch the job after submitting it");
  AddReconnectTimeout(submit, o);

  auto* jobs = app.add_subcommand("jobs", "List jobs as a table");
  jobs->add_option("--state", o.states, "Only jobs in these states (repeat or comma-separate)")
      ->delimiter(',')
      ->transform(CLI::IsMember({"queued", "running", "completed", "failed", "cancelled"},
                                CLI::ignore_case));
  jobs->add_option("--limit", o.limit, "At most this many jobs, newest first (0: every job)")
      ->check(CLI::NonNegativeNumber);

  auto* status = app.add_subcommand("status", "Show every field of a job, its error included");
  AddJobId(status, o);

  auto* cancel = app.add_subcommand("cancel", "Cancel a queued or running job");
  AddJobId(cancel, o);

  auto* retry = app.add_subcommand(
      "retry", "Submit a FAILED or CANCELLED job again as a new job and print the new id");
  AddJobId(retry, o);
  retry->add_flag("--from-scratch", o.from_scratch,
                  "Start from step 0 instead of the job's newest checkpoint");
  retry->add_flag("--follow,-f", o.follow, "Watch the new job after submitting it");
  AddReconnectTimeout(retry, o);

  auto* watch = app.add_subcommand(
      "watch", "Follow a job's training steps until it ends; exit 0 if it completed, 1 if not");
  AddJobId(watch, o);
  watch->add_option("--from-step", o.from_step, "First step to show")
      ->check(CLI::NonNegativeNumber);
  AddReconnectTimeout(watch, o);

  auto* logs = app.add_subcommand(
      "logs", "Print a job's log lines; without --follow stop after the stored ones");
  AddJobId(logs, o);
  logs->add_flag("--follow,-f", o.follow, "Keep printing new lines until the job ends");
  logs->add_option("--from-seq", o.from_seq, "First log sequence number to show")
      ->check(CLI::NonNegativeNumber);

  auto* workers = app.add_subcommand(
      "workers", "List the workers: state, the job each runs, devices, last heartbeat");

  auto* completion = app.add_subcommand(
      "completion", "Print the bash or zsh completion script: source <(qloractl completion bash)");
  completion->add_option("shell", o.shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember({"bash", "zsh"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return {std::nullopt, app.exit(e, out, err)};
  } catch (const CLI::CallForAllHelp& e) {
    return {std::nullopt, app.exit(e, out, err)};
  } catch (const CLI::ParseError& e) {
    return UsageError(err, AsksForJson(argc, argv), e.what());
  }

  if (app.get_subcommands().empty()) {
    return UsageError(err, AsksForJson(argc, argv),
                      "a command is required (submit, jobs, status, cancel, retry, watch, logs, "
                      "workers, completion)");
  }
  const std::pair<CLI::App*, Command> commands[] = {
      {submit, Command::kSubmit}, {jobs, Command::kJobs},       {status, Command::kStatus},
      {cancel, Command::kCancel}, {watch, Command::kWatch},     {logs, Command::kLogs},
      {retry, Command::kRetry},   {workers, Command::kWorkers}, {completion, Command::kCompletion}};
  for (const auto& [cmd, command] : commands) {
    if (cmd->parsed()) o.command = command;
  }
  return {o, kExitOk};
}

}  // namespace qlorad::cli
