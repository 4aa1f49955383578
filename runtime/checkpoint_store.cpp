// Checkpoint directories: shard writing with on-the-fly CRC, verification, atomic commit with the
// `latest` pointer, and pruning. All durability steps are explicit fsyncs (file_util.h).
#include "runtime/checkpoint_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>

#include "runtime/crc32c.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/log.h"

namespace tandem::runtime {
namespace {

constexpr const char* kManifestName = "manifest.pb";
constexpr const char* kLatestName = "latest";
constexpr const char* kStagingPrefix = ".tmp-";
constexpr const char* kTrashPrefix = ".trash-";
constexpr int64_t kEntryAlignment = 64;
constexpr size_t kChecksumChunk = size_t{1} << 22;

// CRC-32C and size of a file, read in chunks; nullopt (with the reason) when unreadable.
std::optional<std::pair<int64_t, uint32_t>> checksum_file(const std::string& path, std::string& problem) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    problem = std::strerror(errno);
    return std::nullopt;
  }
  std::vector<char> buffer(kChecksumChunk);
  int64_t size = 0;
  uint32_t crc = 0;
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      problem = std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (got == 0) break;
    crc = crc32c_extend(crc, buffer.data(), static_cast<size_t>(got));
    size += got;
  }
  ::close(fd);
  return std::make_pair(size, crc);
}

void remove_tree_or_warn(const std::string& path) {
  const std::string problem = remove_tree(path);
  if (!problem.empty()) TANDEM_LOG_WARN("checkpoint", "could not remove {}", problem);
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

}  // namespace

std::string checkpoint_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::optional<int64_t> parse_checkpoint_dir_name(std::string_view name) {
  if (!starts_with(name, "step_") || name.size() < 6) return std::nullopt;
  int64_t step = -1;
  const char* begin = name.data() + 5;
  const auto [end, error] = std::from_chars(begin, name.data() + name.size(), step);
  if (error != std::errc() || end != name.data() + name.size() || step < 0) return std::nullopt;
  return step;
}

std::string shard_file_name(int rank) { return fmt::format("rank_{:05d}.bin", rank); }

// --- ShardWriter -------------------------------------------------------------------------------

ShardWriter::ShardWriter(std::string dir, int rank) : file_name_(shard_file_name(rank)), rank_(rank) {
  path_ = dir + "/" + file_name_;
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TANDEM_CHECK_KIND(kIo, fd_ >= 0, "{}: cannot create the checkpoint shard: {}", path_, std::strerror(errno));
}

ShardWriter::~ShardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void ShardWriter::write_bytes(const void* data, int64_t size) {
  write_all(fd_, data, static_cast<size_t>(size), path_);
  crc_ = crc32c_extend(crc_, data, static_cast<size_t>(size));
  size_ += size;
}

const TensorEntry& ShardWriter::append(std::string name, TensorKind kind, StorageDtype dtype,
                                       std::vector<int64_t> global_shape, TensorSlice slice, const void* data,
                                       int64_t size_bytes) {
  TANDEM_CHECK(fd_ >= 0, "{}: append after finish()", path_);
  TANDEM_CHECK(slice.within(global_shape), "checkpoint: tensor '{}': slice outside its global shape", name);
  std::vector<TensorSlice>& boxes = boxes_[{name, kind}];
  for (const TensorSlice& box : boxes) {
    TANDEM_CHECK(!box.overlaps(slice) && !(box.numel() == 0 && box == slice),
                 "checkpoint: tensor '{}' ({}): rank {} appended an overlapping box twice", name,
                 tensor_kind_name(kind), rank_);
  }
  boxes.push_back(slice);
  TANDEM_CHECK(size_bytes == slice.numel() * storage_dtype_size_bytes(dtype),
               "checkpoint: tensor '{}': {} bytes for {} elements of {}", name, size_bytes, slice.numel(),
               storage_dtype_name(dtype));
  static constexpr char kZeros[kEntryAlignment] = {};
  if (size_ % kEntryAlignment != 0) write_bytes(kZeros, kEntryAlignment - size_ % kEntryAlignment);
  TensorEntry entry;
  entry.name = std::move(name);
  entry.kind = kind;
  entry.dtype = dtype;
  entry.global_shape = std::move(global_shape);
  entry.slice = std::move(slice);
  entry.file = file_name_;
  entry.offset_bytes = size_;
  entry.length_bytes = size_bytes;
  entry.crc32c = crc32c(data, static_cast<size_t>(size_bytes));
  write_bytes(data, size_bytes);
  entries_.push_back(std::move(entry));
  return entries_.back();
}

RankRecord ShardWriter::finish(std::string rng_state, std::string data_state) {
  TANDEM_CHECK(fd_ >= 0, "{}: finish() called twice", path_);
  fsync_fd(fd_, path_);
  const int fd = std::exchange(fd_, -1);
  TANDEM_CHECK_KIND(kIo, ::close(fd) == 0, "{}: close failed: {}", path_, std::strerror(errno));
  RankRecord record;
  record.rank = rank_;
  record.rng_state = std::move(rng_state);
  record.data_state = std::move(data_state);
  record.shard = FileRecord{file_name_, size_, crc_};
  record.tensors = entries_;
  return record;
}

// --- verification ------------------------------------------------------------------------------

VerifyResult verify_checkpoint(const std::string& dir, bool verify_checksums) {
  VerifyResult result;
  const std::string manifest_path = dir + "/" + kManifestName;
  if (!is_regular_file(manifest_path)) {
    result.problem = fmt::format("{}: missing", manifest_path);
    return result;
  }
  CheckpointManifest manifest;
  try {
    manifest = decode_manifest(read_file(manifest_path), manifest_path);
  } catch (const Error& failure) {
    result.problem = failure.message();
    return result;
  }
  const std::optional<int64_t> named_step = parse_checkpoint_dir_name(base_name(dir));
  if (named_step.has_value() && *named_step != manifest.step) {
    result.problem = fmt::format("{}: records step {} but the directory is named for step {}", manifest_path,
                                 manifest.step, *named_step);
    return result;
  }
  if (static_cast<int64_t>(manifest.ranks.size()) != manifest.layout.world_size) {
    result.problem = fmt::format("{}: holds {} rank records for a world of {} ranks", manifest_path,
                                 manifest.ranks.size(), manifest.layout.world_size);
    return result;
  }
  for (const RankRecord& record : manifest.ranks) {
    const std::string path = dir + "/" + record.shard.name;
    const std::optional<int64_t> size = file_size(path);
    if (!size.has_value()) {
      result.problem = fmt::format("{}: missing or unreadable", path);
      return result;
    }
    if (*size != record.shard.size_bytes) {
      result.problem = fmt::format("{}: {} bytes, the manifest records {} ({})", path, *size, record.shard.size_bytes,
                                   *size < record.shard.size_bytes ? "truncated" : "grown");
      return result;
    }
    if (verify_checksums) {
      std::string reason;
      const auto computed = checksum_file(path, reason);
      if (!computed.has_value()) {
        result.problem = fmt::format("{}: unreadable: {}", path, reason);
        return result;
      }
      if (computed->second != record.shard.crc32c) {
        result.problem = fmt::format("{}: CRC-32C {:08x} does not match the manifest's {:08x} (corrupt data)", path,
                                     computed->second, record.shard.crc32c);
        return result;
      }
    }
  }
  result.manifest = std::move(manifest);
  return result;
}

LoadedCheckpoint load_checkpoint(const std::string& dir, bool verify_checksums) {
  VerifyResult result = verify_checkpoint(dir, verify_checksums);
  TANDEM_CHECK_INPUT(result.manifest.has_value(), "checkpoint.resume: {} is not a valid checkpoint: {}", dir,
                     result.problem);
  const int64_t step = result.manifest->step;
  return LoadedCheckpoint{dir, step, std::move(*result.manifest)};
}

// --- CheckpointStore ---------------------------------------------------------------------------

CheckpointStore::CheckpointStore(std::string root) : root_(std::move(root)) {}

std::string CheckpointStore::staging_dir(int64_t step, int64_t token) const {
  return fmt::format("{}/{}{}-{}", root_, kStagingPrefix, checkpoint_dir_name(step), token);
}

std::string CheckpointStore::begin(int64_t step, int64_t token) const {
  make_directories(root_);
  remove_staging_dirs();
  const std::string dir = staging_dir(step, token);
  make_directories(dir);
  return dir;
}

std::string CheckpointStore::commit(const std::string& staging, const CheckpointManifest& manifest,
                                    int64_t keep_last) const {
  TANDEM_CHECK(keep_last >= 1, "checkpoint.keep_last must be at least 1, got {}", keep_last);
  TANDEM_CHECK(base_name(staging).find(checkpoint_dir_name(manifest.step)) != std::string::npos,
               "{}: staging directory does not belong to step {}", staging, manifest.step);
  for (const RankRecord& record : manifest.ranks) {
    const std::string path = staging + "/" + record.shard.name;
    const std::optional<int64_t> size = file_size(path);
    TANDEM_CHECK(size == record.shard.size_bytes,
                 "checkpoint commit: rank {}'s shard {} is {} (the record says {} bytes)", record.rank, path,
                 size ? fmt::format("{} bytes", *size) : std::string("missing"), record.shard.size_bytes);
  }
  write_file_durable(staging + "/" + kManifestName, encode_manifest(manifest));
  fsync_directory(staging);

  const std::string name = checkpoint_dir_name(manifest.step);
  const std::string final_dir = root_ + "/" + name;
  std::string trash;
  if (path_exists(final_dir)) {  // the same step saved again: move the old one aside first
    trash = fmt::format("{}/{}{}-{}", root_, kTrashPrefix, name, ::getpid());
    rename_path(final_dir, trash);
  }
  rename_path(staging, final_dir);
  fsync_directory(root_);
  write_file_atomic(root_ + "/" + kLatestName, name + "\n");

  // The new checkpoint is complete and `latest` names it: now older state may go.
  if (!trash.empty()) remove_tree_or_warn(trash);
  std::vector<int64_t> kept;
  for (const int64_t step : list_steps()) {
    if (step > manifest.step) {
      TANDEM_LOG_WARN("checkpoint",
                      "removing {}: it is newer than the checkpoint just written (left from a run that was resumed "
                      "from an earlier step)",
                      checkpoint_dir_name(step));
      remove_tree_or_warn(root_ + "/" + checkpoint_dir_name(step));
    } else {
      kept.push_back(step);
    }
  }
  std::sort(kept.rbegin(), kept.rend());
  for (size_t i = static_cast<size_t>(keep_last); i < kept.size(); ++i) {
    remove_tree_or_warn(root_ + "/" + checkpoint_dir_name(kept[i]));
  }
  remove_staging_dirs();
  return final_dir;
}

std::vector<int64_t> CheckpointStore::list_steps() const {
  std::vector<int64_t> steps;
  for (const std::string& name : list_directory(root_)) {
    const std::optional<int64_t> step = parse_checkpoint_dir_name(name);
    if (step.has_value() && is_directory(root_ + "/" + name)) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<int64_t> CheckpointStore::latest_pointer() const {
  const std::string path = root_ + "/" + kLatestName;
  if (!is_regular_file(path)) return std::nullopt;
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    return std::nullopt;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.pop_back();
  return parse_checkpoint_dir_name(text);
}

void CheckpointStore::remove_staging_dirs() const {
  for (const std::string& name : list_directory(root_)) {
    if (starts_with(name, kStagingPrefix) || starts_with(name, kTrashPrefix)) remove_tree_or_warn(root_ + "/" + name);
  }
}

std::optional<LoadedCheckpoint> CheckpointStore::find_latest_valid(bool verify_checksums) const {
  const std::vector<int64_t> steps = list_steps();
  const std::optional<int64_t> latest = latest_pointer();
  std::vector<int64_t> candidates;
  if (latest.has_value() && std::binary_search(steps.begin(), steps.end(), *latest)) {
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      if (*it <= *latest) candidates.push_back(*it);
      else
        TANDEM_LOG_WARN("checkpoint", "{}/{} is newer than `latest` ({}), so its commit did not finish; ignoring it",
                        root_, checkpoint_dir_name(*it), checkpoint_dir_name(*latest));
    }
  } else {
    if (!steps.empty()) {
      TANDEM_LOG_WARN("checkpoint", "{}/latest is {}; using the highest valid step directory instead", root_,
                      path_exists(root_ + "/" + kLatestName) ? "unreadable or names no checkpoint here" : "missing");
    }
    candidates.assign(steps.rbegin(), steps.rend());
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string dir = root_ + "/" + checkpoint_dir_name(candidates[i]);
    VerifyResult result = verify_checkpoint(dir, verify_checksums);
    if (result.manifest.has_value()) return LoadedCheckpoint{dir, candidates[i], std::move(*result.manifest)};
    TANDEM_LOG_WARN("checkpoint", "checkpoint {} is not usable: {}; {}", dir, result.problem,
                    i + 1 < candidates.size() ? "trying the previous one" : "no older checkpoint is left");
  }
  return std::nullopt;
}

}  // namespace tandem::runtime
