// The fused optimizer kernels (parallel/fused_optimizer.h) against the LibTorch composite on the
// CPU: a BucketedGroup on the GPU and one on the CPU, built from the same random members (odd
// sizes, alternating weight-decay and norm flags: buckets of more than 32 segments, misaligned
// runs), driven through the same steps with a clip scale != 1 under ZeRO 0, 1 and 2 (one rank),
// must agree; the gradient sum of squares must agree with the CPU's fp64 sum and repeat bit for
// bit; the adapter on offset views (vector body after a peeled head) must match the composite.
// Tolerances: moments and parameters to 1e-6 relative (an fp32 ulp is 6e-8; ATen's vectorised CPU
// sqrt is not correctly rounded, so an update may differ by an ulp per step, see adamw_math.h);
// the sum of squares to 1e-12 relative (both add exact fp64 squares, only the order differs).
// Last, the time of one fused step and sum of squares on 64M elements against the composite on
// the same GPU (printed; the fused step must be the faster). Skips with the reason without a GPU.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>

#include <chrono>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "parallel/bucketed_group.h"
#include "parallel/fused_optimizer.h"
#include "runtime/device.h"
#include "tests/common/gpu_skip.h"

namespace tandem::parallel {
namespace {

const at::Device kGpu(at::kCUDA, 0);
const AdamWConfig kConfig{0.9, 0.95, 1e-8, 0.1};

// max over elements of |actual - expected| / max(|expected|, floor), floor = 1e-3 of the largest
// |expected| (elements that cancel to near zero are compared at the tensor's scale).
double worst_relative(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor a = actual.cpu().to(at::kDouble), e = expected.to(at::kDouble);
  const double floor = std::max(e.abs().max().item<double>() * 1e-3, 1e-30);
  return ((a - e).abs() / e.abs().clamp_min(floor)).max().item<double>();
}

// Random members: odd sizes, decay and norm flags alternating at different periods.
std::vector<at::Tensor> make_values(int64_t count, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> values;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t numel = i % 9 == 4 ? 4097 + 61 * i : 1 + (37 * i * i + 11) % 300;
    values.push_back(at::randn({numel}));
  }
  return values;
}

std::unique_ptr<BucketedGroup> make_group(const std::vector<at::Tensor>& values, at::Device device, int64_t zero_stage,
                                          std::vector<at::Tensor>& params) {
  std::vector<GroupMember> members;
  params.clear();
  for (size_t i = 0; i < values.size(); ++i) {
    GroupMember m;
    m.sharding.name = "p" + std::to_string(i);
    m.param = values[i].to(device).clone();
    m.decay = i % 3 != 1;
    m.counts_in_norm = i % 4 != 3;
    params.push_back(m.param);  // the same leaf: the group re-points its storage
    members.push_back(std::move(m));
  }
  BucketedGroupOptions options;
  options.name = "fused-test";
  options.zero_stage = zero_stage;
  options.bucket_cap_numel = 20000;  // several buckets, most with dozens of members
  options.grad_scale = 0.5;          // applied at the reduction, before the step's clip scale
  return std::make_unique<BucketedGroup>(std::move(members), options);
}

// Every member's (param, exp_avg, exp_avg_sq) as CPU tensors, in member order.
std::vector<at::Tensor> state_of(BucketedGroup& group) {
  std::vector<at::Tensor> state(group.members().size() * 3);
  group.visit_state([&](int64_t member, StateKind kind, const at::Tensor& local) {
    state[member * 3 + static_cast<int64_t>(kind)] = local.cpu().clone();
  });
  return state;
}

TEST(FusedOptimizer, BucketedGroupStepsFollowTheCpuComposite) {
  TANDEM_SKIP_WITHOUT_GPU();
  ASSERT_TRUE(fused_optimizer_applies(at::zeros({1}, kGpu)));
  const std::vector<at::Tensor> values = make_values(90, 5);
  for (int64_t zero_stage : {0, 1, 2}) {
    std::vector<at::Tensor> cpu_params, gpu_params;
    auto cpu = make_group(values, at::kCPU, zero_stage, cpu_params);
    auto gpu = make_group(values, kGpu, zero_stage, gpu_params);
    ASSERT_GE(cpu->num_buckets(), 3);
    double worst_norm = 0, worst_param = 0, worst_moment = 0;
    for (int t = 1; t <= 4; ++t) {
      cpu->zero_grad();
      gpu->zero_grad();
      for (size_t i = 0; i < values.size(); ++i) {
        // Step 3 has tiny gradients: the update is then dominated by eps and old moments.
        const at::Tensor g = at::randn({values[i].numel()}) * (t == 3 ? 1e-5 : 1.0);
        if (zero_stage <= 1) {
          cpu_params[i].mutable_grad().copy_(g);
          gpu_params[i].mutable_grad().copy_(g);
        } else {
          cpu_params[i].mutable_grad() = g.clone();
          gpu_params[i].mutable_grad() = g.to(kGpu);
        }
      }
      for (int64_t b = 0; b < cpu->num_buckets(); ++b) {
        cpu->launch_reduction(b);
        gpu->launch_reduction(b);
      }
      cpu->complete_reductions();
      gpu->complete_reductions();
      const double cpu_norm2 = cpu->local_norm_squared().item<double>();
      const at::Tensor gpu_norm2 = gpu->local_norm_squared();
      ASSERT_TRUE(gpu_norm2.is_cuda() && gpu_norm2.scalar_type() == at::kDouble);
      EXPECT_EQ(gpu_norm2.item<double>(), gpu->local_norm_squared().item<double>()) << "not deterministic";
      worst_norm = std::max(worst_norm, std::abs(gpu_norm2.item<double>() - cpu_norm2) / cpu_norm2);
      // Clip to 40% of the norm: the step's grad scale is != 1 (the CPU norm for both, so the
      // comparison below isolates the step).
      const double scale = clip_scale(std::sqrt(cpu_norm2), 0.4 * std::sqrt(cpu_norm2));
      ASSERT_LT(scale, 0.5);
      const AdamWStepScalars scalars = adamw_step_scalars(kConfig, t, 2e-3 / t);
      cpu->step(kConfig, scalars, scale);
      gpu->step(kConfig, scalars, scale);
      const std::vector<at::Tensor> expected = state_of(*cpu), actual = state_of(*gpu);
      for (size_t k = 0; k < expected.size(); ++k) {
        const double error = worst_relative(actual[k], expected[k]);
        double& worst = k % 3 == 0 ? worst_param : worst_moment;
        worst = std::max(worst, error);
        ASSERT_LT(error, 1e-6) << "ZeRO " << zero_stage << " step " << t << " member " << k / 3 << " "
                               << state_kind_name(static_cast<StateKind>(k % 3));
      }
    }
    std::printf("ZeRO %lld, %lld buckets, 4 steps: sum of squares rel. error %.3g, params %.3g, moments %.3g\n",
                static_cast<long long>(zero_stage), static_cast<long long>(cpu->num_buckets()), worst_norm, worst_param,
                worst_moment);
    EXPECT_LT(worst_norm, 1e-12);
  }
}

TEST(FusedOptimizer, OffsetViewsTakeTheVectorPathAfterAPeeledHead) {
  TANDEM_SKIP_WITHOUT_GPU();
  at::manual_seed(9);
  const int64_t n = 100003;
  // Views starting 1 element in: every pointer 4 bytes past 16-byte alignment alike.
  auto offset_view = [&](const at::Tensor& t) { return t.to(kGpu).narrow(0, 1, n); };
  const at::Tensor p0 = at::randn({n + 1}), m0 = at::randn({n + 1}) * 0.1, v0 = at::rand({n + 1}) * 0.01;
  at::Tensor p = offset_view(p0), m = offset_view(m0), v = offset_view(v0);
  at::Tensor cp = p0.narrow(0, 1, n).clone(), cm = m0.narrow(0, 1, n).clone(), cv = v0.narrow(0, 1, n).clone();
  const std::vector<ElementRun> decay_runs{{0, 2}, {10, 40000}, {70001, 30002}};  // decay to the end
  for (int t = 1; t <= 3; ++t) {
    const at::Tensor g = at::randn({n + 1});
    const AdamWStepScalars scalars = adamw_step_scalars(kConfig, t + 10, 1e-3);
    fused_adamw_step_(p, offset_view(g), m, v, decay_runs, kConfig, scalars, 0.3);
    adamw_update_moments_(g.narrow(0, 1, n) * 0.3, cm, cv, kConfig);
    for (const ElementRun& run : decay_runs) {
      at::Tensor decayed = cp.narrow(0, run.begin, run.length);
      adamw_apply_decay_(decayed, kConfig, scalars);
    }
    adamw_apply_step_(cp, cm, cv, kConfig, scalars);
  }
  const double dp = worst_relative(p, cp), dm = worst_relative(m, cm), dv = worst_relative(v, cv);
  std::printf("offset views, 3 steps: max relative error param %.3g, exp_avg %.3g, exp_avg_sq %.3g\n", dp, dm, dv);
  EXPECT_LT(dp, 1e-6);
  EXPECT_LT(dm, 1e-6);
  EXPECT_LT(dv, 1e-6);
}

TEST(FusedOptimizer, SumOfSquaresOverManySegmentsIsDeterministic) {
  TANDEM_SKIP_WITHOUT_GPU();
  at::manual_seed(13);
  // 5M elements: more chunks than one pass of the fixed grid; 100 runs: several segment tables.
  const at::Tensor big = at::randn({5'000'001});
  const at::Tensor small = at::randn({10'000}) * 3.0;
  std::vector<ElementRun> big_runs{{0, 5'000'001}}, small_runs;
  for (int64_t i = 0; i < 100; ++i) small_runs.push_back({i * 97 + 1, 50 + i % 7});
  const std::vector<TensorRuns> parts{{big.to(kGpu), &big_runs}, {small.to(kGpu), &small_runs}};
  const double first = fused_sum_squares(parts, kGpu).item<double>();
  for (int repeat = 0; repeat < 3; ++repeat) EXPECT_EQ(fused_sum_squares(parts, kGpu).item<double>(), first);
  double expected = big.to(at::kDouble).square().sum().item<double>();
  for (const ElementRun& run : small_runs) {
    expected += small.narrow(0, run.begin, run.length).to(at::kDouble).square().sum().item<double>();
  }
  std::printf("sum of squares of 5M + 100 runs: %.17g vs CPU %.17g\n", first, expected);
  EXPECT_LT(std::abs(first - expected) / expected, 1e-12);
  EXPECT_EQ(fused_sum_squares({}, kGpu).item<double>(), 0.0);
}

// Milliseconds per call of `work` on the GPU, after a warm-up, averaged over `repeats`.
template <typename Work>
double gpu_ms(Work&& work, int repeats = 10) {
  work();
  c10::cuda::device_synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) work();
  c10::cuda::device_synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / repeats;
}

TEST(FusedOptimizer, OnePassIsFasterThanTheComposite) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t n = 64 << 20;  // 64M elements: 1 GiB of optimizer state
  const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(kGpu);
  at::Tensor p = at::randn({n}, fp32), g = at::randn({n}, fp32), m = at::zeros({n}, fp32), v = at::zeros({n}, fp32);
  const std::vector<ElementRun> decay_runs{{0, n / 2}};
  const AdamWStepScalars scalars = adamw_step_scalars(kConfig, 1, 1e-4);
  const double fused = gpu_ms([&] { fused_adamw_step_(p, g, m, v, decay_runs, kConfig, scalars, 0.5); });
  const double composite = gpu_ms([&] {
    adamw_update_moments_(g * 0.5, m, v, kConfig);
    at::Tensor decayed = p.narrow(0, 0, n / 2);
    adamw_apply_decay_(decayed, kConfig, scalars);
    adamw_apply_step_(p, m, v, kConfig, scalars);
  });
  const std::vector<ElementRun> all{{0, n}};
  const double norm_fused = gpu_ms([&] { fused_sum_squares({{g, &all}}, kGpu); });
  const double norm_composite = gpu_ms([&] { g.to(at::kDouble).square().sum(); });
  const double step_gbps = 28.0 * n / fused / 1e6;  // reads 16 bytes and writes 12 per element
  std::printf("64M elements: AdamW fused %.3f ms (%.0f GB/s) vs composite %.3f ms; sum of squares fused %.3f ms vs "
              "composite %.3f ms\n",
              fused, step_gbps, composite, norm_fused, norm_composite);
  EXPECT_LT(fused, composite);
  EXPECT_LT(norm_fused, norm_composite);
}

}  // namespace
}  // namespace tandem::parallel
