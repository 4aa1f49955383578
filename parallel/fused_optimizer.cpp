// Adapters from the optimizer's bucket tensors to the raw-pointer kernels (see fused_optimizer.h):
// tensors become pointers and segments, the current CUDA stream the launch stream. Builds without
// CUDA keep the declarations and refuse (fused_optimizer_applies is false there, so callers never
// get that far).
#include "parallel/fused_optimizer.h"

#include <ATen/ATen.h>

#include "runtime/error.h"

#ifdef TANDEM_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "parallel/kernels/adamw_kernels.h"
#include "runtime/cuda_check.h"
#endif

namespace tandem::parallel {
namespace {

void check_operand(const at::Tensor& t, const char* what, const at::Device& device, int64_t numel) {
  TANDEM_CHECK(t.defined() && t.is_cuda() && t.scalar_type() == at::kFloat && t.dim() == 1 && t.is_contiguous(),
               "fused optimizer: {} must be a 1-D contiguous float32 CUDA tensor", what);
  TANDEM_CHECK(t.device() == device && t.numel() == numel,
               "fused optimizer: {} is {} elements on {}, expected {} on {}", what, t.numel(), t.device().str(), numel,
               device.str());
}

}  // namespace

#ifdef TANDEM_HAVE_CUDA

bool fused_optimizer_applies(const at::Tensor& t) { return t.defined() && t.is_cuda(); }

void fused_adamw_step_(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
                       const at::Tensor& exp_avg_sq, const std::vector<ElementRun>& decay_runs,
                       const AdamWConfig& config, const AdamWStepScalars& scalars, double grad_scale) {
  const at::Device device = param.device();
  const int64_t numel = param.numel();
  check_operand(param, "param", device, numel);
  check_operand(grad, "grad", device, numel);
  check_operand(exp_avg, "exp_avg", device, numel);
  check_operand(exp_avg_sq, "exp_avg_sq", device, numel);
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  std::vector<kernels::AdamWSegment> segments;
  for (const FlaggedRun& run : partition_by_runs(numel, decay_runs)) {
    // A zero weight decay makes the decay an identity; the composite skips it then too.
    const bool decay = run.selected && config.weight_decay != 0.0;
    segments.push_back({p + run.begin, g + run.begin, m + run.begin, v + run.begin, run.length, decay});
  }
  const kernels::AdamWScalars s = kernels::make_adamw_scalars(config.beta1, config.beta2, config.eps,
                                                              config.weight_decay, scalars.lr, scalars.bias1,
                                                              scalars.bias2, grad_scale);
  const c10::cuda::CUDAGuard guard(device);
  runtime::CudaStream stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  TANDEM_CUDA_CHECK(static_cast<cudaError_t>(
      kernels::launch_adamw_segments(segments.data(), static_cast<int64_t>(segments.size()), s, stream)));
}

at::Tensor fused_sum_squares(const std::vector<TensorRuns>& parts, at::Device device) {
  TANDEM_CHECK(device.is_cuda(), "fused_sum_squares: device {} is not a CUDA device", device.str());
  std::vector<kernels::FloatSegment> segments;
  for (const TensorRuns& part : parts) {
    check_operand(part.tensor, "a gradient slice", device, part.tensor.numel());
    const float* data = part.tensor.data_ptr<float>();
    for (const ElementRun& run : *part.runs) {
      TANDEM_CHECK(run.begin >= 0 && run.length >= 0 && run.begin + run.length <= part.tensor.numel(),
                   "fused_sum_squares: run [{}, {}) outside a tensor of {} elements", run.begin, run.begin + run.length,
                   part.tensor.numel());
      segments.push_back({data + run.begin, run.length});
    }
  }
  const c10::cuda::CUDAGuard guard(device);
  const auto fp64 = at::TensorOptions().dtype(at::kDouble).device(device);
  // Scratch for the per-block partials, then the result; both from the caching allocator, on
  // the stream the kernels run on.
  at::Tensor scratch = at::empty({kernels::sum_squares_scratch_numel()}, fp64);
  at::Tensor total = at::empty({}, fp64);
  runtime::CudaStream stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  TANDEM_CUDA_CHECK(static_cast<cudaError_t>(
      kernels::launch_sum_squares(segments.data(), static_cast<int64_t>(segments.size()), scratch.data_ptr<double>(),
                                  total.data_ptr<double>(), stream)));
  return total;
}

#else

bool fused_optimizer_applies(const at::Tensor&) { return false; }

void fused_adamw_step_(const at::Tensor& param, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                       const std::vector<ElementRun>&, const AdamWConfig&, const AdamWStepScalars&, double) {
  check_operand(param, "param", param.device(), param.numel());  // names what is wrong with it
  TANDEM_CHECK(false, "fused optimizer: this build has no CUDA kernels (rebuild with a CUDA toolkit)");
}

at::Tensor fused_sum_squares(const std::vector<TensorRuns>&, at::Device device) {
  TANDEM_CHECK(false, "fused_sum_squares on {}: this build has no CUDA kernels (rebuild with a CUDA toolkit)",
               device.str());
  return {};
}

#endif

}  // namespace tandem::parallel
