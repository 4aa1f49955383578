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
  EXPECT_TRUE(at::equal(reader.read_slice(first, TensorSlice{{1, 1}, {1, 4}}), saved.w.narrow(0, 1, 1).narrow(1, 1, 4)));
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
  EXPECT_TRUE(at::equal(reader.read_global("partial", TensorKind::kParam, TensorSlice{{0, 0}, {2, 6}}),
                        at::ones({2, 6})));
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

TEST(CheckpointTensors, DtypeMapping) {
  for (const auto type : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble, at::kLong, at::kInt, at::kShort,
                          at::kChar, at::kByte, at::kBool}) {
    EXPECT_EQ(scalar_type_for(storage_dtype_for(type)), type);
    EXPECT_EQ(storage_dtype_size_bytes(storage_dtype_for(type)), static_cast<int64_t>(c10::elementSize(type)));
  }
  EXPECT_THROW(storage_dtype_for(at::kComplexFloat), Error);
}

}  // namespace
}  // namespace tandem::runtime
