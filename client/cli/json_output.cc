#include "client/cli/json_output.h"

#include <google/protobuf/descriptor.h>

#include "client/cli/job_text.h"
#include "client/cli/worker_text.h"
#include "common/json_number.h"

namespace qlorad::cli {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

std::string EnumName(const google::protobuf::EnumValueDescriptor* value) {
  if (value->type() == qlorad::v1::JobState_descriptor()) {
    return JobStateName(static_cast<qlorad::v1::JobState>(value->number()));
  }
  if (value->type() == qlorad::v1::WorkerState_descriptor()) {
    return WorkerStateName(static_cast<qlorad::v1::WorkerState>(value->number()));
  }
  return value->name();
}

// One value of field f; index is the element of a repeated field, or -1 for a singular one.
nlohmann::json FieldValue(const Message& m, const FieldDescriptor* f, int index) {
  const auto* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:  // a diverged loss is NaN: "NaN", as protobuf's JSON
      return JsonNumber(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_STRING:
      return rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return EnumName(rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f));
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ToJson(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

}  // namespace

nlohmann::json ToJson(const Message& message) {
  nlohmann::json out = nlohmann::json::object();
  const auto* descriptor = message.GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* f = descriptor->field(i);
    if (!f->is_repeated()) {
      // An unset optional field (eval_loss of a step not evaluated, a job's best evaluation
      // before there is one) is null, not a zero that reads as a value.
      const bool unset = f->has_presence() && !message.GetReflection()->HasField(message, f);
      out[f->name()] = unset ? nlohmann::json(nullptr) : FieldValue(message, f, -1);
      continue;
    }
    nlohmann::json list = nlohmann::json::array();
    const int n = message.GetReflection()->FieldSize(message, f);
    for (int k = 0; k < n; ++k) list.push_back(FieldValue(message, f, k));
    out[f->name()] = std::move(list);
  }
  return out;
}

std::string JsonLine(std::string_view type, const Message& message) {
  nlohmann::json line = ToJson(message);
  line["type"] = std::string(type);
  return line.dump();
}

}  // namespace qlorad::cli
