// Checkpoint storage without LibTorch: write/verify/load round trip, a writer killed mid-write,
// corruption and truncation detection with fallback, keep-last-K pruning, a missing or bad
// `latest` pointer, and the rank-record encoding used for the gather.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "runtime/checkpoint_store.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

constexpr int64_t kToken = 4242;  // stands for rank 0's pid

std::vector<float> values(int64_t count, float base) {
  std::vector<float> v(static_cast<size_t>(count));
  std::iota(v.begin(), v.end(), base);
  return v;
}

// A 2-rank checkpoint: "w" [4, 6] split by rows over the ranks (param and exp_avg), "b" [6]
// on rank 0 only; `step` is encoded in the values so checkpoints differ.
CheckpointManifest write_checkpoint(const CheckpointStore& store, int64_t step, int64_t keep_last = 5) {
  const std::string dir = store.begin(step, kToken);
  CheckpointManifest manifest;
  manifest.step = step;
  manifest.config_yaml = "run:\n  seed: 7\n";
  manifest.layout = CheckpointLayout{.world_size = 2, .dp = 2, .schedule = "1f1b", .order = "tp-dp-pp"};
  manifest.optimizer_step = step;
  manifest.scalars["consumed_tokens"] = 1024.0 * step;
  manifest.created_by = "tandem test";
  for (int rank = 0; rank < 2; ++rank) {
    ShardWriter shard(dir, rank);
    const TensorSlice rows{{2 * rank, 0}, {2, 6}};
    const std::vector<float> w = values(12, 1000.0f * step + 100.0f * rank);
    shard.append("w", TensorKind::kParam, StorageDtype::kFloat32, {4, 6}, rows, w.data(), 48);
    const std::vector<float> m = values(12, -1.0f * step);
    shard.append("w", TensorKind::kExpAvg, StorageDtype::kFloat32, {4, 6}, rows, m.data(), 48);
    if (rank == 0) {
      const std::vector<float> b = values(6, 0.5f);
      shard.append("b", TensorKind::kParam, StorageDtype::kFloat32, {6}, TensorSlice::whole({6}), b.data(), 24);
    }
    manifest.ranks.push_back(shard.finish("rng-of-rank-" + std::to_string(rank), "gpt_sampler v1 ..."));
  }
  store.commit(dir, manifest, keep_last);
  return manifest;
}

TEST(CheckpointStore, WriteVerifyLoadRoundTrip) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  const CheckpointManifest written = write_checkpoint(store, 20);
  const std::string step_dir = dir / "ckpt/step_00000020";
  EXPECT_TRUE(is_regular_file(step_dir + "/manifest.pb"));
  EXPECT_TRUE(is_regular_file(step_dir + "/rank_00000.bin"));
  EXPECT_TRUE(is_regular_file(step_dir + "/rank_00001.bin"));
  EXPECT_EQ(testing::slurp(dir / "ckpt/latest"), "step_00000020\n");
  EXPECT_EQ(store.list_steps(), std::vector<int64_t>{20});

  const std::optional<LoadedCheckpoint> loaded = store.find_latest_valid();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 20);
  EXPECT_EQ(loaded->dir, step_dir);
  EXPECT_EQ(loaded->manifest, written);
  EXPECT_EQ(loaded->manifest.rank_record(1)->rng_state, "rng-of-rank-1");

  // Entries: 64-byte aligned, and the bytes at their offsets are the data written.
  const std::vector<const TensorEntry*> w = loaded->manifest.find("w", TensorKind::kParam);
  ASSERT_EQ(w.size(), 2u);
  const std::string shard1 = testing::slurp(step_dir + "/rank_00001.bin");
  for (const TensorEntry& entry : loaded->manifest.rank_record(1)->tensors) EXPECT_EQ(entry.offset_bytes % 64, 0);
  const TensorEntry& rows = *w[1];
  EXPECT_EQ(rows.slice, (TensorSlice{{2, 0}, {2, 6}}));
  std::vector<float> read(12);
  std::memcpy(read.data(), shard1.data() + rows.offset_bytes, 48);
  EXPECT_EQ(read, values(12, 20100.0f));
  EXPECT_EQ(tensor_kind_name(loaded->manifest.find("w", TensorKind::kExpAvg)[0]->kind), "optimizer.exp_avg");
}

TEST(CheckpointStore, NoCheckpointIsNotAnError) {
  TempDir dir;
  EXPECT_FALSE(CheckpointStore(dir / "never-created").find_latest_valid().has_value());
  EXPECT_FALSE(CheckpointStore(dir.path()).find_latest_valid().has_value());
}

TEST(CheckpointStore, WriterKilledMidWriteLeavesThePreviousCheckpoint) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  write_checkpoint(store, 10);
  // A writer of step 20 dies: a staging dir with a truncated shard and no manifest remains.
  const std::string staging = store.begin(20, kToken);
  {
    ShardWriter shard(staging, 0);
    const std::vector<float> w = values(12, 0);
    shard.append("w", TensorKind::kParam, StorageDtype::kFloat32, {12}, TensorSlice::whole({12}), w.data(), 48);
  }
  testing::resize(staging + "/rank_00000.bin", 10);
  const std::optional<LoadedCheckpoint> loaded = store.find_latest_valid();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 10);
  EXPECT_TRUE(path_exists(staging)) << "readers leave the staging dir alone";
  write_checkpoint(store, 30);  // the next writer cleans it up
  EXPECT_FALSE(path_exists(staging));
  EXPECT_EQ(store.find_latest_valid()->step, 30);
}

TEST(CheckpointStore, CorruptByteIsDetectedAndThePreviousOneUsed) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  write_checkpoint(store, 10);
  write_checkpoint(store, 20);
  testing::flip_byte(dir / "ckpt/step_00000020/rank_00001.bin", 70);
  const VerifyResult result = verify_checkpoint(dir / "ckpt/step_00000020");
  EXPECT_FALSE(result.manifest.has_value());
  EXPECT_NE(result.problem.find("rank_00001.bin: CRC-32C"), std::string::npos) << result.problem;
  EXPECT_NE(result.problem.find("corrupt"), std::string::npos) << result.problem;
  EXPECT_TRUE(verify_checkpoint(dir / "ckpt/step_00000020", /*verify_checksums=*/false).manifest.has_value())
      << "sizes alone cannot see a flipped byte";
  const std::optional<LoadedCheckpoint> loaded = store.find_latest_valid();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 10);
}

TEST(CheckpointStore, TruncatedShardAndCorruptManifestAreDetected) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  write_checkpoint(store, 10);
  write_checkpoint(store, 20);
  write_checkpoint(store, 30);
  const std::string shard = dir / "ckpt/step_00000030/rank_00000.bin";
  const int64_t size = *file_size(shard);
  testing::resize(shard, size - 1);
  const std::string problem = verify_checkpoint(dir / "ckpt/step_00000030").problem;
  EXPECT_NE(problem.find("rank_00000.bin: " + std::to_string(size - 1) + " bytes, the manifest records " +
                         std::to_string(size) + " (truncated)"),
            std::string::npos)
      << problem;
  testing::flip_byte(dir / "ckpt/step_00000020/manifest.pb", 60);
  EXPECT_NE(verify_checkpoint(dir / "ckpt/step_00000020").problem.find("manifest.pb"), std::string::npos);
  EXPECT_EQ(store.find_latest_valid()->step, 10) << "30 truncated, 20's manifest corrupt";
  EXPECT_THROW(load_checkpoint(dir / "ckpt/step_00000030"), Error);
  try {
    load_checkpoint(dir / "ckpt/step_00000030");
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(error.message().find("checkpoint.resume: "), std::string::npos) << error.message();
  }
  EXPECT_EQ(load_checkpoint(dir / "ckpt/step_00000010").step, 10);
}

TEST(CheckpointStore, KeepsTheLastKCheckpoints) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  for (int64_t step : {10, 20, 30, 40}) write_checkpoint(store, step, /*keep_last=*/2);
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{30, 40}));
  write_checkpoint(store, 50, /*keep_last=*/1);
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{50}));
}

TEST(CheckpointStore, MissingOrBadLatestFallsBackToTheHighestValidStep) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  write_checkpoint(store, 10);
  write_checkpoint(store, 20);
  ::unlink((dir / "ckpt/latest").c_str());
  EXPECT_EQ(store.find_latest_valid()->step, 20);
  testing::spit(dir / "ckpt/latest", "garbage\n");
  EXPECT_EQ(store.find_latest_valid()->step, 20);
  testing::spit(dir / "ckpt/latest", "step_00000099\n");
  EXPECT_EQ(store.find_latest_valid()->step, 20);
  testing::spit(dir / "ckpt/latest", "step_00000010\n");  // a commit of 20 that died before `latest`
  EXPECT_EQ(store.find_latest_valid()->step, 10);
}

TEST(CheckpointStore, CommitRemovesLaterStepsOfAnAbandonedRunAndReplacesTheSameStep) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  for (int64_t step : {10, 20, 30}) write_checkpoint(store, step);
  write_checkpoint(store, 25);  // resumed from 20, then saved at 25: 30 belongs to the old run
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{10, 20, 25}));
  write_checkpoint(store, 25);
  EXPECT_EQ(store.list_steps(), (std::vector<int64_t>{10, 20, 25}));
  EXPECT_EQ(store.find_latest_valid()->step, 25);
  for (const std::string& name : list_directory(dir / "ckpt")) {
    EXPECT_NE(name[0], '.') << "left behind: " << name;
  }
}

TEST(CheckpointStore, NamesAndRankRecordEncoding) {
  EXPECT_EQ(checkpoint_dir_name(20), "step_00000020");
  EXPECT_EQ(parse_checkpoint_dir_name("step_00000020"), 20);
  EXPECT_FALSE(parse_checkpoint_dir_name("step_").has_value());
  EXPECT_FALSE(parse_checkpoint_dir_name("step_12x").has_value());
  EXPECT_FALSE(parse_checkpoint_dir_name(".tmp-step_00000020-5").has_value());
  EXPECT_EQ(shard_file_name(3), "rank_00003.bin");

  RankRecord record;
  record.rank = 3;
  record.rng_state = std::string("\0\1\2", 3);
  record.data_state = "gpt_sampler v1 epoch=0 position=8 samples_per_epoch=100 seed=1";
  record.shard = FileRecord{"rank_00003.bin", 128, 0xdeadbeef};
  record.tensors.push_back(TensorEntry{"x",
                                       TensorKind::kMaster,
                                       StorageDtype::kBFloat16,
                                       {8, 4},
                                       TensorSlice{{4, 0}, {4, 4}},
                                       "rank_00003.bin",
                                       64,
                                       32,
                                       7});
  EXPECT_EQ(decode_rank_record(encode_rank_record(record)), record);
  EXPECT_THROW(decode_rank_record("\xff\xff\xff"), Error);
  record.tensors[0].length_bytes = 31;  // not 16 bf16 elements
  EXPECT_THROW(decode_rank_record(encode_rank_record(record)), Error);
}

TEST(CheckpointStore, ManifestMustListEveryRankOfTheLayout) {
  TempDir dir;
  const CheckpointStore store(dir / "ckpt");
  CheckpointManifest manifest = write_checkpoint(store, 10);
  manifest.layout.world_size = 4;
  testing::spit(dir / "ckpt/step_00000010/manifest.pb", encode_manifest(manifest));
  EXPECT_NE(verify_checkpoint(dir / "ckpt/step_00000010").problem.find("holds 2 rank records for a world of 4"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem::runtime
