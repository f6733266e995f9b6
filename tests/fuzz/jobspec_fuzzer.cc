// libFuzzer target: the job-spec parser (common/jobspec.h). Whatever the bytes, ParseJobSpec
// returns a spec or an INVALID_ARGUMENT; it must never crash, hang or read out of bounds. A spec
// it accepts must survive the checks that run on every accepted spec: the coordinator's path
// sandbox and the memory estimate's inputs.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/jobspec.h"
#include "common/path_sandbox.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  auto spec = qlorad::ParseJobSpec(yaml);
  if (!spec.ok()) {
    // Every refusal names what is wrong.
    if (spec.status().message().empty()) __builtin_trap();
    return 0;
  }
  const qlorad::PathRoots roots{"/work", {"/models", "/data"}, "/work/out"};
  (void)qlorad::CheckSpecPaths(*spec, "", roots, qlorad::PathResolution::kWrittenOnly);
  (void)spec->lora.Scale();
  return 0;
}
