// `tandem checkpoint inspect`: an intact checkpoint is described (step, layout, model, every
// global tensor with its pieces, files with checksums) and passes; a flipped byte, a truncated
// or a missing shard is reported per file, naming the damaged tensors; a root resolves through
// `latest`; the JSON form parses.
#include <gtest/gtest.h>

#include "export_test_util.h"
#include "launch/export/checkpoint_inspect.h"
#include "runtime/json.h"
#include "runtime_test_util.h"

namespace tandem::launch {
namespace {

using runtime::testing::TempDir;
using testing::save_model_checkpoint;
using testing::tiny_job;

TEST(CheckpointInspect, DescribesAnIntactShardedCheckpoint) {
  TempDir dir;
  const auto saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 2, 30);
  const InspectReport report = inspect_checkpoint(dir / "ckpt");  // the root: follows latest
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.dir, saved.dir);
  EXPECT_NE(report.note.find("latest -> step_00000030"), std::string::npos) << report.note;
  EXPECT_EQ(report.manifest.step, 30);
  ASSERT_EQ(report.files.size(), 2u);
  EXPECT_EQ(report.files[1].name, "rank_00001.bin");
  EXPECT_EQ(report.files[1].crc32c, report.files[1].expected_crc32c);
  // params + exp_avg per parameter, one buffer per MoE layer (layer 1 and the MTP layer 2).
  EXPECT_EQ(report.tensors.size(), 2 * saved.params.size() + saved.buffers.size());
  for (const TensorSummary& t : report.tensors) {
    EXPECT_TRUE(t.covered) << t.name;
    if (t.name == "model.embed_tokens.weight" && t.kind == runtime::TensorKind::kParam) {
      EXPECT_EQ(t.global_shape, (std::vector<int64_t>{320, 32}));
      EXPECT_EQ(t.num_entries, 2);  // row halves on two ranks
      EXPECT_EQ(t.stored_bytes, 320 * 32 * 4);
      EXPECT_EQ(t.global_bytes, 320 * 32 * 4);
    }
  }
  EXPECT_NE(report.model_summary.find("mla attention, 2 layers (+1 MTP), hidden 32"), std::string::npos)
      << report.model_summary;

  const std::string text = render_inspect_text(report);
  for (const char* fragment :
       {"step 30, optimizer step 30", "2 ranks = pp 1 x dp 1 x tp 2", "model.embed_tokens.weight", "optimizer.exp_avg",
        "rank_00001.bin", "ok (CRC-32C verified)", "verification: all 2 files intact (sizes and CRC-32C)"}) {
    EXPECT_NE(text.find(fragment), std::string::npos) << "missing '" << fragment << "' in:\n" << text;
  }
  const nlohmann::json doc = json::parse(render_inspect_json(report));
  EXPECT_EQ(doc.at("step"), 30);
  EXPECT_TRUE(doc.at("ok").get<bool>());
  EXPECT_EQ(doc.at("tensors").size(), report.tensors.size());
  EXPECT_EQ(doc.at("files").at(1).at("name"), "rank_00001.bin");
  EXPECT_EQ(doc.at("layout").at("tp"), 2);
}

TEST(CheckpointInspect, NamesEveryDamagedFileAndTensor) {
  TempDir dir;
  const auto saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 2);
  runtime::testing::flip_byte(saved.dir + "/rank_00001.bin", 0);  // the first entry of rank 1
  InspectReport report = inspect_checkpoint(saved.dir);
  EXPECT_FALSE(report.ok());
  std::vector<std::string> problems = report.problems();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("rank_00001.bin: CRC-32C"), std::string::npos) << problems[0];
  ASSERT_EQ(report.files[1].bad_tensors.size(), 1u);
  EXPECT_NE(problems[0].find("damaged tensors: " + report.files[1].bad_tensors[0]), std::string::npos) << problems[0];
  EXPECT_NE(render_inspect_text(report).find("verification FAILED: 1 problem(s)"), std::string::npos);
  // Sizes only: the flipped byte goes unnoticed, as documented for --no-verify.
  EXPECT_TRUE(inspect_checkpoint(saved.dir, /*verify_checksums=*/false).ok());

  runtime::testing::resize(saved.dir + "/rank_00000.bin", 100);
  problems = inspect_checkpoint(saved.dir).problems();
  ASSERT_EQ(problems.size(), 2u);  // both files are reported, not only the first
  EXPECT_NE(problems[0].find("rank_00000.bin: 100 bytes, the manifest records"), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("truncated"), std::string::npos);
}

TEST(CheckpointInspect, RejectsWhatIsNotACheckpoint) {
  TempDir dir;
  EXPECT_THROW(inspect_checkpoint(dir / "missing"), Error);
  try {
    inspect_checkpoint(dir.path());
    FAIL() << "an empty directory was accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(std::string(error.what()).find("holds neither manifest.pb nor step_"), std::string::npos) << error.what();
  }
  const auto saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 1);
  runtime::testing::flip_byte(saved.dir + "/manifest.pb", -3);
  try {
    inspect_checkpoint(saved.dir);
    FAIL() << "a corrupt manifest was accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(std::string(error.what()).find("manifest.pb"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace tandem::launch
