#include "client/cli/worker_text.h"

#include <gtest/gtest.h>

#include "client/cli/text_table.h"

namespace qlorad::cli {
namespace {

qlorad::v1::WorkerInfo Worker(const std::string& name, qlorad::v1::WorkerState state) {
  qlorad::v1::WorkerInfo w;
  w.set_id("w-" + name);
  w.set_name(name);
  w.set_hostname("host1");
  w.set_state(state);
  if (state != qlorad::v1::WORKER_STATE_LOST) {
    auto* d = w.add_devices();
    d->set_kind("cuda");
    d->set_index(0);
    d->set_name("NVIDIA H100 80GB HBM3");
    d->set_total_memory_bytes(int64_t{85} << 30);
    w.set_heartbeat_age_ms(1234);
  }
  return w;
}

TEST(FormatTable, ColumnsAsWideAsTheirWidestCellNoTrailingSpaces) {
  EXPECT_EQ(FormatTable({{"A", "BB", "C"}, {"xxx", "y", ""}}),
            "A    BB  C\n"
            "xxx  y\n");
}

TEST(FormatWorkerTable, IdleBusyHiddenAndLost) {
  auto busy = Worker("gpu0", qlorad::v1::WORKER_STATE_BUSY);
  busy.set_job_id("job-1a2b");
  busy.set_rank(1);
  auto hidden = Worker("gpu1", qlorad::v1::WORKER_STATE_BUSY);  // another user's job
  auto stopping = Worker("gpu2", qlorad::v1::WORKER_STATE_BUSY);
  stopping.set_job_id("job-old");
  stopping.set_rank(-1);
  EXPECT_EQ(
      FormatWorkerTable({busy, hidden, stopping, Worker("gpu3", qlorad::v1::WORKER_STATE_IDLE),
                         Worker("gpu4", qlorad::v1::WORKER_STATE_LOST)}),
      "NAME  STATE  JOB                 DEVICES                                HOST   HEARTBEAT\n"
      "gpu0  BUSY   job-1a2b rank 1     cuda:0 NVIDIA H100 80GB HBM3 85.0 GiB  host1  1.2s ago\n"
      "gpu1  BUSY   another user's      cuda:0 NVIDIA H100 80GB HBM3 85.0 GiB  host1  1.2s ago\n"
      "gpu2  BUSY   job-old (stopping)  cuda:0 NVIDIA H100 80GB HBM3 85.0 GiB  host1  1.2s ago\n"
      "gpu3  IDLE   -                   cuda:0 NVIDIA H100 80GB HBM3 85.0 GiB  host1  1.2s ago\n"
      "gpu4  LOST   -                   -                                      host1  -\n");
}

TEST(FormatWorkerTable, FreeMemoryBesideTotalWhereTheWorkerMeasuredIt) {
  auto idle = Worker("gpu0", qlorad::v1::WORKER_STATE_IDLE);
  idle.mutable_devices(0)->set_free_memory_bytes(int64_t{71} << 30);
  EXPECT_EQ(
      FormatWorkerTable({idle}),
      "NAME  STATE  JOB  DEVICES                                                 HOST   HEARTBEAT\n"
      "gpu0  IDLE   -    cuda:0 NVIDIA H100 80GB HBM3 71.0 GiB free of 85.0 GiB  host1  "
      "1.2s ago\n");
}

TEST(FormatWorkerTable, HeaderOnlyWithoutWorkers) {
  EXPECT_EQ(FormatWorkerTable({}), "NAME  STATE  JOB  DEVICES  HOST  HEARTBEAT\n");
}

TEST(WorkerStateName, ReadsLikeJobStates) {
  EXPECT_EQ(WorkerStateName(qlorad::v1::WORKER_STATE_IDLE), "IDLE");
  EXPECT_EQ(WorkerStateName(qlorad::v1::WORKER_STATE_LOST), "LOST");
}

}  // namespace
}  // namespace qlorad::cli
