// Run directories and resumes: a fresh start refuses a directory that holds another run unless
// told to overwrite it (then it is emptied of that run's outputs), and a resume sorts what it
// changes into layout (reported), schedule changes that keep the finished steps' learning rates
// (reported) and changes to the optimisation (refused unless confirmed).
#include "launch/train/run_directory.h"

#include <gtest/gtest.h>

#include "launch/config/config_loader.h"
#include "runtime_test_util.h"

namespace tandem::launch {
namespace {

using runtime::testing::TempDir;

const std::string kTinyJob = std::string(TANDEM_SOURCE_DIR) + "/configs/tiny_moe.yaml";

JobConfig tiny(const std::vector<std::string>& overrides, int64_t world = 4) {
  return load_job_config(kTinyJob, overrides, world);
}

std::string refusal(const JobConfig& config) {
  try {
    check_run_directory(config);
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    return error.message();
  }
  return "";
}

TEST(RunDirectory, FreshStartRefusesAnotherRunsOutputs) {
  TempDir dir;
  const std::string out = dir / "run";
  const JobConfig fresh = tiny({"run.output_dir=" + out, "checkpoint.resume=none"});
  EXPECT_TRUE(refusal(fresh).empty()) << "a missing directory is free";
  runtime::make_directories(out);
  runtime::write_file_atomic(out + "/metrics.jsonl", "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n");
  const std::string message = refusal(fresh);
  for (const char* fragment : {"run.output_dir", "metrics.jsonl with 2 steps (last 2)",
                               "a fresh start (checkpoint.resume: none)", "--set run.output_dir=", "--overwrite"}) {
    EXPECT_NE(message.find(fragment), std::string::npos) << "missing '" << fragment << "' in: " << message;
  }
  EXPECT_NE(message.find(out), std::string::npos) << message;
  EXPECT_EQ(message.find("checkpoint.resume=auto"), std::string::npos) << "no checkpoint to continue from";
  // auto with no checkpoint to resume is a fresh start too.
  EXPECT_NE(refusal(tiny({"run.output_dir=" + out, "checkpoint.resume=auto"})).find("finds no checkpoint in"),
            std::string::npos);
  // With a checkpoint, continuing it is one of the choices.
  runtime::make_directories(out + "/checkpoints/step_00000002");
  EXPECT_NE(refusal(fresh).find("continue that run (--set checkpoint.resume=auto)"), std::string::npos);
}

TEST(RunDirectory, OverwriteDeletesOnlyTheEarlierRunsOutputs) {
  TempDir dir;
  const std::string out = dir / "run";
  runtime::make_directories(out + "/checkpoints/step_00000004");
  runtime::make_directories(out + "/tensorboard");
  runtime::write_file_atomic(out + "/checkpoints/latest", "step_00000004\n");
  runtime::write_file_atomic(out + "/tensorboard/events.out", "x");
  runtime::write_file_atomic(out + "/notes.txt", "mine");
  const JobConfig config = tiny({"run.output_dir=" + out, "checkpoint.resume=none", "run.overwrite=true"});
  const RunDirectoryPlan plan = check_run_directory(config);
  ASSERT_TRUE(plan.clear);
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_NE(plan.notes[0].find("checkpoints of step(s) 4"), std::string::npos) << plan.notes[0];
  clear_run_directory(config);
  EXPECT_FALSE(runtime::path_exists(out + "/checkpoints/step_00000004"));
  EXPECT_FALSE(runtime::path_exists(out + "/checkpoints/latest"));
  EXPECT_FALSE(runtime::path_exists(out + "/tensorboard"));
  EXPECT_TRUE(runtime::path_exists(out + "/notes.txt")) << "files tandem did not write stay";
  EXPECT_TRUE(refusal(tiny({"run.output_dir=" + out, "checkpoint.resume=none"})).empty());
}

TEST(RunDirectory, ResumeSortsChanges) {
  const JobConfig saved = tiny({});
  // Another layout and other bookkeeping: reported, allowed.
  ResumeChanges changes = compare_for_resume(
      saved, tiny({"parallel.pp=1", "parallel.pipeline.schedule=1f1b", "logging.log_interval=1"}), 50);
  EXPECT_TRUE(changes.optimisation.empty());
  EXPECT_TRUE(changes.schedule.empty());
  ASSERT_GE(changes.layout.size(), 2u);
  EXPECT_EQ(changes.layout[0], "parallel.pp 4 -> 1");
  // Replaying CUDA graphs computes the same steps: reported as another layout, allowed. (Set
  // directly: the default job's CPU pipeline cannot record graphs, and only the keys count.)
  JobConfig graphed = saved;
  graphed.train.cuda_graph = true;
  changes = compare_for_resume(saved, graphed, 50);
  EXPECT_TRUE(changes.optimisation.empty());
  EXPECT_EQ(changes.layout, (std::vector<std::string>{"train.cuda_graph false -> true"}));
  // More steps during warm-up (10 steps): the finished steps keep their learning rates.
  changes = compare_for_resume(saved, tiny({"train.steps=200"}), 4);
  EXPECT_TRUE(changes.optimisation.empty());
  EXPECT_EQ(changes.schedule, (std::vector<std::string>{"train.steps 100 -> 200"}));
  // After warm-up the cosine decay of step 50 depends on the length: refused.
  changes = compare_for_resume(saved, tiny({"train.steps=200"}), 50);
  ASSERT_EQ(changes.optimisation.size(), 1u);
  EXPECT_NE(changes.optimisation[0].find("train.steps 100 -> 200 (the learning rate of step 11"), std::string::npos)
      << changes.optimisation[0];
  // Batch and optimizer changes alter the optimisation whatever the step.
  changes = compare_for_resume(saved, tiny({"data.global_batch_size=32", "optim.weight_decay=0.0"}), 1);
  EXPECT_EQ(changes.optimisation,
            (std::vector<std::string>{"data.global_batch_size 16 -> 32", "optim.weight_decay 0.1 -> 0"}));
}

}  // namespace
}  // namespace tandem::launch
