#include "worker/trainer/model/graph_only_forward.h"

namespace qlorad::trainer {

namespace {
// Per thread: autograd may run a recompute on a thread other than the forward's.
thread_local bool graph_only = false;
}  // namespace

GraphOnlyForward::GraphOnlyForward() : outer_(graph_only) {
  graph_only = true;
}

GraphOnlyForward::~GraphOnlyForward() {
  graph_only = outer_;
}

bool InGraphOnlyForward() {
  return graph_only;
}

}  // namespace qlorad::trainer
