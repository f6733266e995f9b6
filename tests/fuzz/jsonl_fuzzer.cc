// libFuzzer target: the training-data reader (worker/trainer/data/dataset.h, data_formats.h). The
// input is a data file, JSON lines or a JSON array of records. LoadDataset reads it as token ids
// (data.format input_ids, or auto, which needs no tokenizer until a text record comes), and each
// line goes through format detection and the record -> text conversion of every layout, with a
// chat family picked by the input. Bad input must come back as a Status naming file:line, never
// a crash: issue 19's line of JSON nested 100,000 deep overflowed the stack.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "worker/trainer/data/chat_template.h"
#include "worker/trainer/data/data_formats.h"
#include "worker/trainer/data/dataset.h"
#include "worker/trainer/io/json_file.h"

namespace {

using namespace qlorad::trainer;

int MemoryFile() {
  static const int fd = memfd_create("jsonl_fuzz", 0);
  return fd;
}

void ConvertEachLine(const std::string& text, ChatFamily family) {
  ChatTemplate chat;
  chat.family = family;
  chat.bos_token = FallbackBosToken(family);
  chat.eos_token = FallbackEosToken(family);
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto record = ParseJson(line);
    if (!record.ok()) continue;
    auto format = DetectDataFormat(*record);
    if (!format.ok() || *format == DataFormat::kInputIds) continue;
    (void)RecordToText(*record, *format, &chat);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte chooses the options; the rest is the file.
  const uint8_t choice = data[0];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int fd = MemoryFile();
  if (fd < 0 || ftruncate(fd, 0) != 0 ||
      pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    __builtin_trap();
  }
  qlorad::DataSpec spec;
  spec.path = "/proc/self/fd/" + std::to_string(fd);
  spec.format = (choice & 1) ? "input_ids" : "auto";
  spec.skip_bad_lines = (choice & 2) != 0;
  DatasetOptions options;
  options.vocab_size = 1 + (choice >> 2) * 1000;
  auto dataset = LoadDataset(spec, "/nonexistent-model", options);
  // A refusal names where: the file, and the line or record when one is at fault.
  if (!dataset.ok() && dataset.status().message().empty()) __builtin_trap();
  ConvertEachLine(text, static_cast<ChatFamily>((choice >> 2) % 7));
  return 0;
}
