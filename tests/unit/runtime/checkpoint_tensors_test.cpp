// Checkpoint tensor I/O with LibTorch: entries round-trip bit-exactly for several dtypes and
// non-contiguous inputs, boxes of a global tensor are assembled from the shards that hold them
// (the resharding primitive), and gaps or corrupt entries are reported.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/checkpoint_tensors.h"
#include "runtime/error.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

struct Saved {
  at::Tensor w;       // [4, 6] float32, saved as two row shards (one per rank)
  at::Tensor master;  // [5] bfloat16 on rank 1
  at::Tensor count;   // [] int64 on rank 0
  LoadedCheckpoint checkpoint;
};

Saved save_two_ranks(const TempDir& dir, bool verify = true) {
  Saved saved;
  saved.w = at::arange(24, at::kFloat).reshape({4, 6}) * 0.5;
  saved.master = at::linspace(-1, 1, 5).to(at::kBFloat16);
  saved.count = at::scalar_tensor(123456789012345, at::kLong);
  const CheckpointStore store(dir / "ckpt");
  const std::string staging = store.begin(7, 1);
  CheckpointManifest manifest;
  manifest.step = 7;
  manifest.layout.world_size = 2;
  for (int rank = 0; rank < 2; ++rank) {
    ShardWriter shard(staging, rank);
    // Written from a non-contiguous view (a transpose of the transposed rows).
    const at::Tensor rows = saved.w.narrow(0, 2 * rank, 2).t().contiguous().t();
    EXPECT_FALSE(rows.is_contiguous());
    append_tensor(shard, "w", TensorKind::kParam, rows, {4, 6}, TensorSlice{{2 * rank, 0}, {2, 6}});
    if (rank == 0) append_tensor(shard, "steps", TensorKind::kBuffer, saved.count);
    if (rank == 1) append_tensor(shard, "m", TensorKind::kMaster, saved.master);
    if (rank == 0) {  // a tensor whose second half nobody saved
      append_tensor(shard, "partial", TensorKind::kParam, at::ones({2, 6}), {4, 6}, TensorSlice{{0, 0}, {2, 6}});
    }
    manifest.ranks.push_back(shard.finish("", ""));
  }
  store.commit(staging, manifest, 3);
  auto found = store.find_latest_valid(verify);
  EXPECT_TRUE(found.has_value());
  saved.checkpoint = *found;
  return saved;
}

TEST(CheckpointTensors, EntriesRoundTripBitExactly) {
  TempDir dir;
  const Saved saved = save_two_ranks(dir);
  CheckpointReader reader(saved.checkpoint);
  const at::Tensor rows = reader.read(*reader.manifest().find("w", TensorKind::kParam)[1]);
  EXPECT_TRUE(at::equal(rows, saved.w.narrow(0, 2, 2)));
  const at::Tensor master = reader.read_global("m", TensorKind::kMaster);
  EXPECT_EQ(master.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(master, saved.master));
  const at::Tensor count = reader.read_global("steps", TensorKind::kBuffer);
  EXPECT_EQ(count.dim(), 0);
  EXPECT_EQ(count.item<int64_t>(), 123456789012345);
}

TEST(CheckpointTensors, AssemblesAnyBoxFromTheShardsThatHoldIt) {
  TempDir dir;
  const Saved saved = save_two_ranks(dir);
  CheckpointReader reader(saved.checkpoint);
  EXPECT_TRUE(at::equal(reader.read_global("w", TensorKind::kParam), saved.w));
  // Rows 1-2 straddle both shards; columns 2-4.
  const at::Tensor box = reader.read_global("w", TensorKind::kParam, TensorSlice{{1, 2}, {2, 3}});
  EXPECT_TRUE(at::equal(box, saved.w.narrow(0, 1, 2).narrow(1, 2, 3)));
  // Resharding 2 row shards into 3 column shards (a tp=3 layout) gives the same tensor back.
  std::vector<at::Tensor> columns;
  for (int64_t part = 0; part < 3; ++part) {
    columns.push_back(reader.read_global("w", TensorKind::kParam, TensorSlice{{0, 2 * part}, {4, 2}}));
  }
  EXPECT_TRUE(at::equal(at::cat(columns, 1), saved.w));
  // A sub-box of a single entry.
  const TensorEntry& first = *reader.manifest().find("w", TensorKind::kParam)[0];
  EXPECT_TRUE(
      at::equal(reader.read_slice(first, TensorSlice{{1, 1}, {1, 4}}), saved.w.narrow(0, 1, 1).narrow(1, 1, 4)));
}

TEST(CheckpointTensors, ReportsGapsAbsentTensorsAndCorruptEntries) {
  TempDir dir;
  const Saved saved = save_two_ranks(dir);
  CheckpointReader reader(saved.checkpoint);
  try {
    reader.read_global("partial", TensorKind::kParam);
    FAIL() << "a half-saved tensor was assembled";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kInput);
    EXPECT_NE(error.message().find("do not cover"), std::string::npos) << error.message();
  }
  EXPECT_TRUE(
      at::equal(reader.read_global("partial", TensorKind::kParam, TensorSlice{{0, 0}, {2, 6}}), at::ones({2, 6})));
  EXPECT_THROW(reader.read_global("absent", TensorKind::kParam), Error);
  EXPECT_THROW(reader.read_global("w", TensorKind::kExpAvg), Error);

  const TensorEntry entry = *reader.manifest().find("w", TensorKind::kParam)[0];
  testing::flip_byte(saved.checkpoint.dir + "/" + entry.file, entry.offset_bytes + 5);
  CheckpointReader unverified(load_checkpoint(saved.checkpoint.dir, /*verify_checksums=*/false));
  try {
    unverified.read(entry);
    FAIL() << "a corrupt entry was read";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("tensor 'w' (param): CRC-32C"), std::string::npos) << error.message();
  }
}

at::Tensor box_of(at::Tensor whole, const TensorSlice& box) {
  for (size_t d = 0; d < box.offsets.size(); ++d) {
    whole = whole.narrow(static_cast<int64_t>(d), box.offsets[d], box.lengths[d]);
  }
  return whole;
}

TEST(CheckpointTensors, FlatRangesAreTiledByAtMostTwoRankMinusOneBoxes) {
  const std::vector<int64_t> shape = {3, 4, 5};
  const at::Tensor t = at::arange(60, at::kFloat).reshape({3, 4, 5});
  for (int64_t begin = 0; begin <= 60; ++begin) {
    for (int64_t end = begin; end <= 60; ++end) {
      const std::vector<TensorSlice> boxes = TensorSlice::flat_range(shape, begin, end);
      EXPECT_LE(boxes.size(), 5u);
      std::vector<at::Tensor> parts = {at::empty({0}, at::kFloat)};
      for (const TensorSlice& box : boxes) {
        ASSERT_TRUE(box.within(shape));
        parts.push_back(box_of(t, box).reshape({-1}));
      }
      ASSERT_TRUE(at::equal(at::cat(parts), t.reshape({-1}).narrow(0, begin, end - begin))) << begin << ".." << end;
    }
  }
  EXPECT_EQ(TensorSlice::flat_range(shape, 20, 40), (std::vector<TensorSlice>{{{1, 0, 0}, {1, 4, 5}}}));
  EXPECT_EQ(TensorSlice::flat_range({}, 0, 1), (std::vector<TensorSlice>{TensorSlice{}}));
  EXPECT_THROW(TensorSlice::flat_range(shape, 5, 61), Error);
}

// ZeRO-style saving: three ranks each write an uneven contiguous share of a [6, 7] tensor's flat
// range, as several boxes; any box (here: column shards) is read back whole.
TEST(CheckpointTensors, TensorsSavedAsFlatRangesInManyBoxesReassemble) {
  TempDir dir;
  const at::Tensor w = at::randn({6, 7});
  const CheckpointStore store(dir / "ckpt");
  const std::string staging = store.begin(1, 1);
  CheckpointManifest manifest;
  manifest.step = 1;
  manifest.layout.world_size = 3;
  const int64_t cuts[] = {0, 10, 30, 42};
  for (int rank = 0; rank < 3; ++rank) {
    ShardWriter shard(staging, rank);
    for (const TensorSlice& box : TensorSlice::flat_range({6, 7}, cuts[rank], cuts[rank + 1])) {
      append_tensor(shard, "w", TensorKind::kExpAvg, box_of(w, box), {6, 7}, box);
    }
    if (rank == 1) {  // a box overlapping one already appended is a bug
      EXPECT_THROW(
          append_tensor(shard, "w", TensorKind::kExpAvg, w.narrow(0, 3, 1), {6, 7}, TensorSlice{{3, 0}, {1, 7}}),
          Error);
    }
    manifest.ranks.push_back(shard.finish("", ""));
  }
  store.commit(staging, manifest, 1);
  CheckpointReader reader(*store.find_latest_valid());
  EXPECT_TRUE(at::equal(reader.read_global("w", TensorKind::kExpAvg), w));
  EXPECT_TRUE(at::equal(reader.read_global("w", TensorKind::kExpAvg, TensorSlice{{0, 3}, {6, 2}}), w.narrow(1, 3, 2)));
}

TEST(CheckpointTensors, DtypeMapping) {
  for (const auto type : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble, at::kLong, at::kInt, at::kShort, at::kChar,
                          at::kByte, at::kBool}) {
    EXPECT_EQ(scalar_type_for(storage_dtype_for(type)), type);
    EXPECT_EQ(storage_dtype_size_bytes(storage_dtype_for(type)), static_cast<int64_t>(c10::elementSize(type)));
  }
  EXPECT_THROW(storage_dtype_for(at::kComplexFloat), Error);
}

}  // namespace
}  // namespace tandem::runtime
