// Checkpoint directories on disk: atomic commit, discovery of the latest valid checkpoint, and
// pruning. Layout of a checkpoint root (checkpoint.dir):
//   step_00000020/          one complete checkpoint: rank_00000.bin ... rank_NNNNN.bin, manifest.pb
//   step_00000040/
//   latest                  text: the directory name of the newest committed checkpoint
//   .tmp-step_00000060-<token>/   a checkpoint being written (ignored by readers, removed later)
// Protocol (rank 0 drives; the caller supplies the collectives):
//   1. rank 0: dir = store.begin(step, token)   token = rank 0's pid, broadcast to all ranks;
//      other ranks: dir = store.staging_dir(step, token) after the broadcast.
//   2. every rank: ShardWriter shard(dir, rank); shard.append(...)...; record = shard.finish(rng, data);
//      gather encode_rank_record(record) on rank 0.
//   3. rank 0: store.commit(dir, manifest with all ranks' records, keep_last).
// commit() fsyncs the manifest and the directory, renames it to step_XXXXXXXX, fsyncs the root,
// then replaces `latest` (temp + rename) and only then deletes old checkpoints: at every instant
// the previous checkpoint is intact and `latest` names a complete directory or an older one.
// Readers trust nothing: find_latest_valid() checks the manifest's CRC, every file's size and
// CRC-32C, and falls back to older checkpoints with a warning naming the file and the fault.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/checkpoint_manifest.h"

namespace tandem::runtime {

std::string checkpoint_dir_name(int64_t step);                            // "step_00000020"
std::optional<int64_t> parse_checkpoint_dir_name(std::string_view name);  // "step_00000020" -> 20
std::string shard_file_name(int rank);                                    // "rank_00003.bin"

// Writes one rank's shard file: tensor bytes back to back, each entry starting at a multiple of
// 64 bytes (zero padding), CRC-32C computed on the fly. Not thread-safe; blocking I/O.
class ShardWriter {
 public:
  // Creates <dir>/rank_NNNNN.bin (truncating). Throws kIo.
  ShardWriter(std::string dir, int rank);
  ~ShardWriter();  // closes an unfinished file (it then fails verification, as intended)
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends `size_bytes` bytes at `data`: the row-major contents of `slice` of the global tensor
  // (name, kind). One tensor may be appended in several boxes (a flat range of it spans several,
  // TensorSlice::flat_range); a box overlapping one this shard already holds for (name, kind), a
  // slice outside global_shape or a size that is not slice elements * dtype size is a caller bug
  // (kInternal). Throws kIo on write failure.
  const TensorEntry& append(std::string name, TensorKind kind, StorageDtype dtype, std::vector<int64_t> global_shape,
                            TensorSlice slice, const void* data, int64_t size_bytes);

  // fsyncs and closes the file; returns this rank's record (shard file size and CRC, entries,
  // and the given opaque states). Call once. Throws kIo.
  RankRecord finish(std::string rng_state, std::string data_state);

  const std::vector<TensorEntry>& entries() const { return entries_; }
  const std::string& path() const { return path_; }

 private:
  void write_bytes(const void* data, int64_t size);

  std::string path_;
  std::string file_name_;
  int rank_;
  int fd_ = -1;
  int64_t size_ = 0;
  uint32_t crc_ = 0;
  std::vector<TensorEntry> entries_;
  std::map<std::pair<std::string, TensorKind>, std::vector<TensorSlice>> boxes_;  // appended so far
};

struct LoadedCheckpoint {
  std::string dir;  // full path of the step directory
  int64_t step = 0;
  CheckpointManifest manifest;
};

// Checks <dir>/manifest.pb and every shard it lists (exists, size, and with verify_checksums
// the CRC-32C of each whole file). Returns the manifest, or the problem as text naming the file
// and the fault ("rank_00001.bin: 1000 bytes, the manifest records 4096 (truncated?)").
// Reads every byte when verify_checksums. Never throws for a bad checkpoint; kIo is not thrown
// either (an unreadable file is reported as the problem).
struct VerifyResult {
  std::optional<CheckpointManifest> manifest;
  std::string problem;
};
VerifyResult verify_checkpoint(const std::string& dir, bool verify_checksums = true);

// verify_checkpoint for an explicitly named checkpoint (checkpoint.resume: DIR): throws kInput
// with the problem when it is not valid.
LoadedCheckpoint load_checkpoint(const std::string& dir, bool verify_checksums = true);

// A checkpoint root directory. Const methods only touch the file system; not thread-safe with
// respect to another writer of the same root (one job owns a root).
class CheckpointStore {
 public:
  explicit CheckpointStore(std::string root);
  const std::string& root() const { return root_; }

  // <root>/.tmp-step_XXXXXXXX-<token>.
  std::string staging_dir(int64_t step, int64_t token) const;
  // Rank 0: creates root and a fresh, empty staging dir; removes leftovers of interrupted writes
  // (every other .tmp-* and .trash-* directory). Throws kIo.
  std::string begin(int64_t step, int64_t token) const;
  // Rank 0, after every rank's finish() and the gather: checks that each rank's shard exists in
  // `staging_dir` with the recorded size (kInternal otherwise), writes manifest.pb, renames the
  // directory to step_XXXXXXXX (replacing an existing one of that step), points `latest` at it,
  // then deletes checkpoints of later steps (left from a run that resumed earlier) and all but
  // the `keep_last` newest. Returns the final directory. Throws kIo.
  std::string commit(const std::string& staging_dir, const CheckpointManifest& manifest, int64_t keep_last) const;

  // The newest valid checkpoint: the one `latest` names, else (missing or corrupt pointer) the
  // highest step directory; a checkpoint that fails verification is reported (warning: which
  // file, what failed) and the next older one tried. nullopt when none is usable (none yet is
  // not an error). Blocking: reads every checkpoint byte it verifies when verify_checksums.
  std::optional<LoadedCheckpoint> find_latest_valid(bool verify_checksums = true) const;

  std::vector<int64_t> list_steps() const;        // step directories present, ascending
  std::optional<int64_t> latest_pointer() const;  // the step `latest` names, if it parses
  void remove_staging_dirs() const;               // every .tmp-* / .trash-* directory

 private:
  std::string root_;
};

// CheckpointStore(root).find_latest_valid(verify_checksums).
inline std::optional<LoadedCheckpoint> find_latest_valid(const std::string& root, bool verify_checksums = true) {
  return CheckpointStore(root).find_latest_valid(verify_checksums);
}

}  // namespace tandem::runtime
