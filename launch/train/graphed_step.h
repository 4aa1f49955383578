// A micro-batch's forward and backward as one CUDA graph (train.cuda_graph): run eagerly a few
// times, then recorded once and replayed, so the thousands of kernels of an MoE step are launched
// by one call and the GPU no longer waits for the host between them (docs/model.md#cuda-graphs).
//
// The body must be capturable: no host synchronisation or host-to-device copy, no collectives,
// and everything it reads or updates in place across runs (parameters, gradient buffers, routing
// biases, expert loads) at fixed addresses. JobConfig's validation admits train.cuda_graph only
// for layouts whose forward and backward meet that (pp = tp = ep = 1, ZeRO 0/1, no token drop).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>

namespace tandem::launch {

class GraphedMicroStep {
 public:
  // `body(tokens)` runs forward and backward of one micro-batch and returns a tensor of results
  // (the loss pieces). The first `eager_runs` calls run it directly (lazy initialisation, caches
  // and library workspaces settle before recording).
  using Body = std::function<at::Tensor(const at::Tensor& tokens)>;
  GraphedMicroStep(Body body, int64_t eager_runs);
  ~GraphedMicroStep();
  GraphedMicroStep(const GraphedMicroStep&) = delete;
  GraphedMicroStep& operator=(const GraphedMicroStep&) = delete;

  // Runs the body on a copy of `tokens` (a CUDA tensor of the same shape on every call), after the
  // caller's stream's earlier work; the caller's stream waits for it. Returns the body's result,
  // which the next call overwrites. Throws tandem::Error for a CPU tensor or another shape.
  at::Tensor run(const at::Tensor& tokens);

  // True once the graph is recorded (from the call after the eager ones on).
  bool captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::launch
