// The checkpoint manifest as plain C++ data, and its encoding (runtime/proto/checkpoint.proto).
// A checkpoint directory holds one shard file per rank (raw little-endian tensor bytes, entries
// back to back) and manifest.pb. Each tensor entry names a global tensor (name, kind, global
// shape) and the slice of it the entry holds (per-dim offset and length), so the same manifest
// serves exact resume under the same layout and resharding into another one. Protobuf types stay
// out of this header: callers fill structs; only checkpoint_manifest.cpp sees the messages.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::runtime {

inline constexpr uint32_t kCheckpointFormatVersion = 1;

// Element types of stored tensors (numbering shared with checkpoint.proto).
enum class StorageDtype : int {
  kFloat32 = 1,
  kBFloat16 = 2,
  kFloat16 = 3,
  kFloat64 = 4,
  kInt64 = 5,
  kInt32 = 6,
  kInt16 = 7,
  kInt8 = 8,
  kUInt8 = 9,
  kBool = 10,
};
int64_t storage_dtype_size_bytes(StorageDtype dtype);
std::string_view storage_dtype_name(StorageDtype dtype);  // "float32", "bfloat16", ...

enum class TensorKind : int {
  kParam = 1,
  kExpAvg = 2,    // "optimizer.exp_avg"
  kExpAvgSq = 3,  // "optimizer.exp_avg_sq"
  kMaster = 4,    // fp32 master weights
  kBuffer = 5,
};
std::string_view tensor_kind_name(TensorKind kind);  // "param", "optimizer.exp_avg", ...

// A box in a tensor's global index space: dims [offsets[d], offsets[d] + lengths[d]).
struct TensorSlice {
  std::vector<int64_t> offsets;
  std::vector<int64_t> lengths;

  static TensorSlice whole(const std::vector<int64_t>& shape);
  // The boxes whose row-major contents, concatenated in order, are elements [begin, end) of a
  // row-major tensor of `shape`: how a contiguous range of a flat buffer (a ZeRO shard, one
  // writer's share of a replicated tensor) is stored under the tensor's own name and shape.
  // At most 2 * rank - 1 boxes (one for a whole-rows range); none when begin == end.
  static std::vector<TensorSlice> flat_range(const std::vector<int64_t>& shape, int64_t begin, int64_t end);
  int64_t numel() const;
  bool within(const std::vector<int64_t>& shape) const;  // same rank, inside the shape
  bool contains(const TensorSlice& other) const;
  bool overlaps(const TensorSlice& other) const;  // share at least one element
  bool operator==(const TensorSlice&) const = default;
};

struct TensorEntry {
  std::string name;
  TensorKind kind = TensorKind::kParam;
  StorageDtype dtype = StorageDtype::kFloat32;
  std::vector<int64_t> global_shape;
  TensorSlice slice;  // the part of the global tensor stored here, row-major
  std::string file;   // "rank_00003.bin"
  int64_t offset_bytes = 0;
  int64_t length_bytes = 0;
  uint32_t crc32c = 0;
  bool operator==(const TensorEntry&) const = default;
};

struct FileRecord {
  std::string name;
  int64_t size_bytes = 0;
  uint32_t crc32c = 0;
  bool operator==(const FileRecord&) const = default;
};

// What one rank contributes: its shard file, its tensors and its opaque states.
struct RankRecord {
  int rank = 0;
  std::string rng_state;   // bytes
  std::string data_state;  // bytes, e.g. SamplerState::serialize()
  FileRecord shard;
  std::vector<TensorEntry> tensors;
  bool operator==(const RankRecord&) const = default;
};

struct CheckpointLayout {
  int64_t world_size = 1;
  int64_t pp = 1, dp = 1, tp = 1, ep = 1, zero = 0;
  std::string schedule;
  std::string order;
  int64_t virtual_stages = 1;
  int64_t micro_batches = 1;
  bool operator==(const CheckpointLayout&) const = default;
};

struct CheckpointManifest {
  uint32_t format_version = kCheckpointFormatVersion;
  int64_t step = 0;
  std::string config_yaml;
  CheckpointLayout layout;
  int64_t optimizer_step = 0;
  std::map<std::string, double> scalars;
  std::vector<RankRecord> ranks;  // by rank
  std::string created_by;
  double wall_time = 0;
  bool operator==(const CheckpointManifest&) const = default;

  // Entries of (name, kind) over all ranks; several when the tensor is sharded (or replicated).
  std::vector<const TensorEntry*> find(std::string_view name, TensorKind kind) const;
  const RankRecord* rank_record(int rank) const;  // nullptr if absent
};

// manifest.pb bytes (a ManifestFile wrapping the Manifest and its CRC-32C). Never throws.
std::string encode_manifest(const CheckpointManifest& manifest);
// Throws kInput naming `path` when the bytes are not a manifest, the CRC does not match, the
// format version is unknown, or an entry is inconsistent (slice outside the global shape, byte
// length != elements * dtype size).
CheckpointManifest decode_manifest(std::string_view bytes, const std::string& path);

// One rank's record as bytes, for gathering records on rank 0 (MPI_Gatherv of bytes). Throws
// kInput on bytes that encode_rank_record did not produce.
std::string encode_rank_record(const RankRecord& record);
RankRecord decode_rank_record(std::string_view bytes);

}  // namespace tandem::runtime
