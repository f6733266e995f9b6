#include "server/worker_infos.h"

#include <algorithm>
#include <set>
#include <string>

namespace qlorad::server {

std::vector<v1::WorkerInfo> WorkerInfos(const std::vector<WorkerView>& registered,
                                        const std::vector<WorkerRecord>& stored) {
  std::vector<v1::WorkerInfo> infos;
  std::set<std::string> names;
  for (const WorkerView& w : registered) {
    names.insert(w.name);
    v1::WorkerInfo& info = infos.emplace_back();
    info.set_id(w.id);
    info.set_name(w.name);
    info.set_hostname(w.hostname);
    for (const auto& d : w.devices) *info.add_devices() = d;
    info.set_heartbeat_age_ms(w.heartbeat_age_ms);
    info.set_state(w.running.empty() ? v1::WORKER_STATE_IDLE : v1::WORKER_STATE_BUSY);
    if (w.running.empty()) continue;
    // A worker takes a new job only once it runs nothing, so it holds at most one rank; a
    // trainer it is stopping (rank -1) is shown when there is nothing else.
    auto held = std::find_if(w.running.begin(), w.running.end(),
                             [](const WorkerView::RunningRank& r) { return r.rank >= 0; });
    const WorkerView::RunningRank& shown = held != w.running.end() ? *held : w.running.front();
    info.set_job_id(shown.job_id);
    info.set_rank(shown.rank);
    info.set_attempt(std::max(shown.attempt, 0));
  }
  std::vector<const WorkerRecord*> lost;
  for (const WorkerRecord& r : stored) {
    if (!names.contains(r.name)) lost.push_back(&r);
  }
  std::sort(lost.begin(), lost.end(),
            [](const WorkerRecord* a, const WorkerRecord* b) { return a->name < b->name; });
  for (const WorkerRecord* r : lost) {
    v1::WorkerInfo& info = infos.emplace_back();
    info.set_id(r->id);
    info.set_name(r->name);
    info.set_hostname(r->hostname);
    info.set_state(v1::WORKER_STATE_LOST);
  }
  return infos;
}

}  // namespace qlorad::server
