#include "worker/trainer/cli/data_cli.h"

#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "worker/trainer/data/dataset.h"
#include "worker/trainer/tokenizer/bpe_tokenizer.h"

namespace qlorad::trainer {

namespace {

using nlohmann::json;

void PrintIds(const std::vector<int64_t>& ids, bool as_json) {
  if (as_json) {
    std::cout << json{{"ids", ids}}.dump() << "\n";
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
}

Status Tokenize(const DataCli& cli) {
  QLORAD_ASSIGN_OR_RETURN(BpeTokenizer tokenizer, BpeTokenizer::Load(cli.tokenizer_path));
  if (!cli.jsonl) {
    const std::string text((std::istreambuf_iterator<char>(std::cin)),
                           std::istreambuf_iterator<char>());
    QLORAD_ASSIGN_OR_RETURN(std::vector<int64_t> ids, tokenizer.Encode(text, !cli.no_special));
    PrintIds(ids, cli.json);
    return Status();
  }
  std::string line;
  for (int64_t line_no = 1; std::getline(std::cin, line); ++line_no) {
    const json text = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!text.is_string()) {
      return InvalidArgument("stdin:" + std::to_string(line_no) + ": expected a JSON string");
    }
    QLORAD_ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                            tokenizer.Encode(text.get<std::string>(), !cli.no_special));
    PrintIds(ids, /*as_json=*/true);
  }
  std::cout.flush();
  return Status();
}

Status PrepareData(const DataCli& cli) {
  DataSpec spec = cli.data;
  spec.train_on_completions_only = !cli.all_tokens;
  // Any id the tokenizer makes is accepted: there is no model here to check against.
  QLORAD_ASSIGN_OR_RETURN(Dataset dataset,
                          LoadDataset(spec, cli.model_dir, {INT64_MAX, /*keep_text=*/true}));
  for (const Document& d : dataset.documents) {
    std::cout << json{{"input_ids", d.input_ids}, {"labels", d.labels}, {"text", d.text}}.dump()
              << "\n";
  }
  if (dataset.skipped_lines > 0) {
    std::cerr << "skipped " << dataset.skipped_lines << " bad records\n";
  }
  return Status();
}

}  // namespace

void AddDataSubcommands(CLI::App& app, DataCli& cli) {
  cli.tokenize = app.add_subcommand("tokenize", "encode stdin with a Hugging Face tokenizer.json");
  cli.tokenize->add_option("--tokenizer", cli.tokenizer_path, "tokenizer.json")->required();
  cli.tokenize->add_flag("--no-special", cli.no_special,
                         "add no BOS/EOS and encode special-token text as plain text");
  auto* as_json =
      cli.tokenize->add_flag("--json", cli.json, "print {\"ids\": [...]} instead of plain ids");
  cli.tokenize
      ->add_flag("--jsonl", cli.jsonl,
                 "each stdin line is a JSON string; print one {\"ids\": [...]} line for each")
      ->excludes(as_json);

  cli.prepare = app.add_subcommand(
      "prepare-data", "print the documents a job would train on (ids, labels, rendered text)");
  cli.prepare->add_option("--model", cli.model_dir, "model directory (its tokenizer)")->required();
  cli.prepare->add_option("--data", cli.data.path, "JSONL or JSON-array dataset")->required();
  cli.prepare->add_option("--format", cli.data.format, "data.format (default auto)");
  cli.prepare->add_option("--chat-template", cli.data.chat_template,
                          "data.chat_template: auto | llama3 | llama3.1 | chatml | mistral | "
                          "mistral-v0.2 | mistral-v0.3 | llama2");
  cli.prepare->add_flag("--all-tokens", cli.all_tokens,
                        "label every token (data.train_on_completions_only: false)");
  cli.prepare->add_flag("--skip-bad-lines", cli.data.skip_bad_lines, "data.skip_bad_lines");
}

std::optional<Status> RunDataSubcommand(const DataCli& cli) {
  if (cli.tokenize->parsed()) return Tokenize(cli);
  if (cli.prepare->parsed()) return PrepareData(cli);
  return std::nullopt;
}

}  // namespace qlorad::trainer
