// A forward run for its graph alone: activation recompute (parallel/activation_recompute.h) runs
// a decoder layer again in backward only to backpropagate through it; nothing reads the layer's
// output values. The layer's last block (the MLP, most of the layer's GEMMs) may then skip
// computing its output and return a tensor of the right shape whose values are unspecified, so
// long as its backward needs none of them (chunked_mlp.h). Everything before it runs as usual: its
// values feed the rest of the layer.
#pragma once

namespace qlorad::trainer {

// Marks this thread's forwards as graph-only while it lives (nests; restores the outer state).
class GraphOnlyForward {
 public:
  GraphOnlyForward();
  ~GraphOnlyForward();
  GraphOnlyForward(const GraphOnlyForward&) = delete;
  GraphOnlyForward& operator=(const GraphOnlyForward&) = delete;

 private:
  bool outer_;
};

// Whether a GraphOnlyForward is alive on this thread.
bool InGraphOnlyForward();

}  // namespace qlorad::trainer
