// JobConfig: everything one YAML job file says, as typed structs. Sections owned by lower
// modules (model, parallel, data, checkpoint, logging) are included; the trainer's own sections
// (run, optim, train) and the hardware description used by simulate/plan are defined here.
#pragma once

#include <cstdint>
#include <string>

#include "model/model_config.h"
#include "model/recompute.h"
#include "parallel/parallel_config.h"
#include "runtime/config_schema.h"
#include "runtime/data/data_config.h"
#include "runtime/device.h"
#include "runtime/runtime_config.h"

namespace tandem::launch {

// train.precision. kAuto resolves per device (resolve_precision); kBf16 is bf16 autocast around
// the forward with fp32 master weights, gradients and optimizer state.
enum class Precision { kAuto, kFp32, kBf16 };
inline constexpr config::EnumNames<Precision, 3> kPrecisionNames{
    {{Precision::kAuto, "auto"}, {Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"}}};
constexpr const auto& config_enum_names(Precision) { return kPrecisionNames; }

// optim.lr_schedule: the learning rate after warm-up.
enum class LrSchedule { kCosine, kConstant };
inline constexpr config::EnumNames<LrSchedule, 2> kLrScheduleNames{
    {{LrSchedule::kCosine, "cosine"}, {LrSchedule::kConstant, "constant"}}};
constexpr const auto& config_enum_names(LrSchedule) { return kLrScheduleNames; }

struct RunConfig {
  std::string name = "tandem";
  std::string output_dir = "runs/tandem";
  int64_t seed = 1234;
  runtime::DeviceKind device = runtime::DeviceKind::kAuto;
  bool overwrite = false;  // a fresh run may replace another run's outputs in output_dir

  template <class V>
  void visit(V& v) {
    v("name", name, {.doc = "Run name, used in logs"});
    v("output_dir", output_dir, {.doc = "Where metrics.jsonl, TensorBoard events, traces and checkpoints go"});
    v("seed", seed, {.doc = "Seed for weights, data order and everything random", .min = 0});
    v("device", device, {.doc = "Where to train: auto (GPU when present), cpu or cuda"});
    v("overwrite", overwrite,
      {.doc = "Start afresh in an output_dir that holds another run's metrics or checkpoints, deleting them "
              "(`tandem train --overwrite`); without it such a start is refused"});
  }
};

struct OptimConfig {
  std::string name = "adamw";
  double lr = 3e-3;
  double min_lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  int64_t warmup_steps = 10;
  LrSchedule lr_schedule = LrSchedule::kCosine;

  template <class V>
  void visit(V& v) {
    v("name", name, {.doc = "Optimizer", .choices = "adamw"});
    v("lr", lr, {.doc = "Peak learning rate", .min = 0});
    v("min_lr", min_lr, {.doc = "Learning rate at the end of the cosine decay", .min = 0});
    v("beta1", beta1, {.doc = "AdamW first-moment decay", .min = 0, .max = 1});
    v("beta2", beta2, {.doc = "AdamW second-moment decay", .min = 0, .max = 1});
    v("eps", eps, {.doc = "AdamW epsilon", .min = 0});
    v("weight_decay", weight_decay, {.doc = "Decoupled weight decay (not applied to norms and biases)", .min = 0});
    v("grad_clip", grad_clip, {.doc = "Global gradient-norm clip; 0 = off", .min = 0});
    v("warmup_steps", warmup_steps, {.doc = "Linear warm-up steps", .min = 0});
    v("lr_schedule", lr_schedule, {.doc = "Shape after warm-up"});
  }
};

struct TrainConfig {
  int64_t steps = 100;
  Precision precision = Precision::kAuto;
  model::RecomputeMode recompute = model::RecomputeMode::kNone;
  int64_t recompute_layers = 0;
  bool cuda_graph = false;
  int64_t eval_interval = 0;
  int64_t eval_steps = 4;

  model::RecomputePolicy recompute_policy() const { return {recompute, recompute_layers}; }

  template <class V>
  void visit(V& v) {
    v("steps", steps, {.doc = "Optimizer steps to train", .min = 1});
    v("precision", precision, {.doc = "auto (bf16 on GPU, fp32 on CPU), fp32 or bf16 (fp32 master weights)"});
    v("recompute", recompute,
      {.doc = "Activations recomputed in backward instead of kept: none, selective (input norm and attention "
              "projections, as DeepSeek-V3) or full (whole decoder layers)"});
    v("recompute_layers", recompute_layers,
      {.doc = "With recompute: full, the first N decoder layers of each pipeline stage; 0 = all", .min = 0});
    v("cuda_graph", cuda_graph,
      {.doc = "Replay each micro-batch's forward and backward as one CUDA graph (GPU; pp, tp and ep 1, ZeRO 0/1, "
              "no capacity_factor)"});
    v("eval_interval", eval_interval, {.doc = "Evaluate on the held-out split every N steps; 0 = off", .min = 0});
    v("eval_steps", eval_steps,
      {.doc = "Held-out batches of global_batch_size samples per evaluation (the same samples in every layout)",
       .min = 1});
  }
};

struct HardwareConfig {
  double gpu_tflops = 989.0;       // dense bf16 peak per GPU (H100/H200 SXM)
  double mfu_assumed = 0.45;       // fraction of peak the simulator assumes compute reaches
  double intra_node_gbps = 160.0;  // achievable NVLink all-to-all bandwidth per GPU, GB/s
  double inter_node_gbps = 40.0;   // achievable InfiniBand bandwidth per GPU, GB/s
  int64_t gpus_per_node = 8;
  double p2p_latency_us = 20.0;
  double gpu_memory_gib = 80.0;
  double cpu_gflops_per_core = 100.0;  // fp32 peak of one core (MFU on CPU runs)

  template <class V>
  void visit(V& v) {
    v("gpu_tflops", gpu_tflops, {.doc = "Peak dense bf16 TFLOP/s per GPU (for MFU and the simulator)", .min = 0.001});
    v("mfu_assumed", mfu_assumed,
      {.doc = "Fraction of peak the simulator assumes kernels reach", .min = 0.01, .max = 1});
    v("intra_node_gbps", intra_node_gbps, {.doc = "All-to-all bandwidth per GPU inside a node, GB/s", .min = 0.001});
    v("inter_node_gbps", inter_node_gbps, {.doc = "All-to-all bandwidth per GPU across nodes, GB/s", .min = 0.001});
    v("gpus_per_node", gpus_per_node, {.doc = "GPUs per node", .min = 1});
    v("p2p_latency_us", p2p_latency_us, {.doc = "Pipeline send/receive latency, microseconds", .min = 0});
    v("gpu_memory_gib", gpu_memory_gib,
      {.doc = "Memory per GPU, GiB (memory estimates and plan's budget)", .min = 0.001});
    v("cpu_gflops_per_core", cpu_gflops_per_core,
      {.doc = "Peak fp32 GFLOP/s of one CPU core (MFU of CPU runs)", .min = 0.001});
  }
};

struct JobConfig {
  RunConfig run;
  model::ModelConfig model;
  parallel::ParallelConfig parallel;
  runtime::DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  runtime::CheckpointConfig checkpoint;
  runtime::LoggingConfig logging;
  HardwareConfig hardware;

  template <class V>
  void visit(V& v) {
    v.section("run", run, "Run identity and output");
    v.section("model", model, "Model architecture (Hugging Face DeepseekV3Config names)");
    v.section("parallel", parallel, "Parallel layout and pipeline schedule");
    v.section("data", data, "Training data");
    v.section("optim", optim, "Optimizer and learning-rate schedule");
    v.section("train", train, "Training loop");
    v.section("checkpoint", checkpoint, "Checkpoints and resume");
    v.section("logging", logging, "Logs, metrics and traces");
    v.section("hardware", hardware, "Hardware description for simulate, plan, MFU and memory estimates");
  }

  // Every rule that spans fields or sections, for a job on `world_size` ranks. Resolves
  // parallel.dp when it is 0. Throws config::KeyError naming the offending key.
  void resolve_and_validate(int64_t world_size);
};

// Model chunks (stages) each pipeline rank holds: virtual_stages for the interleaved schedule,
// two for DualPipe/DualPipeV, else one.
int pipeline_chunks(const parallel::PipelineConfig& pipeline);
// Whether the job runs through the pipeline executor: more than one pipeline rank, or a schedule
// that places several stages on one rank (dualpipev, interleaved with pp = 1).
bool uses_pipeline(const JobConfig& config);

// The device a rank trains on: `wanted` (run.device), where auto means the GPU when
// `gpu_usable`. Returns kCpu or kCuda; cuda without a usable GPU is the caller's error to report.
runtime::DeviceKind resolve_device(runtime::DeviceKind wanted, bool gpu_usable);
// The precision a run on `device` (kCpu or kCuda) trains in: `wanted` (train.precision), where
// auto means bf16 on GPUs and fp32 on CPUs. Training, check-config, simulate and the benchmarks
// all decide through this one rule. Returns kFp32 or kBf16.
Precision resolve_precision(Precision wanted, runtime::DeviceKind device);

}  // namespace tandem::launch
