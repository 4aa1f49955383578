#include "launch/train/graphed_step.h"

#include <ATen/ATen.h>

#include <optional>
#include <utility>

#include "runtime/error.h"

#ifdef TANDEM_HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace tandem::launch {

struct GraphedMicroStep::Impl {
  Body body;
  int64_t eager_runs = 0;
  int64_t runs = 0;
  at::Tensor input;   // the graph reads its tokens here
  at::Tensor output;  // the body's result (in the graph's memory once recorded)
#ifdef TANDEM_HAVE_CUDA
  // Graphs are recorded on a stream of their own (never the default stream); the eager runs use
  // it too, so the allocator's blocks and the libraries' per-stream workspaces are the ones the
  // graph will see.
  std::optional<at::cuda::CUDAStream> stream;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
};

GraphedMicroStep::GraphedMicroStep(Body body, int64_t eager_runs) : impl_(std::make_unique<Impl>()) {
  TANDEM_CHECK(eager_runs >= 1, "GraphedMicroStep needs at least one eager run before recording (got {})", eager_runs);
  impl_->body = std::move(body);
  impl_->eager_runs = eager_runs;
}

GraphedMicroStep::~GraphedMicroStep() = default;

bool GraphedMicroStep::captured() const {
#ifdef TANDEM_HAVE_CUDA
  return impl_->graph != nullptr;
#else
  return false;
#endif
}

#ifdef TANDEM_HAVE_CUDA
at::Tensor GraphedMicroStep::run(const at::Tensor& tokens) {
  Impl& s = *impl_;
  TANDEM_CHECK_KIND(kConfig, tokens.is_cuda(), "train.cuda_graph needs the batch on a GPU (got a {} tensor)",
                    tokens.device().str());
  const c10::DeviceIndex device = tokens.device().index();
  if (!s.input.defined()) {
    s.input = at::empty_like(tokens);
    s.stream = at::cuda::getStreamFromPool(/*isHighPriority=*/false, device);
  }
  TANDEM_CHECK(tokens.sizes() == s.input.sizes() && tokens.scalar_type() == s.input.scalar_type(),
               "train.cuda_graph replays one micro-batch shape: recorded {}, got {}", c10::str(s.input.sizes()),
               c10::str(tokens.sizes()));
  const at::cuda::CUDAStream caller = at::cuda::getCurrentCUDAStream(device);
  s.input.copy_(tokens);
  // The body's stream starts after everything the caller issued (the copy, the zeroed gradients,
  // the last optimizer step); the caller continues after the body. Tensors freed by either side
  // are therefore never reused while the other still reads them.
  at::cuda::CUDAEvent ready;
  ready.record(caller);
  ready.block(*s.stream);
  {
    const c10::cuda::CUDAStreamGuard on_stream(*s.stream);
    if (s.runs < s.eager_runs) {
      s.output = s.body(s.input);
    } else {
      if (!s.graph) {
        // The graph gets a memory pool of its own; the blocks the eager runs cached would sit
        // idle beside it (twice the activations: a large model no longer fits). Hand them back.
        c10::cuda::CUDACachingAllocator::emptyCache();
        s.graph = std::make_unique<at::cuda::CUDAGraph>();
        s.graph->capture_begin();
        s.output = s.body(s.input);
        s.graph->capture_end();
      }
      s.graph->replay();  // recording does not execute: the recorded run replays too
    }
  }
  at::cuda::CUDAEvent done;
  done.record(*s.stream);
  done.block(caller);
  ++s.runs;
  return s.output;
}
#else
at::Tensor GraphedMicroStep::run(const at::Tensor& /*tokens*/) {
  TANDEM_CHECK_KIND(kConfig, false, "train.cuda_graph needs a CUDA build of tandem (this one has no CUDA)");
  return {};
}
#endif

}  // namespace tandem::launch
