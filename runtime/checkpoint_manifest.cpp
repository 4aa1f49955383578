// Conversions between the manifest structs and checkpoint.proto, with the consistency checks
// that make a decoded manifest safe to index with (every slice inside its global shape, every
// byte length equal to elements * dtype size).
#include "runtime/checkpoint_manifest.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "runtime/crc32c.h"
#include "runtime/error.h"
#include "runtime/proto/checkpoint.pb.h"

namespace tandem::runtime {
namespace {

namespace pb = ::tandem::checkpoint;

constexpr const char* kManifestMagic = "tandem-checkpoint";

void to_proto(const TensorEntry& entry, pb::TensorEntry* out) {
  out->set_name(entry.name);
  out->set_kind(static_cast<pb::TensorKind>(entry.kind));
  out->set_dtype(static_cast<pb::DType>(entry.dtype));
  for (const int64_t dim : entry.global_shape) out->add_global_shape(dim);
  for (const int64_t offset : entry.slice.offsets) out->add_slice_offsets(offset);
  for (const int64_t length : entry.slice.lengths) out->add_slice_lengths(length);
  out->set_file(entry.file);
  out->set_offset_bytes(entry.offset_bytes);
  out->set_length_bytes(entry.length_bytes);
  out->set_crc32c(entry.crc32c);
}

void to_proto(const RankRecord& record, pb::RankRecord* out) {
  out->set_rank(record.rank);
  out->set_rng_state(record.rng_state);
  out->set_data_state(record.data_state);
  out->mutable_shard()->set_name(record.shard.name);
  out->mutable_shard()->set_size_bytes(record.shard.size_bytes);
  out->mutable_shard()->set_crc32c(record.shard.crc32c);
  for (const TensorEntry& entry : record.tensors) to_proto(entry, out->add_tensors());
}

TensorEntry from_proto(const pb::TensorEntry& in, const std::string& where) {
  TensorEntry entry;
  entry.name = in.name();
  TANDEM_CHECK_INPUT(in.kind() >= 1 && in.kind() <= 5, "{}: tensor '{}' has unknown kind {}", where, in.name(),
                     static_cast<int>(in.kind()));
  TANDEM_CHECK_INPUT(in.dtype() >= 1 && in.dtype() <= 10, "{}: tensor '{}' has unknown dtype {}", where, in.name(),
                     static_cast<int>(in.dtype()));
  entry.kind = static_cast<TensorKind>(in.kind());
  entry.dtype = static_cast<StorageDtype>(in.dtype());
  entry.global_shape.assign(in.global_shape().begin(), in.global_shape().end());
  entry.slice.offsets.assign(in.slice_offsets().begin(), in.slice_offsets().end());
  entry.slice.lengths.assign(in.slice_lengths().begin(), in.slice_lengths().end());
  entry.file = in.file();
  entry.offset_bytes = in.offset_bytes();
  entry.length_bytes = in.length_bytes();
  entry.crc32c = in.crc32c();
  TANDEM_CHECK_INPUT(entry.slice.within(entry.global_shape),
                     "{}: tensor '{}' ({}): its slice lies outside the global shape", where, entry.name,
                     tensor_kind_name(entry.kind));
  TANDEM_CHECK_INPUT(entry.offset_bytes >= 0 &&
                         entry.length_bytes == entry.slice.numel() * storage_dtype_size_bytes(entry.dtype),
                     "{}: tensor '{}' ({}): {} bytes at offset {} do not match {} elements of {}", where, entry.name,
                     tensor_kind_name(entry.kind), entry.length_bytes, entry.offset_bytes, entry.slice.numel(),
                     storage_dtype_name(entry.dtype));
  return entry;
}

RankRecord from_proto(const pb::RankRecord& in, const std::string& where) {
  RankRecord record;
  record.rank = in.rank();
  record.rng_state = in.rng_state();
  record.data_state = in.data_state();
  record.shard = FileRecord{in.shard().name(), in.shard().size_bytes(), in.shard().crc32c()};
  for (const pb::TensorEntry& entry : in.tensors()) {
    record.tensors.push_back(from_proto(entry, where));
    TANDEM_CHECK_INPUT(record.tensors.back().file == record.shard.name &&
                           record.tensors.back().offset_bytes + record.tensors.back().length_bytes <=
                               record.shard.size_bytes,
                       "{}: tensor '{}' of rank {} points outside its shard file {}", where, entry.name(), record.rank,
                       record.shard.name);
  }
  return record;
}

}  // namespace

int64_t storage_dtype_size_bytes(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kFloat64:
    case StorageDtype::kInt64: return 8;
    case StorageDtype::kFloat32:
    case StorageDtype::kInt32: return 4;
    case StorageDtype::kBFloat16:
    case StorageDtype::kFloat16:
    case StorageDtype::kInt16: return 2;
    case StorageDtype::kInt8:
    case StorageDtype::kUInt8:
    case StorageDtype::kBool: return 1;
  }
  return 0;
}

std::string_view storage_dtype_name(StorageDtype dtype) {
  switch (dtype) {
    case StorageDtype::kFloat32: return "float32";
    case StorageDtype::kBFloat16: return "bfloat16";
    case StorageDtype::kFloat16: return "float16";
    case StorageDtype::kFloat64: return "float64";
    case StorageDtype::kInt64: return "int64";
    case StorageDtype::kInt32: return "int32";
    case StorageDtype::kInt16: return "int16";
    case StorageDtype::kInt8: return "int8";
    case StorageDtype::kUInt8: return "uint8";
    case StorageDtype::kBool: return "bool";
  }
  return "?";
}

std::string_view tensor_kind_name(TensorKind kind) {
  switch (kind) {
    case TensorKind::kParam: return "param";
    case TensorKind::kExpAvg: return "optimizer.exp_avg";
    case TensorKind::kExpAvgSq: return "optimizer.exp_avg_sq";
    case TensorKind::kMaster: return "master";
    case TensorKind::kBuffer: return "buffer";
  }
  return "?";
}

TensorSlice TensorSlice::whole(const std::vector<int64_t>& shape) {
  return TensorSlice{std::vector<int64_t>(shape.size(), 0), shape};
}

namespace {

// Elements [begin, end) of the sub-tensor spanned by dims >= d, the dims before d fixed at
// `fixed` (length 1 each): a partial leading row, a box of whole rows, a partial trailing row.
void append_flat_range(const std::vector<int64_t>& shape, size_t d, std::vector<int64_t>& fixed, int64_t begin,
                       int64_t end, std::vector<TensorSlice>& out) {
  if (begin >= end) return;
  if (d == shape.size()) {  // a single element (or a scalar tensor)
    out.push_back(TensorSlice{fixed, std::vector<int64_t>(fixed.size(), 1)});
    return;
  }
  int64_t inner = 1;  // elements per index of dim d
  for (size_t k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  const auto descend = [&](int64_t row, int64_t from, int64_t to) {
    fixed.push_back(row);
    append_flat_range(shape, d + 1, fixed, from - row * inner, to - row * inner, out);
    fixed.pop_back();
  };
  const int64_t first_whole = (begin + inner - 1) / inner;  // first row that starts inside the range
  const int64_t end_whole = end / inner;                    // rows before it end inside the range
  if (first_whole > end_whole) {                            // begin and end inside one row
    descend(begin / inner, begin, end);
    return;
  }
  if (begin % inner != 0) descend(begin / inner, begin, first_whole * inner);
  if (end_whole > first_whole) {
    TensorSlice rows{fixed, std::vector<int64_t>(fixed.size(), 1)};
    rows.offsets.push_back(first_whole);
    rows.lengths.push_back(end_whole - first_whole);
    for (size_t k = d + 1; k < shape.size(); ++k) {
      rows.offsets.push_back(0);
      rows.lengths.push_back(shape[k]);
    }
    out.push_back(std::move(rows));
  }
  if (end % inner != 0) descend(end_whole, end_whole * inner, end);
}

}  // namespace

std::vector<TensorSlice> TensorSlice::flat_range(const std::vector<int64_t>& shape, int64_t begin, int64_t end) {
  int64_t numel = 1;
  for (const int64_t dim : shape) numel *= dim;
  TANDEM_CHECK(0 <= begin && begin <= end && end <= numel, "flat range [{}, {}) outside a tensor of {} elements", begin,
               end, numel);
  std::vector<TensorSlice> out;
  std::vector<int64_t> fixed;
  append_flat_range(shape, 0, fixed, begin, end, out);
  return out;
}

bool TensorSlice::overlaps(const TensorSlice& other) const {
  if (other.offsets.size() != offsets.size() || numel() == 0 || other.numel() == 0) return false;
  for (size_t d = 0; d < offsets.size(); ++d) {
    if (other.offsets[d] >= offsets[d] + lengths[d] || offsets[d] >= other.offsets[d] + other.lengths[d]) return false;
  }
  return true;
}

int64_t TensorSlice::numel() const {
  int64_t count = 1;
  for (const int64_t length : lengths) count *= length;
  return count;
}

bool TensorSlice::within(const std::vector<int64_t>& shape) const {
  if (offsets.size() != shape.size() || lengths.size() != shape.size()) return false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (offsets[d] < 0 || lengths[d] < 0 || offsets[d] + lengths[d] > shape[d]) return false;
  }
  return true;
}

bool TensorSlice::contains(const TensorSlice& other) const {
  if (other.offsets.size() != offsets.size() || other.lengths.size() != lengths.size()) return false;
  for (size_t d = 0; d < offsets.size(); ++d) {
    if (other.offsets[d] < offsets[d] || other.offsets[d] + other.lengths[d] > offsets[d] + lengths[d]) return false;
  }
  return true;
}

std::vector<const TensorEntry*> CheckpointManifest::find(std::string_view name, TensorKind kind) const {
  std::vector<const TensorEntry*> found;
  for (const RankRecord& record : ranks) {
    for (const TensorEntry& entry : record.tensors) {
      if (entry.name == name && entry.kind == kind) found.push_back(&entry);
    }
  }
  return found;
}

const RankRecord* CheckpointManifest::rank_record(int rank) const {
  for (const RankRecord& record : ranks) {
    if (record.rank == rank) return &record;
  }
  return nullptr;
}

std::string encode_manifest(const CheckpointManifest& manifest) {
  pb::Manifest body;
  body.set_format_version(manifest.format_version);
  body.set_step(manifest.step);
  body.set_config_yaml(manifest.config_yaml);
  pb::Layout* layout = body.mutable_layout();
  layout->set_world_size(manifest.layout.world_size);
  layout->set_pp(manifest.layout.pp);
  layout->set_dp(manifest.layout.dp);
  layout->set_tp(manifest.layout.tp);
  layout->set_ep(manifest.layout.ep);
  layout->set_zero(manifest.layout.zero);
  layout->set_schedule(manifest.layout.schedule);
  layout->set_order(manifest.layout.order);
  layout->set_virtual_stages(manifest.layout.virtual_stages);
  layout->set_micro_batches(manifest.layout.micro_batches);
  body.set_optimizer_step(manifest.optimizer_step);
  for (const auto& [key, value] : manifest.scalars) (*body.mutable_scalars())[key] = value;
  for (const RankRecord& record : manifest.ranks) to_proto(record, body.add_ranks());
  body.set_created_by(manifest.created_by);
  body.set_wall_time(manifest.wall_time);

  pb::ManifestFile file;
  file.set_magic(kManifestMagic);
  file.set_format_version(manifest.format_version);
  std::string serialized;
  // Deterministic serialisation (map order): identical manifests give identical bytes.
  {
    google::protobuf::io::StringOutputStream stream(&serialized);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    body.SerializeToCodedStream(&coded);
  }
  file.set_body_crc32c(crc32c(serialized));
  file.set_body(std::move(serialized));
  return file.SerializeAsString();
}

CheckpointManifest decode_manifest(std::string_view bytes, const std::string& path) {
  pb::ManifestFile file;
  TANDEM_CHECK_INPUT(file.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) &&
                         file.magic() == kManifestMagic,
                     "{}: not a tandem checkpoint manifest (unparsable or wrong magic)", path);
  TANDEM_CHECK_INPUT(file.format_version() >= 1 && file.format_version() <= kCheckpointFormatVersion,
                     "{}: checkpoint format version {} is not supported by this build (up to {})", path,
                     file.format_version(), kCheckpointFormatVersion);
  TANDEM_CHECK_INPUT(crc32c(file.body()) == file.body_crc32c(),
                     "{}: manifest checksum mismatch (CRC-32C {:08x}, recorded {:08x}): the file is corrupt", path,
                     crc32c(file.body()), file.body_crc32c());
  pb::Manifest body;
  TANDEM_CHECK_INPUT(body.ParseFromString(file.body()), "{}: the manifest body does not parse", path);
  CheckpointManifest manifest;
  manifest.format_version = body.format_version();
  manifest.step = body.step();
  manifest.config_yaml = body.config_yaml();
  const pb::Layout& layout = body.layout();
  manifest.layout = CheckpointLayout{layout.world_size(),   layout.pp(),    layout.dp(),
                                     layout.tp(),           layout.ep(),    layout.zero(),
                                     layout.schedule(),     layout.order(), layout.virtual_stages(),
                                     layout.micro_batches()};
  manifest.optimizer_step = body.optimizer_step();
  for (const auto& [key, value] : body.scalars()) manifest.scalars[key] = value;
  for (const pb::RankRecord& record : body.ranks()) manifest.ranks.push_back(from_proto(record, path));
  manifest.created_by = body.created_by();
  manifest.wall_time = body.wall_time();
  return manifest;
}

std::string encode_rank_record(const RankRecord& record) {
  pb::RankRecord message;
  to_proto(record, &message);
  return message.SerializeAsString();
}

RankRecord decode_rank_record(std::string_view bytes) {
  pb::RankRecord message;
  TANDEM_CHECK_INPUT(message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())),
                     "a gathered checkpoint rank record does not parse ({} bytes)", bytes.size());
  return from_proto(message, "rank record");
}

}  // namespace tandem::runtime
