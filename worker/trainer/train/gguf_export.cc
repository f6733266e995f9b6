#include "worker/trainer/train/gguf_export.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "worker/trainer/io/file_util.h"
#include "worker/trainer/io/ggml_quants.h"
#include "worker/trainer/io/gguf_writer.h"
#include "worker/trainer/model/adapter.h"
#include "worker/trainer/model/model_config.h"
#include "worker/trainer/tokenizer/gguf_vocab.h"
#include "worker/trainer/train/gguf_llama.h"
#include "worker/trainer/train/merged_tensors.h"
#include "worker/trainer/train/ollama_modelfile.h"

namespace qlorad::trainer {

namespace fs = std::filesystem;

namespace {

struct GgufTensor {
  std::string name;
  std::vector<int64_t> shape;
  GgmlType type;
  std::function<at::Tensor()> make;  // fp32, contiguous, in llama.cpp's layout
};

// The merged tensors under their GGUF names, q/k rows permuted for llama.cpp's rope, and
// rope_freqs first when the model has llama3 rope scaling (the converter's order).
StatusOr<std::vector<GgufTensor>> PlanTensors(const LlamaModel& model, const LlamaConfig& config,
                                              const std::string& arch, GgmlType requested,
                                              int64_t* merged_layers) {
  std::vector<GgufTensor> out;
  if (std::vector<float> factors = Llama3RopeFactors(config); !factors.empty()) {
    const auto n = static_cast<int64_t>(factors.size());
    out.push_back({"rope_freqs.weight", {n}, GgmlType::kF32, [factors, n] {
                     return at::tensor(at::ArrayRef<float>(factors)).reshape({n}).clone();
                   }});
  }
  for (MergedTensor& t : MergedTensors(model, merged_layers)) {
    QLORAD_ASSIGN_OR_RETURN(std::string name, GgufTensorName(t.name));
    const int64_t heads = RotaryPermutationHeads(config, arch, t.name);
    const GgmlType type = GgufTensorType(name, t.shape, requested);
    std::function<at::Tensor()> make = std::move(t.make);
    if (heads > 0) {
      make = [make = std::move(make), heads, name]() -> at::Tensor {
        at::Tensor in = make();
        at::Tensor permuted = at::empty_like(in);
        const int64_t rows = in.size(0);
        Status s = PermuteRotaryRows(in.data_ptr<float>(), permuted.data_ptr<float>(), rows,
                                     in.numel() / rows, heads);
        TORCH_CHECK(s.ok(), name, ": ", s.message());
        return permuted;
      };
    }
    out.push_back({std::move(name), t.shape, type, std::move(make)});
  }
  return out;
}

// The tensor's bytes in its GGUF type.
std::vector<uint8_t> Encode(const at::Tensor& t, GgmlType type, int64_t bytes) {
  std::vector<uint8_t> out(static_cast<size_t>(bytes));
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), t.data_ptr<float>(), out.size());
      break;
    case GgmlType::kF16: {
      // torch's float -> half rounds to nearest even, as ggml's and numpy's conversions do.
      at::Tensor h = t.to(at::kHalf).contiguous();
      std::memcpy(out.data(), h.data_ptr<at::Half>(), out.size());
      break;
    }
    case GgmlType::kQ8_0: {
      const int64_t cols = t.size(t.dim() - 1);
      const int64_t rows = t.numel() / cols;
      const int64_t row_bytes = cols / kQ8_0BlockValues * kQ8_0BlockBytes;
      const float* src = t.data_ptr<float>();
      // Rows are independent; torch's pool quantizes them in parallel.
      at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          QuantizeRowQ8_0(src + r * cols, cols, out.data() + r * row_bytes);
        }
      });
      break;
    }
  }
  return out;
}

Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Internal(path + ": write failed");
  return Status::Ok();
}

}  // namespace

StatusOr<GgufExportResult> ExportGguf(const GgufExportOptions& options) {
  if (options.type != "f16" && options.type != "q8_0") {
    return InvalidArgument("--type: '" + options.type + "' is not f16 or q8_0");
  }
  const GgmlType requested = options.type == "f16" ? GgmlType::kF16 : GgmlType::kQ8_0;
  if (options.adapter_dir) {
    QLORAD_ASSIGN_OR_RETURN(const Task task, ReadAdapterTask(*options.adapter_dir));
    if (task == Task::kClassification) {
      return InvalidArgument(*options.adapter_dir +
                             "/adapter_config.json: task_type: \"SEQ_CLS\": a "
                             "sequence-classification adapter has no GGUF form here (llama.cpp's "
                             "models end in a language-model head); export it with --format hf");
    }
  }
  const std::string config_path = options.model_dir + "/config.json";
  QLORAD_ASSIGN_OR_RETURN(const LlamaConfig config, LoadLlamaConfig(options.model_dir));
  QLORAD_ASSIGN_OR_RETURN(const std::string arch, GgufArchitecture(config, config_path));
  QLORAD_RETURN_IF_ERROR(RequireNewOrEmptyDir(options.out_dir, "--out"));
  // The tokenizer is read before the weights, so a missing file fails at once.
  QLORAD_ASSIGN_OR_RETURN(GgufVocab vocab, ReadGgufVocab(options.model_dir, config.vocab_size));

  GgufExportResult result;
  result.notes = vocab.notes;
  for (int64_t window : config.sliding_windows) {
    if (window > 0 && window < config.max_position_embeddings) {
      result.notes.push_back(config_path + ": sliding_window " + std::to_string(window) +
                             " is not in the GGUF: llama.cpp's " + arch +
                             " attends to the whole context");
      break;
    }
  }
  QLORAD_ASSIGN_OR_RETURN(LlamaModel model, LoadMergeBase(options.model_dir, options.adapter_dir,
                                                          options.merge, options.merge.into));
  QLORAD_ASSIGN_OR_RETURN(std::vector<GgufTensor> tensors,
                          PlanTensors(model, config, arch, requested, &result.merged_layers));

  // general.name: the model directory's name, as llama.cpp's converter falls back to.
  fs::path model_path = fs::path(options.model_dir).lexically_normal();
  if (!model_path.has_filename()) model_path = model_path.parent_path();  // "dir/"
  const std::string name = model_path.filename().string();
  GgufWriter writer;
  AddGgufMetadata(config, arch, name,
                  requested == GgmlType::kF16 ? kGgufFileTypeF16 : kGgufFileTypeQ8_0, vocab,
                  &writer);
  for (const GgufTensor& t : tensors) {
    QLORAD_RETURN_IF_ERROR(writer.AddTensor(t.name, t.shape, t.type));
  }
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) return Internal(options.out_dir + ": cannot create directory: " + ec.message());
  const std::string file_name = "model-" + options.type + ".gguf";
  result.gguf_path = (fs::path(options.out_dir) / file_name).string();
  QLORAD_RETURN_IF_ERROR(writer.Open(result.gguf_path));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor t = tensors[i].make();
    const std::vector<uint8_t> bytes = Encode(t, tensors[i].type, writer.TensorBytes(i));
    QLORAD_RETURN_IF_ERROR(
        writer.WriteTensorData(tensors[i].name, bytes.data(), static_cast<int64_t>(bytes.size())));
  }
  QLORAD_RETURN_IF_ERROR(writer.Close());
  result.tensors = static_cast<int64_t>(tensors.size());
  result.bytes = static_cast<int64_t>(fs::file_size(result.gguf_path, ec));

  result.modelfile_path = (fs::path(options.out_dir) / "Modelfile").string();
  QLORAD_RETURN_IF_ERROR(WriteTextFile(result.modelfile_path, OllamaModelfile(file_name, vocab)));
  return result;
}

}  // namespace qlorad::trainer
