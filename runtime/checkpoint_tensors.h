// LibTorch side of checkpoints: append at::Tensors to a shard, read entries (or any box of a
// global tensor, assembled from every entry that overlaps it: the resharding primitive) back into
// CPU tensors. Reading maps shard files read-only and copies only the bytes a slice needs.
// Built only with TANDEM_WITH_TORCH; checkpoint_store.h stays torch-free.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/checkpoint_manifest.h"
#include "runtime/checkpoint_store.h"
#include "runtime/file_util.h"

namespace tandem::runtime {

// Throws kInternal for a scalar type checkpoints do not store (complex, quantized, ...).
StorageDtype storage_dtype_for(c10::ScalarType type);
c10::ScalarType scalar_type_for(StorageDtype dtype);

// Appends `local`, the slice `slice` of global tensor `name` of `global_shape`, to the shard.
// `local` may live on any device and be non-contiguous: it is copied to contiguous CPU memory
// first (blocking: waits for the device). Its shape must equal slice.lengths (kInternal).
const TensorEntry& append_tensor(ShardWriter& shard, std::string name, TensorKind kind, const at::Tensor& local,
                                 std::vector<int64_t> global_shape, TensorSlice slice);
// An unsharded tensor: global shape = local shape, slice = whole.
const TensorEntry& append_tensor(ShardWriter& shard, std::string name, TensorKind kind, const at::Tensor& whole);

// Reads tensors of one verified checkpoint. Keeps shard files mapped until destroyed.
// Not thread-safe; returned tensors own their memory (they outlive the reader).
class CheckpointReader {
 public:
  explicit CheckpointReader(LoadedCheckpoint checkpoint);

  const CheckpointManifest& manifest() const { return checkpoint_.manifest; }
  const std::string& dir() const { return checkpoint_.dir; }

  // The whole entry as a CPU tensor of shape entry.slice.lengths; checks the entry's CRC-32C.
  // Throws kInput on a CRC mismatch or a short file (naming the file and tensor).
  at::Tensor read(const TensorEntry& entry);

  // `wanted` (global coordinates) must lie inside entry.slice (kInternal otherwise). Result has
  // shape wanted.lengths. No CRC check (that would read the whole entry).
  at::Tensor read_slice(const TensorEntry& entry, const TensorSlice& wanted);

  // The box `wanted` of global tensor (name, kind), copied from every entry that overlaps it,
  // with dtype `dtype` of the entries. Throws kInput when the tensor is absent, when its entries
  // disagree on global shape or dtype, or when they leave part of `wanted` uncovered.
  at::Tensor read_global(std::string_view name, TensorKind kind, const TensorSlice& wanted);
  // The whole global tensor.
  at::Tensor read_global(std::string_view name, TensorKind kind);
  // The global shape of (name, kind); nullopt when the checkpoint does not hold that tensor.
  std::optional<std::vector<int64_t>> global_shape(std::string_view name, TensorKind kind) const;

 private:
  const uint8_t* entry_bytes(const TensorEntry& entry);
  const std::vector<const TensorEntry*>& entries_of(std::string_view name, TensorKind kind) const;

  LoadedCheckpoint checkpoint_;
  std::map<std::string, MappedFile> files_;
  // Entries of each (name, kind) over all ranks, so reading N tensors is not N scans of the
  // manifest (pointers into checkpoint_.manifest, whose vectors never change after construction).
  std::map<std::pair<std::string, TensorKind>, std::vector<const TensorEntry*>> index_;
};

}  // namespace tandem::runtime
