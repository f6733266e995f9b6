#include "common/jobspec.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace qlorad {
namespace {

namespace fs = std::filesystem;

// Reads one YAML mapping section, remembering which keys were consumed so that anything left
// over is reported as an unknown key (a typo must never be silently ignored).
class Section {
 public:
  Section(const YAML::Node& node, std::string prefix) : node_(node), prefix_(std::move(prefix)) {}

  std::string Field(const std::string& key) const {
    return prefix_.empty() ? key : prefix_ + "." + key;
  }

  Status Validate() const {
    if (!node_ || node_.IsNull()) return Status::Ok();
    if (!node_.IsMap()) return InvalidArgument(Where() + "must be a mapping");
    for (const auto& kv : node_) {
      // A key may be any YAML node ({[a]: 1} has a list for one): only a name is a field.
      if (!kv.first.IsScalar()) {
        return InvalidArgument(Where() + "keys must be names, got '" + YAML::Dump(kv.first) + "'");
      }
      const std::string key = kv.first.as<std::string>();
      if (!known_.count(key)) return InvalidArgument(Field(key) + ": unknown key");
    }
    return Status::Ok();
  }

  template <typename T>
  Status Get(const std::string& key, T* out) {
    known_.insert(key);
    if (!node_ || !node_.IsMap()) return Status::Ok();
    const YAML::Node v = node_[key];
    if (!v) return Status::Ok();
    try {
      *out = v.as<T>();
    } catch (const YAML::Exception&) {
      return InvalidArgument(Field(key) + ": expected " + TypeName<T>() + ", got '" +
                             YAML::Dump(v) + "'");
    }
    return Status::Ok();
  }

  // A value that may be null (e.g. max_grad_norm: null disables clipping).
  template <typename T>
  Status GetOptional(const std::string& key, std::optional<T>* out) {
    known_.insert(key);
    if (!node_ || !node_.IsMap()) return Status::Ok();
    const YAML::Node v = node_[key];
    if (!v) return Status::Ok();
    if (v.IsNull()) {
      out->reset();
      return Status::Ok();
    }
    T value{};
    QLORAD_RETURN_IF_ERROR(Get(key, &value));
    *out = value;
    return Status::Ok();
  }

  Section Child(const std::string& key) {
    known_.insert(key);
    YAML::Node child = node_ && node_.IsMap() ? node_[key] : YAML::Node();
    return Section(child, Field(key));
  }

  bool Has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }
  // This section was written and is not null.
  bool Present() const { return node_ && !node_.IsNull(); }

 private:
  std::string Where() const { return prefix_.empty() ? "the spec: " : prefix_ + ": "; }

  template <typename T>
  static std::string TypeName() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    if constexpr (std::is_integral_v<T>) return "an integer";
    if constexpr (std::is_floating_point_v<T>) return "a number";
    if constexpr (std::is_same_v<T, std::string>) return "a string";
    return "a list";
  }

  YAML::Node node_;
  std::string prefix_;
  std::set<std::string> known_;
};

Status Require(bool ok, const std::string& field, const std::string& why) {
  return ok ? Status::Ok() : InvalidArgument(field + ": " + why);
}

template <typename T>
std::string Show(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

Status OneOf(const std::string& value, const std::set<std::string>& allowed,
             const std::string& field) {
  if (allowed.count(value)) return Status::Ok();
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return InvalidArgument(field + ": must be one of " + list + ", got '" + value + "'");
}

// Reads `key` as one of E's names (spec_choices.h); the error lists them.
template <typename E>
Status GetChoice(Section& s, const std::string& key, E* out) {
  std::string name = NameOf(*out);
  QLORAD_RETURN_IF_ERROR(s.Get(key, &name));
  const std::optional<E> value = ChoiceNamed<E>(name);
  if (!value) {
    return InvalidArgument(s.Field(key) + ": must be one of " + ChoiceList<E>() + ", got '" + name +
                           "'");
  }
  *out = *value;
  return Status::Ok();
}

Status ParseModel(Section s, ModelSpec* m) {
  QLORAD_RETURN_IF_ERROR(s.Get("path", &m->path));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  return Require(!m->path.empty(), s.Field("path"), "is required (a Hugging Face model directory)");
}

Status ParseQuantization(Section s, QuantizationSpec* q) {
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "type", &q->type));
  QLORAD_RETURN_IF_ERROR(s.Get("double_quant", &q->double_quant));
  QLORAD_RETURN_IF_ERROR(s.Get("block_size", &q->block_size));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  static const std::set<int> kBlockSizes = {32, 64, 128, 256, 512, 1024, 2048, 4096};
  return Require(kBlockSizes.count(q->block_size) > 0, s.Field("block_size"),
                 "must be a power of two from 32 to 4096, got " + Show(q->block_size));
}

Status ParseLora(Section s, LoraSpec* l) {
  QLORAD_RETURN_IF_ERROR(s.Get("r", &l->r));
  QLORAD_RETURN_IF_ERROR(s.Get("alpha", &l->alpha));
  QLORAD_RETURN_IF_ERROR(s.Get("dropout", &l->dropout));
  QLORAD_RETURN_IF_ERROR(s.Get("target_modules", &l->target_modules));
  QLORAD_RETURN_IF_ERROR(s.GetOptional("init_from", &l->init_from));
  QLORAD_RETURN_IF_ERROR(s.Get("use_rslora", &l->use_rslora));
  std::string compute_precision = l->compute_precision ? NameOf(*l->compute_precision) : "auto";
  QLORAD_RETURN_IF_ERROR(s.Get("compute_precision", &compute_precision));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  l->compute_precision = ChoiceNamed<Precision>(compute_precision);
  if (!l->compute_precision && compute_precision != "auto") {
    return InvalidArgument(s.Field("compute_precision") + ": must be one of auto, " +
                           ChoiceList<Precision>() + ", got '" + compute_precision + "'");
  }
  QLORAD_RETURN_IF_ERROR(Require(l->r > 0, s.Field("r"), "must be > 0, got " + Show(l->r)));
  QLORAD_RETURN_IF_ERROR(
      Require(l->alpha > 0, s.Field("alpha"), "must be > 0, got " + Show(l->alpha)));
  QLORAD_RETURN_IF_ERROR(Require(l->dropout >= 0 && l->dropout < 1, s.Field("dropout"),
                                 "must be in [0, 1), got " + Show(l->dropout)));
  QLORAD_RETURN_IF_ERROR(
      Require(!l->target_modules.empty(), s.Field("target_modules"), "must name at least one"));
  static const std::set<std::string> kModules = {"q_proj",    "k_proj",  "v_proj",    "o_proj",
                                                 "gate_proj", "up_proj", "down_proj", "lm_head"};
  for (const auto& m : l->target_modules) {
    QLORAD_RETURN_IF_ERROR(OneOf(m, kModules, s.Field("target_modules")));
  }
  return Status::Ok();
}

// data.validation: a number is the fraction of data.path held out, anything else a file path
// (a file named like a number can be written ./0.1).
Status ParseValidation(Section& s, DataSpec* d) {
  std::optional<std::string> raw;
  QLORAD_RETURN_IF_ERROR(s.GetOptional("validation", &raw));
  if (!raw) return Status::Ok();
  const std::string field = s.Field("validation");
  QLORAD_RETURN_IF_ERROR(Require(!raw->empty(), field, "must be a file path or a fraction"));
  char* end = nullptr;
  const double fraction = std::strtod(raw->c_str(), &end);
  if (end == nullptr || *end != '\0') {
    d->validation_path = *raw;
    return Status::Ok();
  }
  d->validation_fraction = fraction;
  return Require(fraction > 0 && fraction < 1, field,
                 "a fraction of data.path must be in (0, 1), got " + *raw);
}

Status ParseData(Section s, DataSpec* d) {
  QLORAD_RETURN_IF_ERROR(s.Get("path", &d->path));
  QLORAD_RETURN_IF_ERROR(s.Get("format", &d->format));
  QLORAD_RETURN_IF_ERROR(s.Get("max_seq_len", &d->max_seq_len));
  QLORAD_RETURN_IF_ERROR(s.Get("packing", &d->packing));
  QLORAD_RETURN_IF_ERROR(s.Get("shuffle", &d->shuffle));
  QLORAD_RETURN_IF_ERROR(s.Get("seed", &d->seed));
  QLORAD_RETURN_IF_ERROR(s.Get("train_on_completions_only", &d->train_on_completions_only));
  QLORAD_RETURN_IF_ERROR(s.Get("chat_template", &d->chat_template));
  QLORAD_RETURN_IF_ERROR(s.Get("skip_bad_lines", &d->skip_bad_lines));
  QLORAD_RETURN_IF_ERROR(s.Get("label_field", &d->label_field));
  QLORAD_RETURN_IF_ERROR(s.Get("labels", &d->labels));
  QLORAD_RETURN_IF_ERROR(ParseValidation(s, d));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  QLORAD_RETURN_IF_ERROR(Require(!d->path.empty(), s.Field("path"), "is required (a JSONL file)"));
  QLORAD_RETURN_IF_ERROR(
      OneOf(d->format,
            {"auto", "text", "input_ids", "alpaca", "messages", "sharegpt", "prompt_completion"},
            s.Field("format")));
  return Require(d->max_seq_len >= 2 && d->max_seq_len <= (1 << 20), s.Field("max_seq_len"),
                 "must be in [2, 1048576], got " + Show(d->max_seq_len));
}

// train.early_stopping: null (or absent) is off; a mapping turns it on with its defaults.
Status ParseEarlyStopping(Section s, std::optional<EarlyStoppingSpec>* out) {
  if (!s.Present()) return Status::Ok();
  EarlyStoppingSpec e;
  QLORAD_RETURN_IF_ERROR(s.Get("patience", &e.patience));
  QLORAD_RETURN_IF_ERROR(s.Get("min_delta", &e.min_delta));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  QLORAD_RETURN_IF_ERROR(Require(e.patience >= 1, s.Field("patience"),
                                 "must be >= 1 evaluations, got " + Show(e.patience)));
  QLORAD_RETURN_IF_ERROR(Require(std::isfinite(e.min_delta) && e.min_delta >= 0,
                                 s.Field("min_delta"), "must be >= 0, got " + Show(e.min_delta)));
  *out = e;
  return Status::Ok();
}

Status ParseTrain(Section s, TrainSpec* t) {
  QLORAD_RETURN_IF_ERROR(s.Get("max_steps", &t->max_steps));
  QLORAD_RETURN_IF_ERROR(s.Get("micro_batch_size", &t->micro_batch_size));
  QLORAD_RETURN_IF_ERROR(s.Get("grad_accum", &t->grad_accum));
  QLORAD_RETURN_IF_ERROR(s.Get("lr", &t->lr));
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "scheduler", &t->scheduler));
  QLORAD_RETURN_IF_ERROR(s.Get("warmup_steps", &t->warmup_steps));
  QLORAD_RETURN_IF_ERROR(s.Get("weight_decay", &t->weight_decay));
  std::vector<double> betas = {t->betas[0], t->betas[1]};
  QLORAD_RETURN_IF_ERROR(s.Get("betas", &betas));
  QLORAD_RETURN_IF_ERROR(s.Get("eps", &t->eps));
  QLORAD_RETURN_IF_ERROR(s.GetOptional("max_grad_norm", &t->max_grad_norm));
  QLORAD_RETURN_IF_ERROR(s.Get("seed", &t->seed));
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "precision", &t->precision));
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "activation_checkpointing", &t->activation_checkpointing));
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "activation_offload", &t->activation_offload));
  // loss_chunk_size: auto | N
  std::string chunk = "auto";
  if (s.Has("loss_chunk_size")) {
    QLORAD_RETURN_IF_ERROR(s.Get("loss_chunk_size", &chunk));
    if (chunk != "auto") {
      char* end = nullptr;
      const long long n = std::strtoll(chunk.c_str(), &end, 10);
      QLORAD_RETURN_IF_ERROR(Require(end && *end == '\0' && n > 0, s.Field("loss_chunk_size"),
                                     "must be 'auto' or a positive integer, got '" + chunk + "'"));
      t->loss_chunk_size = n;
    }
  } else {
    QLORAD_RETURN_IF_ERROR(s.Get("loss_chunk_size", &chunk));
  }
  QLORAD_RETURN_IF_ERROR(s.Get("eval_steps", &t->eval_steps));
  QLORAD_RETURN_IF_ERROR(s.GetOptional("eval_batches", &t->eval_batches));
  QLORAD_RETURN_IF_ERROR(ParseEarlyStopping(s.Child("early_stopping"), &t->early_stopping));
  QLORAD_RETURN_IF_ERROR(s.Validate());

  QLORAD_RETURN_IF_ERROR(
      Require(t->max_steps > 0, s.Field("max_steps"), "must be > 0, got " + Show(t->max_steps)));
  QLORAD_RETURN_IF_ERROR(
      Require(t->eval_steps > 0, s.Field("eval_steps"), "must be > 0, got " + Show(t->eval_steps)));
  if (t->eval_batches) {
    QLORAD_RETURN_IF_ERROR(
        Require(*t->eval_batches > 0, s.Field("eval_batches"),
                "must be > 0 or null (the whole validation set), got " + Show(*t->eval_batches)));
  }
  QLORAD_RETURN_IF_ERROR(Require(t->micro_batch_size > 0, s.Field("micro_batch_size"),
                                 "must be > 0, got " + Show(t->micro_batch_size)));
  QLORAD_RETURN_IF_ERROR(
      Require(t->grad_accum > 0, s.Field("grad_accum"), "must be > 0, got " + Show(t->grad_accum)));
  QLORAD_RETURN_IF_ERROR(
      Require(std::isfinite(t->lr) && t->lr > 0, s.Field("lr"), "must be > 0, got " + Show(t->lr)));
  QLORAD_RETURN_IF_ERROR(Require(t->warmup_steps >= 0, s.Field("warmup_steps"),
                                 "must be >= 0, got " + Show(t->warmup_steps)));
  QLORAD_RETURN_IF_ERROR(Require(t->weight_decay >= 0, s.Field("weight_decay"),
                                 "must be >= 0, got " + Show(t->weight_decay)));
  QLORAD_RETURN_IF_ERROR(Require(betas.size() == 2, s.Field("betas"), "must hold two numbers"));
  for (double b : betas) {
    QLORAD_RETURN_IF_ERROR(
        Require(b >= 0 && b < 1, s.Field("betas"), "each must be in [0, 1), got " + Show(b)));
  }
  t->betas = {betas[0], betas[1]};
  QLORAD_RETURN_IF_ERROR(Require(t->eps > 0, s.Field("eps"), "must be > 0, got " + Show(t->eps)));
  QLORAD_RETURN_IF_ERROR(Require(
      !(t->activation_offload == CheckpointingChoice::kOn &&
        t->activation_checkpointing == CheckpointingChoice::kOff),
      s.Field("activation_offload"),
      "true offloads the inputs checkpointing keeps, so it needs activation_checkpointing true or "
      "auto, got false"));
  if (t->max_grad_norm) {
    QLORAD_RETURN_IF_ERROR(Require(*t->max_grad_norm > 0, s.Field("max_grad_norm"),
                                   "must be > 0 or null, got " + Show(*t->max_grad_norm)));
  }
  return Status::Ok();
}

Status ParseResources(Section s, ResourcesSpec* r) {
  QLORAD_RETURN_IF_ERROR(s.Get("gpus", &r->gpus));
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "device", &r->device));
  QLORAD_RETURN_IF_ERROR(s.Get("ignore_memory_estimate", &r->ignore_memory_estimate));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  return Require(r->gpus >= 1 && r->gpus <= 1024, s.Field("gpus"),
                 "must be in [1, 1024], got " + Show(r->gpus));
}

Status ParseScheduling(Section s, SchedulingSpec* sc) {
  QLORAD_RETURN_IF_ERROR(s.Get("priority", &sc->priority));
  QLORAD_RETURN_IF_ERROR(s.Get("max_restarts", &sc->max_restarts));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  QLORAD_RETURN_IF_ERROR(Require(sc->priority >= 0 && sc->priority <= 100, s.Field("priority"),
                                 "must be in [0, 100], got " + Show(sc->priority)));
  return Require(sc->max_restarts >= 0, s.Field("max_restarts"),
                 "must be >= 0, got " + Show(sc->max_restarts));
}

Status ParseParallel(Section s, ParallelSpec* p) {
  QLORAD_RETURN_IF_ERROR(GetChoice(s, "strategy", &p->strategy));
  QLORAD_RETURN_IF_ERROR(s.Get("reshard_after_forward", &p->reshard_after_forward));
  QLORAD_RETURN_IF_ERROR(s.Get("cpu_offload", &p->cpu_offload));
  QLORAD_RETURN_IF_ERROR(s.Get("timeout_s", &p->timeout_s));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  return Require(std::isfinite(p->timeout_s) && p->timeout_s > 0, s.Field("timeout_s"),
                 "must be a positive number of seconds, got " + Show(p->timeout_s));
}

Status ParseCheckpoint(Section s, CheckpointSpec* c) {
  QLORAD_RETURN_IF_ERROR(s.Get("every_steps", &c->every_steps));
  QLORAD_RETURN_IF_ERROR(s.Get("keep", &c->keep));
  QLORAD_RETURN_IF_ERROR(s.Get("output_dir", &c->output_dir));
  QLORAD_RETURN_IF_ERROR(s.Validate());
  QLORAD_RETURN_IF_ERROR(Require(c->every_steps >= 0, s.Field("every_steps"),
                                 "must be >= 0 (0 disables), got " + Show(c->every_steps)));
  return Require(c->keep >= 1, s.Field("keep"), "must be >= 1, got " + Show(c->keep));
}

// Evaluation settings mean nothing without data.validation: refused rather than ignored (null
// eval_batches and early_stopping are their defaults, and pass).
Status CheckEvaluation(Section train, const JobSpec& spec) {
  if (spec.data.HasValidation()) return Status::Ok();
  const std::pair<const char*, bool> settings[] = {
      {"eval_steps", train.Has("eval_steps")},
      {"eval_batches", spec.train.eval_batches.has_value()},
      {"early_stopping", spec.train.early_stopping.has_value()}};
  for (const auto& [key, set] : settings) {
    if (set) {
      return InvalidArgument(train.Field(key) +
                             ": needs data.validation (a file, or a fraction of data.path)");
    }
  }
  return Status::Ok();
}

// task and the data fields it needs; classification pads each example to a row of its own (a
// packed row would cut examples apart), so packing defaults to false there.
Status CheckTask(const YAML::Node& data, JobSpec& spec) {
  DataSpec& d = spec.data;
  if (spec.task != Task::kClassification) {
    if (!d.label_field.empty()) {
      return InvalidArgument("data.label_field: only for task: classification");
    }
    return Require(d.labels.empty(), "data.labels", "only for task: classification");
  }
  QLORAD_RETURN_IF_ERROR(Require(!d.label_field.empty(), "data.label_field",
                                 "is required with task: classification (the record field "
                                 "holding each example's label)"));
  if (data && data.IsMap() && data["packing"] && d.packing) {
    return InvalidArgument(
        "data.packing: task: classification pads each example to its own row; set false");
  }
  d.packing = false;
  if (!d.labels.empty()) {
    QLORAD_RETURN_IF_ERROR(
        Require(d.labels.size() >= 2, "data.labels", "needs at least two labels"));
    std::set<std::string> seen;
    for (const std::string& label : d.labels) {
      if (!seen.insert(label).second) {
        return InvalidArgument("data.labels: '" + label + "' is listed twice");
      }
    }
  }
  for (const std::string& m : spec.lora.target_modules) {
    if (m == "lm_head") {
      return InvalidArgument(
          "lora.target_modules: lm_head is not used by task: classification (the score head "
          "is trained whole)");
    }
  }
  // The score head is replicated on the device; fsdp's offload would leave the adapters'
  // gradients and AdamW state on the host beside it, which the clipping and AdamW step (one
  // device per call) do not mix.
  return Require(!spec.parallel.cpu_offload, "parallel.cpu_offload",
                 "is not supported with task: classification (the score head stays on the "
                 "device); set false");
}

}  // namespace

double LoraSpec::Scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

namespace {

StatusOr<JobSpec> ParseLoadedSpec(const YAML::Node& root) {
  if (!root || root.IsNull()) return InvalidArgument("the spec is empty");
  if (!root.IsMap()) return InvalidArgument("the spec must be a YAML mapping of sections");

  JobSpec spec;
  Section top(root, "");
  QLORAD_RETURN_IF_ERROR(top.Get("name", &spec.name));
  QLORAD_RETURN_IF_ERROR(GetChoice(top, "task", &spec.task));
  QLORAD_RETURN_IF_ERROR(ParseModel(top.Child("model"), &spec.model));
  QLORAD_RETURN_IF_ERROR(ParseQuantization(top.Child("quantization"), &spec.quantization));
  QLORAD_RETURN_IF_ERROR(ParseLora(top.Child("lora"), &spec.lora));
  QLORAD_RETURN_IF_ERROR(ParseData(top.Child("data"), &spec.data));
  QLORAD_RETURN_IF_ERROR(ParseTrain(top.Child("train"), &spec.train));
  QLORAD_RETURN_IF_ERROR(ParseResources(top.Child("resources"), &spec.resources));
  QLORAD_RETURN_IF_ERROR(ParseScheduling(top.Child("scheduling"), &spec.scheduling));
  QLORAD_RETURN_IF_ERROR(ParseParallel(top.Child("parallel"), &spec.parallel));
  QLORAD_RETURN_IF_ERROR(ParseCheckpoint(top.Child("checkpoint"), &spec.checkpoint));
  QLORAD_RETURN_IF_ERROR(top.Validate());

  QLORAD_RETURN_IF_ERROR(CheckEvaluation(top.Child("train"), spec));
  QLORAD_RETURN_IF_ERROR(CheckTask(root["data"], spec));

  if (!spec.lora.compute_precision) spec.lora.compute_precision = spec.train.precision;
  const Precision lora = *spec.lora.compute_precision;
  if (lora != Precision::kFp32 && lora != spec.train.precision) {
    const std::string train = NameOf(spec.train.precision);
    return InvalidArgument("lora.compute_precision: " + NameOf(lora) +
                           " needs train.precision: " + NameOf(lora) +
                           " (the adapters take the activations as they are), got "
                           "train.precision: " +
                           train + "; use fp32 or " + train);
  }
  if (spec.name.empty()) return InvalidArgument("name: is required");
  for (char c : spec.name) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    if (!ok) {
      return InvalidArgument("name: may hold letters, digits, '-', '_' and '.', got '" + spec.name +
                             "'");
    }
  }
  if (spec.checkpoint.output_dir.empty()) spec.checkpoint.output_dir = "runs/" + spec.name;
  return spec;
}

}  // namespace

StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text) {
  // yaml-cpp reports through exceptions: ParserException for bad syntax, others (a failed
  // conversion, a deep recursion) from calls the parser below did not expect to fail. All become
  // an error saying where, never an exception out of here (the coordinator answered UNKNOWN, the
  // trainer aborted).
  try {
    return ParseLoadedSpec(YAML::Load(yaml_text));
  } catch (const YAML::Exception& e) {
    std::string where = e.mark.is_null() ? ""
                                         : " at line " + std::to_string(e.mark.line + 1) +
                                               ", column " + std::to_string(e.mark.column + 1);
    return InvalidArgument("malformed YAML" + where + ": " + e.msg);
  }
}

StatusOr<JobSpec> LoadJobSpecFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open the job spec");
  std::stringstream buf;
  buf << in.rdbuf();
  auto spec = ParseJobSpec(buf.str());
  if (!spec.ok()) return Status(spec.status().code(), path + ": " + spec.status().message());
  return spec;
}

namespace {

// `path` as an error shows it: a relative one with the directory it was resolved against, since
// a spec written on one machine names paths of another (a worker runs the trainer in its
// --work-dir, so "runs/demo/model" means <work-dir>/runs/demo/model there).
std::string Shown(const std::string& path) {
  if (fs::path(path).is_absolute()) return path;
  std::error_code ec;
  const fs::path cwd = fs::current_path(ec);
  if (ec) return path;
  return path + " (relative: resolved against " + cwd.string() +
         "; a worker runs the trainer in its --work-dir)";
}

}  // namespace

Status CheckJobSpecFiles(const JobSpec& spec) {
  std::error_code ec;
  if (!fs::is_directory(spec.model.path, ec)) {
    return InvalidArgument("model.path: not a directory: " + Shown(spec.model.path));
  }
  if (!fs::is_regular_file(fs::path(spec.model.path) / "config.json", ec)) {
    return InvalidArgument("model.path: no config.json in " + Shown(spec.model.path));
  }
  if (!fs::is_regular_file(spec.data.path, ec)) {
    return InvalidArgument("data.path: no such file: " + Shown(spec.data.path));
  }
  if (!spec.data.validation_path.empty() && !fs::is_regular_file(spec.data.validation_path, ec)) {
    return InvalidArgument("data.validation: no such file: " + Shown(spec.data.validation_path));
  }
  if (spec.lora.init_from && !fs::is_directory(*spec.lora.init_from, ec)) {
    return InvalidArgument("lora.init_from: not a directory: " + Shown(*spec.lora.init_from));
  }
  return Status::Ok();
}

}  // namespace qlorad
