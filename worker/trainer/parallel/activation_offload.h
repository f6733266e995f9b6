// Activation offload under recompute (train.activation_offload): the one tensor a recomputed
// decoder layer keeps for backward, its input (and what it keeps for its recompute besides:
// LayerOffloaders below), goes to page-locked host memory during forward and comes back before
// that layer's backward. GPU memory for checkpoints is then about two layers'
// inputs instead of one per layer (at 8B shapes and 128K tokens, 1 GiB a layer).
//
// On CUDA both copies run on a side stream, so they overlap the layers' compute: forward's copy
// out starts once the input is produced (the allocator is told the side stream still reads it,
// so its memory is not reused before the copy ends), and backward's copy in of layer i - 1 starts
// as layer i's backward begins, one layer ahead, so a layer's backward waits only for a copy that
// had a whole layer's backward to finish. Unsloth's offloaded checkpointing copies on the
// compute stream, without that overlap.
//
// Page-locked memory comes from torch's caching host allocator, which rounds every block up to a
// power of two: one 2.75 GiB input (8B shape, 352K tokens) would hold 4 GiB, 32 layers 128 GiB,
// and the host's out-of-memory killer ended such a job on a 128 GiB machine. So an input goes to
// the host in pieces whose sizes are the powers of two of its size's binary digits, the digits
// below kMinHostPiece in one last piece: at most that much is lost to rounding per input, and the
// pieces are reused by the next step's inputs of the same size.
//
// On the CPU the "host" copy is an ordinary one (the same pieces, unpinned): the same
// bookkeeping, testable without a GPU, and useless for memory (so the trainer never turns it on
// there).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

namespace qlorad::trainer {

// One layer's input while it is off the device. Held by the layer's autograd node (a capsule in
// its context), so it lives exactly as long as the graph that needs it.
struct OffloadedInput : torch::CustomClassHolder {
  int64_t layer = 0;
  uint64_t pass = 0;                  // which forward put it (see ActivationOffloader::Put)
  std::vector<int64_t> sizes;         // of the input
  at::ScalarType dtype = at::kFloat;  // of the input
  std::vector<at::Tensor> host;  // the copy off the device: its bytes, in HostPieceBytes's pieces
  bool in_host = false;          // until Take hands the input back
  at::Tensor back;               // the copy back on the device, once fetched; handed out by Take
  std::optional<c10::Event> back_ready;  // recorded after the copy back (GPU only)
  bool fetched() const { return back.defined(); }
};

// The pieces an input of `bytes` bytes goes to the host in: powers of two, largest first, while
// at least `min_piece` is left, then what is left (if anything) in one piece.
std::vector<int64_t> HostPieceBytes(int64_t bytes, int64_t min_piece);

class ActivationOffloader {
 public:
  static constexpr int64_t kMinHostPiece = int64_t{1} << 20;

  // min_piece: HostPieceBytes's; tests pass small ones to see inputs split.
  explicit ActivationOffloader(int64_t min_piece = kMinHostPiece) : min_piece_(min_piece) {}
  ActivationOffloader(const ActivationOffloader&) = delete;
  ActivationOffloader& operator=(const ActivationOffloader&) = delete;

  // Starts moving decoder layer `layer`'s input off its device; the caller keeps the handle and
  // drops x. Layer 0 starts a new forward: what an earlier one put and never took (a forward
  // without backward) is no longer prefetched.
  c10::intrusive_ptr<OffloadedInput> Put(int64_t layer, const at::Tensor& x);

  // The input back on its device, ready for the current stream, and the fetch of the previous
  // layer's input (of the same forward) started. Each input is taken once.
  at::Tensor Take(const c10::intrusive_ptr<OffloadedInput>& input);

  // Starts the copy back of decoder layer `layer`'s input of the latest forward, if it is off the
  // device and not yet fetched: for the first offloaded layer below layers that stayed on the
  // device (ActivationOffloader::Take fetches one layer ahead only from an offloaded layer).
  void Prefetch(int64_t layer);

 private:
  // Queues the copy back of `input` (once).
  void Fetch(OffloadedInput& input, at::Device device);
  c10::Stream SideStream(at::Device device);

  const int64_t min_piece_;
  std::mutex mutex_;  // Put runs on the forward thread, Take on autograd's device thread
  uint64_t pass_ = 0;
  std::vector<c10::intrusive_ptr<OffloadedInput>> by_layer_;  // this pass's, by layer
  std::optional<c10::Stream> side_;
  std::optional<at::Device> device_;  // of every input so far (one model, one device)
};

// One offloader for each kind of tensor a recomputed layer keeps: kind 0 its input, kind i > 0 the
// i-th tensor it keeps for its recompute (model/recompute_keep.h), each kind fetched back one
// layer ahead by its own offloader.
class LayerOffloaders {
 public:
  explicit LayerOffloaders(int64_t min_piece = ActivationOffloader::kMinHostPiece)
      : min_piece_(min_piece) {}
  LayerOffloaders(const LayerOffloaders&) = delete;
  LayerOffloaders& operator=(const LayerOffloaders&) = delete;

  ActivationOffloader& Kind(size_t kind);
  // ActivationOffloader::Prefetch(layer) for every kind.
  void Prefetch(int64_t layer);
  // Whether a kept tensor of `x`'s layer goes to the host: one on x's device of at least one
  // host piece. Smaller ones stay where they are (their copies would cost more than they free).
  bool Moves(const at::Tensor& kept, const at::Tensor& x) const;

 private:
  const int64_t min_piece_;
  std::mutex mutex_;
  std::deque<ActivationOffloader> kinds_;  // a deque: offloaders do not move
};

}  // namespace qlorad::trainer
