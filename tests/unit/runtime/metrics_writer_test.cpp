// metrics.jsonl: exact line format, flushing per line, the contract keys, and dropping a dead
// run's later steps on resume.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/error.h"
#include "runtime/metrics_writer.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

std::vector<MetricField> step_fields(int64_t step, double loss) {
  return {{"step", step}, {"loss", loss}, {"lr", 0.5}, {"grad_norm", 1.25}, {"tokens_per_s", 1000.0}};
}

TEST(MetricsWriter, FormatsOrderedKeysAsOneJsonObject) {
  const std::string line = metrics_json_line({{"step", int64_t{3}},
                                              {"loss", 2.5},
                                              {"lr", 0.25},
                                              {"note", std::string("say \"hi\"\n\t\\ \x01")},
                                              {"big", int64_t{-9007199254740993}}});
  EXPECT_EQ(line, R"({"step":3,"loss":2.5,"lr":0.25,"note":"say \"hi\"\n\t\\ \u0001","big":-9007199254740993})");
  EXPECT_EQ(metrics_json_line({{"x", std::nan("")}, {"y", std::numeric_limits<double>::infinity()}}),
            R"({"x":null,"y":null})");
  EXPECT_EQ(metrics_json_line({{"third", 1.0 / 3.0}}), R"({"third":0.3333333333333333})") << "round-trip precision";
}

TEST(MetricsWriter, AppendsAndFlushesEveryLine) {
  TempDir dir;
  const std::string path = dir / "run/metrics.jsonl";
  MetricsWriter writer(path);
  writer.write(step_fields(1, 5.0));
  EXPECT_EQ(testing::slurp(path), R"({"step":1,"loss":5,"lr":0.5,"grad_norm":1.25,"tokens_per_s":1000})"
                                  "\n")
      << "visible before the writer closes";
  writer.write(step_fields(2, 4.5));
  const std::string text = testing::slurp(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

TEST(MetricsWriter, EnforcesTheContractKeys) {
  TempDir dir;
  MetricsWriter writer(dir / "m.jsonl");
  try {
    writer.write({{"step", int64_t{1}}, {"loss", 1.0}});
    FAIL() << "a line without lr was accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInternal);
    EXPECT_NE(error.message().find("required key 'lr'"), std::string::npos) << error.message();
  }
  std::vector<MetricField> twice = step_fields(1, 1.0);
  twice.push_back({"loss", 2.0});
  EXPECT_THROW(writer.write(twice), Error);
  MetricsWriter free_form(dir / "eval.jsonl", std::nullopt, {});
  EXPECT_NO_THROW(free_form.write({{"eval_loss", 1.0}}));
}

TEST(MetricsWriter, ResumeDropsLaterStepsAndATornLine) {
  TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  {
    MetricsWriter writer(path);
    for (int64_t step = 1; step <= 5; ++step) writer.write(step_fields(step, 10.0 - step));
  }
  testing::spit(path, testing::slurp(path) + R"({"step":6,"lo)");  // the run died mid-line
  {
    MetricsWriter resumed(path, /*resume_after_step=*/3);
    resumed.write(step_fields(4, 42.0));
  }
  const std::string text = testing::slurp(path);
  std::vector<int64_t> steps;
  size_t begin = 0;
  for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
    steps.push_back(*metrics_line_int(std::string_view(text).substr(begin, end - begin), "step"));
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_NE(text.find(R"("loss":42)"), std::string::npos);
  EXPECT_EQ(begin, text.size());
}

}  // namespace
}  // namespace tandem::runtime
