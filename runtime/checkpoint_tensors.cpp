// Tensor I/O for checkpoints: dtype mapping, appending CPU-contiguous copies, and reading boxes
// of entries through at::from_blob views of the mapped shard files (narrow, then clone).
#include "runtime/checkpoint_tensors.h"

#include <ATen/ATen.h>

#include "runtime/crc32c.h"
#include "runtime/error.h"

namespace tandem::runtime {
namespace {

std::vector<int64_t> to_vector(c10::IntArrayRef sizes) { return std::vector<int64_t>(sizes.begin(), sizes.end()); }

// View of `source` (holding box `held`) narrowed to box `wanted` (both in global coordinates).
at::Tensor narrow_to(at::Tensor source, const TensorSlice& held, const TensorSlice& wanted) {
  for (size_t d = 0; d < held.offsets.size(); ++d) {
    source = source.narrow(static_cast<int64_t>(d), wanted.offsets[d] - held.offsets[d], wanted.lengths[d]);
  }
  return source;
}

}  // namespace

StorageDtype storage_dtype_for(c10::ScalarType type) {
  switch (type) {
    case at::kFloat: return StorageDtype::kFloat32;
    case at::kBFloat16: return StorageDtype::kBFloat16;
    case at::kHalf: return StorageDtype::kFloat16;
    case at::kDouble: return StorageDtype::kFloat64;
    case at::kLong: return StorageDtype::kInt64;
    case at::kInt: return StorageDtype::kInt32;
    case at::kShort: return StorageDtype::kInt16;
    case at::kChar: return StorageDtype::kInt8;
    case at::kByte: return StorageDtype::kUInt8;
    case at::kBool: return StorageDtype::kBool;
    default: TANDEM_THROW(kInternal, "checkpoint: tensors of type {} cannot be stored", c10::toString(type));
  }
}

c10::ScalarType scalar_type_for(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kFloat32: return at::kFloat;
    case StorageDtype::kBFloat16: return at::kBFloat16;
    case StorageDtype::kFloat16: return at::kHalf;
    case StorageDtype::kFloat64: return at::kDouble;
    case StorageDtype::kInt64: return at::kLong;
    case StorageDtype::kInt32: return at::kInt;
    case StorageDtype::kInt16: return at::kShort;
    case StorageDtype::kInt8: return at::kChar;
    case StorageDtype::kUInt8: return at::kByte;
    case StorageDtype::kBool: return at::kBool;
  }
  TANDEM_THROW(kInternal, "checkpoint: unknown storage dtype {}", static_cast<int>(dtype));
}

const TensorEntry& append_tensor(ShardWriter& shard, std::string name, TensorKind kind, const at::Tensor& local,
                                 std::vector<int64_t> global_shape, TensorSlice slice) {
  TANDEM_CHECK(to_vector(local.sizes()) == slice.lengths, "checkpoint: tensor '{}' has shape {} but its slice is {}",
               name, fmt::join(local.sizes(), "x"), fmt::join(slice.lengths, "x"));
  const at::Tensor host = local.detach().to(at::kCPU).contiguous();
  const StorageDtype dtype = storage_dtype_for(host.scalar_type());
  return shard.append(std::move(name), kind, dtype, std::move(global_shape), std::move(slice), host.data_ptr(),
                      static_cast<int64_t>(host.nbytes()));
}

const TensorEntry& append_tensor(ShardWriter& shard, std::string name, TensorKind kind, const at::Tensor& whole) {
  std::vector<int64_t> shape = to_vector(whole.sizes());
  TensorSlice slice = TensorSlice::whole(shape);
  return append_tensor(shard, std::move(name), kind, whole, std::move(shape), std::move(slice));
}

CheckpointReader::CheckpointReader(LoadedCheckpoint checkpoint) : checkpoint_(std::move(checkpoint)) {
  for (const RankRecord& record : checkpoint_.manifest.ranks) {
    for (const TensorEntry& entry : record.tensors) index_[{entry.name, entry.kind}].push_back(&entry);
  }
}

const std::vector<const TensorEntry*>& CheckpointReader::entries_of(std::string_view name, TensorKind kind) const {
  static const std::vector<const TensorEntry*> kNone;
  const auto found = index_.find(std::pair<std::string, TensorKind>(name, kind));
  return found == index_.end() ? kNone : found->second;
}

const uint8_t* CheckpointReader::entry_bytes(const TensorEntry& entry) {
  auto found = files_.find(entry.file);
  if (found == files_.end()) {
    found = files_.emplace(entry.file, MappedFile::open(checkpoint_.dir + "/" + entry.file)).first;
  }
  const MappedFile& file = found->second;
  TANDEM_CHECK_INPUT(static_cast<uint64_t>(entry.offset_bytes + entry.length_bytes) <= file.size(),
                     "{}: tensor '{}' ({}) needs bytes [{}, {}) but the file has {}", file.path(), entry.name,
                     tensor_kind_name(entry.kind), entry.offset_bytes, entry.offset_bytes + entry.length_bytes,
                     file.size());
  return file.data() + entry.offset_bytes;
}

at::Tensor CheckpointReader::read(const TensorEntry& entry) {
  const uint8_t* bytes = entry_bytes(entry);
  const uint32_t crc = crc32c(bytes, static_cast<size_t>(entry.length_bytes));
  TANDEM_CHECK_INPUT(crc == entry.crc32c,
                     "{}/{}: tensor '{}' ({}): CRC-32C {:08x} does not match the manifest's {:08x}", checkpoint_.dir,
                     entry.file, entry.name, tensor_kind_name(entry.kind), crc, entry.crc32c);
  return read_slice(entry, entry.slice);
}

at::Tensor CheckpointReader::read_slice(const TensorEntry& entry, const TensorSlice& wanted) {
  TANDEM_CHECK(entry.slice.contains(wanted), "checkpoint: the wanted box is not inside tensor '{}''s entry",
               entry.name);
  const uint8_t* bytes = entry_bytes(entry);
  const auto options = at::TensorOptions().dtype(scalar_type_for(entry.dtype)).device(at::kCPU);
  if (entry.slice.numel() == 0) return at::empty(wanted.lengths, options);
  // A read-only view of the mapping; clone() copies out before the view can be written to.
  const at::Tensor view = at::from_blob(const_cast<uint8_t*>(bytes), entry.slice.lengths, options);
  return narrow_to(view, entry.slice, wanted).clone(at::MemoryFormat::Contiguous);
}

at::Tensor CheckpointReader::read_global(std::string_view name, TensorKind kind, const TensorSlice& wanted) {
  const std::vector<const TensorEntry*>& entries = entries_of(name, kind);
  TANDEM_CHECK_INPUT(!entries.empty(), "{}: the checkpoint holds no tensor '{}' ({})", checkpoint_.dir, name,
                     tensor_kind_name(kind));
  const TensorEntry& first = *entries.front();
  for (const TensorEntry* entry : entries) {
    TANDEM_CHECK_INPUT(entry->global_shape == first.global_shape && entry->dtype == first.dtype,
                       "{}: entries of tensor '{}' ({}) disagree on global shape or dtype", checkpoint_.dir, name,
                       tensor_kind_name(kind));
  }
  TANDEM_CHECK_INPUT(wanted.within(first.global_shape), "{}: the requested box lies outside tensor '{}' of shape {}",
                     checkpoint_.dir, name, fmt::join(first.global_shape, "x"));
  const auto options = at::TensorOptions().dtype(scalar_type_for(first.dtype)).device(at::kCPU);
  at::Tensor result = at::empty(wanted.lengths, options);
  at::Tensor covered = at::zeros(wanted.lengths, at::TensorOptions().dtype(at::kBool));
  for (const TensorEntry* entry : entries) {
    TensorSlice overlap;
    bool empty = false;
    for (size_t d = 0; d < wanted.offsets.size(); ++d) {
      const int64_t begin = std::max(wanted.offsets[d], entry->slice.offsets[d]);
      const int64_t end =
          std::min(wanted.offsets[d] + wanted.lengths[d], entry->slice.offsets[d] + entry->slice.lengths[d]);
      empty = empty || end <= begin;
      overlap.offsets.push_back(begin);
      overlap.lengths.push_back(std::max<int64_t>(0, end - begin));
    }
    if (empty) continue;
    narrow_to(result, wanted, overlap).copy_(read_slice(*entry, overlap));
    narrow_to(covered, wanted, overlap).fill_(true);
  }
  TANDEM_CHECK_INPUT(wanted.numel() == 0 || covered.all().item<bool>(),
                     "{}: the entries of tensor '{}' ({}) do not cover the requested box", checkpoint_.dir, name,
                     tensor_kind_name(kind));
  return result;
}

at::Tensor CheckpointReader::read_global(std::string_view name, TensorKind kind) {
  const std::vector<const TensorEntry*>& entries = entries_of(name, kind);
  TANDEM_CHECK_INPUT(!entries.empty(), "{}: the checkpoint holds no tensor '{}' ({})", checkpoint_.dir, name,
                     tensor_kind_name(kind));
  return read_global(name, kind, TensorSlice::whole(entries.front()->global_shape));
}

std::optional<std::vector<int64_t>> CheckpointReader::global_shape(std::string_view name, TensorKind kind) const {
  const std::vector<const TensorEntry*>& entries = entries_of(name, kind);
  if (entries.empty()) return std::nullopt;
  return entries.front()->global_shape;
}

}  // namespace tandem::runtime
