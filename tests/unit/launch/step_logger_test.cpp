// StepLogger: metrics.jsonl never holds a step twice (a fresh start drops an earlier file's
// lines, a resume those after its step; TensorBoard is told to hide them), and TensorBoard gets
// every series metrics.jsonl has.
#include "launch/train/step_logger.h"

#include <gtest/gtest.h>

#include <sstream>

#include "launch/config/config_loader.h"
#include "runtime/process_context.h"
#include "runtime_test_util.h"

namespace tandem::launch {
namespace {

using runtime::testing::TempDir;

JobConfig job(const std::string& out) {
  return load_job_config(std::string(TANDEM_SOURCE_DIR) + "/configs/tiny_moe.yaml",
                         {"run.output_dir=" + out, "train.steps=4", "train.eval_interval=2"}, 4);
}

void log_steps(const JobConfig& config, std::optional<int64_t> resumed, int64_t first, int64_t last) {
  const runtime::ProcessContext root;
  StepLogger logger(config, root, resumed, 1e12);
  for (int64_t step = first; step <= last; ++step) {
    StepRecord record;
    record.step = step;
    record.losses.loss = 3.0;
    if (step % 2 == 0) record.eval_loss = 2.5;
    logger.log(record, 0.5);
  }
  logger.flush();
}

std::vector<std::string> lines(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(runtime::read_file(path));
  for (std::string line; std::getline(in, line);) out.push_back(line.substr(0, line.find(',')));
  return out;
}

TEST(StepLogger, MetricsNeverHoldAStepTwice) {
  TempDir dir;
  const JobConfig config = job(dir / "run");
  log_steps(config, std::nullopt, 1, 3);
  log_steps(config, 2, 3, 4);  // resumed from step 2: the dead run's step 3 goes
  EXPECT_EQ(lines(dir / "run/metrics.jsonl"),
            (std::vector<std::string>{"{\"step\":1", "{\"step\":2", "{\"step\":3", "{\"step\":4"}));
  // TensorBoard keeps the dead run's file; the resumed run's starts with a SessionLog START at
  // step 3 (field 6 {status: START}), on which TensorBoard hides the dead run's step 3.
  int marked = 0;
  for (const std::string& name : runtime::list_directory(dir / "run/tensorboard")) {
    const std::string events = runtime::read_file(dir / "run/tensorboard/" + name);
    if (events.find(std::string("\x10\x03\x32\x02\x08\x01", 6)) != std::string::npos) ++marked;
  }
  EXPECT_EQ(marked, 1) << "one event file with a restart marker at step 3";
  log_steps(config, std::nullopt, 1, 1);  // a fresh start (run.overwrite) replaces them all
  EXPECT_EQ(lines(dir / "run/metrics.jsonl"), (std::vector<std::string>{"{\"step\":1"}));
}

TEST(StepLogger, TensorBoardGetsEverySeriesOfTheMetrics) {
  TempDir dir;
  const JobConfig config = job(dir / "run");
  log_steps(config, std::nullopt, 1, 2);
  const std::vector<std::string> files = runtime::list_directory(dir / "run/tensorboard");
  ASSERT_EQ(files.size(), 1u);
  // Tags are stored as plain strings inside the event records.
  const std::string events = runtime::read_file(dir / "run/tensorboard/" + files[0]);
  const std::string metrics = runtime::read_file(dir / "run/metrics.jsonl");
  const std::string last = metrics.substr(metrics.rfind('{'));  // step 2: has eval_loss
  int series = 0;
  for (size_t at = last.find('"'); at != std::string::npos; at = last.find('"', last.find(':', at) + 1)) {
    const std::string key = last.substr(at + 1, last.find('"', at + 1) - at - 1);
    if (key == "step") continue;
    const std::string tag = key == "eval_loss" ? "eval/lm_loss" : "train/" + key;
    EXPECT_NE(events.find(tag), std::string::npos) << "metrics.jsonl has " << key << ", TensorBoard lacks " << tag;
    ++series;
  }
  EXPECT_GE(series, 12) << last;  // loss ... consumed_tokens, eval_loss
}

}  // namespace
}  // namespace tandem::launch
