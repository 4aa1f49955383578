// Job-file loading: every kind of bad input is rejected with a message that names the key, the
// value and where it was set; overrides, defaults and the printed config round-trip.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "launch/config/config_loader.h"
#include "launch/plan/memory_estimate.h"

namespace tandem::launch {
namespace {

const std::string kTinyJob = std::string(TANDEM_SOURCE_DIR) + "/configs/tiny_moe.yaml";

// Expects loading to fail with a kConfig error whose message contains every fragment.
void expect_rejected(const std::string& yaml, const std::vector<std::string>& fragments,
                     const std::vector<std::string>& overrides = {}, int64_t world = 1) {
  try {
    load_job_config_from_string(yaml, "job.yaml", overrides, world);
    FAIL() << "accepted:\n" << yaml;
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kConfig);
    for (const std::string& fragment : fragments) {
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos)
          << "missing '" << fragment << "' in: " << error.what();
    }
  }
}

TEST(ConfigLoader, DefaultJobLoadsOnFourRanks) {
  // The default job is DualPipe over 4 pipeline ranks.
  const JobConfig config = load_job_config(kTinyJob, {}, 4);
  EXPECT_EQ(config.run.name, "tiny_moe");
  EXPECT_EQ(config.parallel.pp, 4);
  EXPECT_EQ(config.parallel.pipeline.schedule, schedule::ScheduleKind::kDualPipe);
  EXPECT_EQ(config.parallel.dp, 1);                      // derived from the world
  EXPECT_EQ(config.parallel.pipeline.micro_batches, 8);  // derived: 16 / (2 * 1) >= 2 * pp
  EXPECT_EQ(config.logging.trace_steps, (std::vector<int64_t>{50}));
  const JobConfig data_parallel = load_job_config(kTinyJob, {"parallel.pp=1", "parallel.pipeline.schedule=1f1b"}, 4);
  EXPECT_EQ(data_parallel.parallel.dp, 4);
  EXPECT_EQ(data_parallel.parallel.pipeline.micro_batches, 2);  // 16 / (2 * 4)
  EXPECT_FALSE(config.model.q_lora_rank.has_value());
  EXPECT_EQ(config.model.n_routed_experts, 8);
}

TEST(ConfigLoader, OverridesApplyAndRederive) {
  const JobConfig config = load_job_config(kTinyJob, {"parallel.pp=2", "parallel.dp=2", "train.steps=20"}, 4);
  EXPECT_EQ(config.parallel.pp, 2);
  EXPECT_EQ(config.parallel.dp, 2);
  EXPECT_EQ(config.train.steps, 20);
  EXPECT_EQ(config.parallel.pipeline.micro_batches, 4);
  const JobConfig lists = load_job_config(kTinyJob, {"logging.trace_steps=[3, 4]", "model.q_lora_rank=32"}, 4);
  EXPECT_EQ(lists.logging.trace_steps, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(lists.model.q_lora_rank, 32);
}

TEST(ConfigLoader, MisspeltKeySuggestsTheRightOne) {
  expect_rejected("model:\n  hidden_sise: 64\n",
                  {"job.yaml:2", "model.hidden_sise", "unknown key", "did you mean 'hidden_size'"});
  expect_rejected("paralel:\n  pp: 1\n", {"job.yaml:1", "unknown key", "did you mean 'parallel'"});
  expect_rejected("run:\n  seed: 1\n", {"unknown key", "parallel.ppp", "--set parallel.ppp=2", "did you mean 'pp'"},
                  {"parallel.ppp=2"});
}

TEST(ConfigLoader, DuplicateKeysNameBothLines) {
  // yaml-cpp alone would keep the first `pp` and drop the second without a word.
  expect_rejected("parallel:\n  pp: 1\n  tp: 1\n  pp: 2\n",
                  {"job.yaml:4", "parallel.pp", "duplicate key", "already set at line 2"});
  expect_rejected("train:\n  steps: 5\nrun:\n  seed: 1\ntrain:\n  steps: 6\n",
                  {"job.yaml:5", "train: duplicate key", "line 1"});
  // The same name in two sections is not a duplicate.
  const JobConfig config = load_job_config_from_string("run:\n  name: a\noptim:\n  name: adamw\n", "job.yaml", {}, 1);
  EXPECT_EQ(config.run.name, "a");
}

TEST(ConfigLoader, JobFileWorldIsTheLayoutsOwn) {
  // simulate and plan outside mpirun: the default job is pp 4 with dp derived (1 on its own).
  EXPECT_EQ(job_file_world(kTinyJob, {}), 4);
  EXPECT_EQ(job_file_world(kTinyJob, {"parallel.pp=2", "parallel.dp=3", "parallel.tp=2"}), 12);
}

TEST(ConfigLoader, WrongTypesNameKeyValueAndLine) {
  expect_rejected("parallel:\n  tp: 1\n  pp: two\n", {"job.yaml:3", "parallel.pp", "expected an integer, got 'two'"});
  expect_rejected("parallel:\n  pp: 1.5\n", {"parallel.pp", "expected an integer, got '1.5'"});
  expect_rejected("optim:\n  lr: fast\n", {"optim.lr", "expected a number, got 'fast'"});
  expect_rejected("parallel:\n  sequence_parallel: maybe\n",
                  {"parallel.sequence_parallel", "expected true or false, got 'maybe'"});
  expect_rejected("model: 5\n", {"job.yaml:1", "model", "expected a section"});
  expect_rejected("parallel:\n  pp: [1, 2]\n", {"parallel.pp", "got a list or mapping"});
  expect_rejected("- a\n- b\n", {"must be a mapping"});
}

TEST(ConfigLoader, OutOfRangeValuesAreRejected) {
  expect_rejected("model:\n  hidden_size: -64\n", {"job.yaml:2", "model.hidden_size", "must be >= 1 (got -64)"});
  expect_rejected("parallel:\n  zero: 4\n", {"parallel.zero", "must be <= 3 (got 4)"});
  expect_rejected("parallel:\n  pipeline:\n    schedule: dualpip\n",
                  {"job.yaml:3", "parallel.pipeline.schedule", "'dualpip' is not one of", "did you mean 'dualpipe'"});
  expect_rejected("", {"--set data.seq_length=0", "data.seq_length", "must be >= 2"}, {"data.seq_length=0"});
}

TEST(ConfigLoader, LayoutsThatDoNotFitTheWorldAreRejected) {
  expect_rejected("parallel:\n  pp: 3\n", {"job.yaml:2", "parallel.pp", "world of 4 ranks is not divisible by pp*tp"},
                  {}, 4);
  expect_rejected("parallel:\n  pp: 1\n  dp: 3\n", {"job.yaml:3", "parallel.dp", "does not match the world of 4"}, {},
                  4);
  expect_rejected("parallel:\n  ep: 3\n", {"parallel.ep", "must divide dp*tp"}, {}, 4);
  expect_rejected("parallel:\n  tp: 4\nmodel:\n  num_attention_heads: 6\n",
                  {"parallel.tp", "num_attention_heads = 6 is not divisible by tp = 4"}, {}, 4);
  expect_rejected("parallel:\n  ep: 2\nmodel:\n  n_routed_experts: 5\n  n_group: 1\n",
                  {"n_routed_experts = 5 is not divisible by ep = 2"}, {}, 2);
}

TEST(ConfigLoader, ScheduleRulesComeFromTheScheduleLibrary) {
  // dualpipe needs an even pp and at least 2*pp micro-batches.
  expect_rejected("parallel:\n  pp: 3\n  pipeline:\n    schedule: dualpipe\n"
                  "data:\n  global_batch_size: 12\n  micro_batch_size: 1\n",
                  {"job.yaml:4", "parallel.pipeline.schedule", "even"}, {}, 3);
  expect_rejected("parallel:\n  pp: 4\n  pipeline:\n    schedule: dualpipe\n"
                  "data:\n  global_batch_size: 4\n  micro_batch_size: 1\n",
                  {"parallel.pipeline.schedule", "micro_batches = 4"}, {}, 4);
  expect_rejected(
      "parallel:\n  pipeline:\n    micro_batches: 3\ndata:\n  global_batch_size: 16\n  micro_batch_size: 4\n",
      {"job.yaml:3", "parallel.pipeline.micro_batches", "is 3, but global_batch_size"}, {}, 1);
  expect_rejected("parallel:\n  pp: 2\n  pipeline:\n    virtual_stages: 2\n", {"virtual_stages = 2 only applies"}, {},
                  2);
}

TEST(ConfigLoader, CudaGraphsOnlyWhereForwardAndBackwardCanBeRecorded) {
  // The default job on one GPU rank, then on dp 2 (its buckets reduced after the graph).
  const std::vector<std::string> flat = {"parallel.pp=1", "parallel.pipeline.schedule=1f1b", "run.device=cuda",
                                         "train.precision=auto", "train.cuda_graph=true"};
  EXPECT_TRUE(load_job_config(kTinyJob, flat, 1).train.cuda_graph);
  EXPECT_TRUE(load_job_config(kTinyJob, flat, 2).train.cuda_graph);
  auto rejected = [&](std::vector<std::string> extra, int64_t world, const std::string& fragment) {
    std::vector<std::string> overrides = flat;
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    try {
      load_job_config(kTinyJob, overrides, world);
      ADD_FAILURE() << "accepted train.cuda_graph with " << fmt::format("{}", fmt::join(extra, " "));
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kConfig);
      EXPECT_NE(std::string(error.what()).find("train.cuda_graph"), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    }
  };
  rejected({"run.device=cpu"}, 1, "run.device is cpu");
  rejected({"parallel.pp=2"}, 2, "pipelines");
  rejected({"parallel.tp=2"}, 2, "tp = 2");
  rejected({"parallel.ep=2"}, 2, "ep = 2");
  rejected({"parallel.zero=2"}, 2, "ZeRO 2");
  rejected({"model.capacity_factor=1.25"}, 1, "capacity_factor");
  rejected({"train.precision=fp32"}, 1, "fp32 grouped GEMMs");
  // A dense model may record its fp32 step.
  std::vector<std::string> dense_fp32 = flat;
  dense_fp32.insert(dense_fp32.end(), {"train.precision=fp32", "model.n_routed_experts=0"});
  EXPECT_TRUE(load_job_config(kTinyJob, dense_fp32, 1).train.cuda_graph);
}

TEST(ConfigLoader, BadOverridesAndSyntaxErrors) {
  expect_rejected("", {"--set expects key=value"}, {"parallel.pp"});
  expect_rejected("", {"--set parallel.pp.x=1", "is a value, not a section"}, {"parallel.pp=2", "parallel.pp.x=1"});
  expect_rejected("model:\n  hidden_size: [1, 2\n", {"job.yaml:", "YAML syntax error"});
  try {
    load_job_config("/nonexistent/job.yaml", {}, 1);
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("cannot open job file '/nonexistent/job.yaml'"), std::string::npos);
  }
}

TEST(ConfigLoader, PrintedConfigLoadsBackToTheSameConfig) {
  const JobConfig config = load_job_config(kTinyJob, {"model.q_lora_rank=16", "logging.trace_steps=[2]"}, 4);
  const std::string printed = job_config_to_yaml(config);
  const JobConfig again = load_job_config_from_string(printed, "printed.yaml", {}, 4);
  EXPECT_EQ(job_config_to_yaml(again), printed);
  EXPECT_NE(printed.find("q_lora_rank: 16"), std::string::npos);
}

TEST(ConfigLoader, ReferenceDocumentsEveryKey) {
  const std::string reference = job_config_reference_markdown();
  const std::vector<std::string> keys = job_config_keys();
  EXPECT_GT(keys.size(), 80u);
  std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), keys.size());
  for (const std::string& key : keys) {
    EXPECT_NE(reference.find("`" + key + "`"), std::string::npos) << key;
  }
  // The names in DESIGN.md section 9 are a contract.
  for (const char* contract : {"run.output_dir", "run.seed", "train.steps", "parallel.pp", "parallel.dp", "parallel.tp",
                               "parallel.ep", "parallel.zero", "parallel.order", "parallel.pipeline.schedule",
                               "parallel.pipeline.micro_batches", "parallel.pipeline.virtual_stages"}) {
    EXPECT_TRUE(unique.count(contract)) << contract;
  }
}

TEST(ConfigLoader, ExampleConfigsAreValid) {
  const std::string dir = std::string(TANDEM_SOURCE_DIR) + "/configs/";
  const JobConfig v3 = load_job_config(dir + "deepseek_v3_671b.yaml", {}, 2048);
  EXPECT_EQ(v3.parallel.dp, 128);
  EXPECT_EQ(v3.parallel.pipeline.micro_batches, 120);  // 15360 / (1 * 128)
  EXPECT_NO_THROW(load_job_config(dir + "moe_16e_gpu.yaml", {}, 1));
}

TEST(ConfigLoader, ChoicesAreEnumsParsedOnceAndPrintedBack) {
  const JobConfig config =
      load_job_config(kTinyJob,
                      {"run.device=cuda", "train.precision=bf16", "optim.lr_schedule=constant",
                       "model.attention_type=gqa", "model.num_key_value_heads=2", "model.rope_scaling.type=yarn",
                       "model.rope_scaling.factor=4", "parallel.backend=nccl", "parallel.pipeline.schedule=zb1p"},
                      4);
  EXPECT_EQ(config.run.device, runtime::DeviceKind::kCuda);
  EXPECT_EQ(config.train.precision, Precision::kBf16);
  EXPECT_EQ(config.optim.lr_schedule, LrSchedule::kConstant);
  EXPECT_EQ(config.model.attention_type, model::AttentionType::kGqa);
  EXPECT_TRUE(config.model.uses_yarn());
  EXPECT_EQ(config.parallel.backend, parallel::BackendKind::kNccl);
  EXPECT_EQ(config.parallel.pipeline.schedule, schedule::ScheduleKind::kZb1p);
  // The printed config (what checkpoints store) loads back to the same choices.
  const JobConfig again = load_job_config_from_string(job_config_to_yaml(config), "printed", {}, 4);
  EXPECT_EQ(job_config_to_yaml(again), job_config_to_yaml(config));
  EXPECT_EQ(again.parallel.pipeline.schedule, schedule::ScheduleKind::kZb1p);
  expect_rejected("train:\n  precision: fp16\n",
                  {"job.yaml:2", "train.precision", "'fp16' is not one of auto, fp32, bf16"});
  expect_rejected("run:\n  device: gpu\n", {"run.device", "'gpu' is not one of auto, cpu, cuda"});
}

TEST(ConfigLoader, DeviceAndPrecisionResolveByOneRule) {
  using runtime::DeviceKind;
  EXPECT_EQ(resolve_device(DeviceKind::kAuto, true), DeviceKind::kCuda);
  EXPECT_EQ(resolve_device(DeviceKind::kAuto, false), DeviceKind::kCpu);
  EXPECT_EQ(resolve_device(DeviceKind::kCpu, true), DeviceKind::kCpu);
  EXPECT_EQ(resolve_device(DeviceKind::kCuda, false), DeviceKind::kCuda);  // the caller reports it
  EXPECT_EQ(resolve_precision(Precision::kAuto, DeviceKind::kCuda), Precision::kBf16);
  EXPECT_EQ(resolve_precision(Precision::kAuto, DeviceKind::kCpu), Precision::kFp32);
  EXPECT_EQ(resolve_precision(Precision::kBf16, DeviceKind::kCpu), Precision::kBf16);
  EXPECT_EQ(resolve_precision(Precision::kFp32, DeviceKind::kCuda), Precision::kFp32);
  EXPECT_THROW(resolve_precision(Precision::kAuto, DeviceKind::kAuto), Error);
  // Estimates (check-config, simulate, plan) take auto as the GPUs the job is meant for.
  EXPECT_EQ(estimated_precision(load_job_config(kTinyJob, {}, 4)), Precision::kFp32);  // device: cpu
  EXPECT_EQ(estimated_precision(load_job_config(kTinyJob, {"run.device=auto", "train.precision=auto"}, 4)),
            Precision::kBf16);
}

}  // namespace
}  // namespace tandem::launch
