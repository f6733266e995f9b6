// Short CPU training runs of the tiny model (tiny_model.h), for tests that compare loss curves:
// only the LoRA settings, the step count and the loss chunk size vary between them.
#pragma once

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/trainer/test_util.h"
#include "worker/trainer/model/tiny_model.h"
#include "worker/trainer/train/trainer.h"

namespace qlorad::trainer::testing {

// The tiny model in dir/model and twelve short text records in dir/data.jsonl.
inline void WriteTinyModelAndText(const TempDir& dir) {
  ASSERT_TRUE(MakeTinyModel(dir / "model", 0).ok());
  std::string data;
  for (int i = 0; i < 12; ++i) {
    data += "{\"text\": \"the fox " + std::to_string(i * 7) + " jumps over dog " +
            std::to_string(i) + "\"}\n";
  }
  WriteFile(dir / "data.jsonl", data);
}

// The per-step losses of an fp32 CPU run on WriteTinyModelAndText's files (2 x 2 rows of 24
// tokens per step, shuffled, lr 1e-2): `lora` is the job's lora map ("{r: 4, ...}"),
// `loss_chunk_size` its train.loss_chunk_size; the run writes under dir/out-<tag>.
inline std::vector<double> TinyRunLosses(const TempDir& dir, const std::string& lora, int steps,
                                         const std::string& loss_chunk_size,
                                         const std::string& tag) {
  const std::string yaml =
      "name: tiny\nmodel: {path: " + dir / "model" +
      "}\nquantization: {type: none}\nlora: " + lora + "\ndata: {path: " + dir / "data.jsonl" +
      ", max_seq_len: 24, packing: false, shuffle: true, seed: 1}\n"
      "train: {max_steps: " +
      std::to_string(steps) +
      ", micro_batch_size: 2, grad_accum: 2, lr: 1.0e-2, scheduler: constant, warmup_steps: 0, "
      "precision: fp32, seed: 3, loss_chunk_size: " +
      loss_chunk_size + "}\nresources: {device: cpu}\ncheckpoint: {every_steps: 0, keep: 1, " +
      "output_dir: " + dir / ("out-" + tag) + "}\n";
  auto spec = ParseJobSpec(yaml);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  if (!spec.ok()) return {};
  std::ostringstream out, err;
  EventSink events(true, out, err);
  auto result = Train(*spec, {}, events);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return result.ok() ? result->losses : std::vector<double>{};
}

}  // namespace qlorad::trainer::testing
