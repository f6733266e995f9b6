// The batches of step n+1 are drawn while step n runs, so a step never waits for the data and the
// host never waits for the device to take it. A background thread draws each step's micro-batches
// (data/step_batches.h) and packs their token ids into a page-locked host buffer; Next(), on the
// training thread, queues one non_blocking copy of that buffer on the current stream and records
// an event. There are two buffers, so the thread draws at most two steps ahead: it refills one
// only after the event of the copy that read it has passed (it waits for that, never the training
// thread), while the other waits for the next Next().
//
// Determinism: the thread draws the same steps, in the same order, as drawing them inline would;
// it only draws them earlier. So the batcher runs ahead of training, and what a checkpoint must
// record is the position after the step actually trained (DeviceStep::after), never the
// batcher's own.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/step_batches.h"

namespace qlorad::trainer {

// One micro-batch on the device: int64 views into the step's one copied buffer.
struct DeviceMicroBatch {
  at::Tensor inputs;      // [rows, seq_len]
  at::Tensor labels;      // [rows * seq_len], already shifted
  at::Tensor positions;   // [rows, seq_len]; undefined unless some row packs several documents
  at::Tensor cu_seqlens;  // int32 Batch::document_offsets; defined with positions
  // Batch::document_offsets on the host: where a step retried after running out of memory cuts
  // the rows apart (micro_batch_rows.h), it finds each piece's bounds without reading the device.
  std::vector<int64_t> document_offsets;
  int64_t valid_labels = 0;
};

struct DeviceStep {
  std::vector<DeviceMicroBatch> micro_batches;  // this rank's
  int64_t global_valid = 0;                     // see StepBatches
  int64_t global_tokens = 0;
  DataPosition after;
};

class BatchPrefetcher {
 public:
  // Draws steps [first_step, end_step) from `batcher`, which nobody else may use until this is
  // destroyed. `device`: where the batches go (a CPU run copies them too, from ordinary memory).
  BatchPrefetcher(Batcher& batcher, const StepShape& shape, at::Device device, int64_t first_step,
                  int64_t end_step);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The next step's batches on `device`, their copy queued on the current stream. Waits only
  // while the thread is still drawing that step. Past end_step, or when drawing failed, an error.
  StatusOr<DeviceStep> Next();

 private:
  struct Slot {
    at::Tensor host;                   // int64 staging buffer, grown as needed
    int64_t used = 0;                  // elements of `host` this step fills
    std::optional<c10::Event> copied;  // recorded after the copy that read `host` (GPU only)
    StepBatches batches;
  };

  void Run(int64_t first_step);  // the thread
  // Draws the next step into `slot`, once the copy that last read its buffer has completed.
  void Fill(Slot& slot);
  DeviceStep Upload(Slot& slot);

  Batcher& batcher_;
  const StepShape shape_;
  const at::Device device_;
  int64_t next_step_;  // what Next() returns next (the training thread's)
  const int64_t end_step_;

  std::array<Slot, 2> slots_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<size_t> free_{0, 1};  // slots the thread may fill
  std::deque<size_t> ready_;       // filled slots, in step order
  bool stop_ = false;
  std::string error_;   // drawing failed: what Next() reports
  std::thread thread_;  // last: it starts once everything above is set
};

}  // namespace qlorad::trainer
