// qlorad-train's data subcommands, kept out of main.cc:
//   tokenize --tokenizer FILE [--no-special] [--json | --jsonl]
//     stdin as one text; or, with --jsonl, each stdin line a JSON string -> one {"ids": [...]}
//     line (one process for many strings: the parity tests encode hundreds).
//   prepare-data --model DIR --data FILE [--format F] [--chat-template T] [--all-tokens]
//     the documents a job would train on, one {"input_ids", "labels", "text"} line each.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "common/jobspec.h"
#include "common/status.h"

namespace qlorad::trainer {

struct DataCli {
  CLI::App* tokenize = nullptr;
  std::string tokenizer_path;
  bool no_special = false;
  bool json = false;
  bool jsonl = false;

  CLI::App* prepare = nullptr;
  std::string model_dir;
  DataSpec data;
  bool all_tokens = false;
};

void AddDataSubcommands(CLI::App& app, DataCli& cli);
// The chosen data subcommand's result; nullopt when it was another subcommand.
std::optional<Status> RunDataSubcommand(const DataCli& cli);

}  // namespace qlorad::trainer
