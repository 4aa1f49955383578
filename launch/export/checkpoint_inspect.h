// `tandem checkpoint inspect`: what a checkpoint holds (step, layout, the job's model, every
// global tensor with dtype, shape and bytes, every shard file with its checksum) and whether each
// file is intact. Unlike resume, which stops at the first fault and falls back to an older
// checkpoint, inspection checks every file and names each bad one (and, inside it, the tensors
// whose bytes no longer match their own CRC-32C), so a user knows exactly what is damaged.
// Torch-free: reads manifest.pb and raw shard bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "launch/config/job_config.h"
#include "runtime/checkpoint_manifest.h"

namespace tandem::launch {

// The step directory that `path` names: `path` itself when it holds manifest.pb, else the
// checkpoint root's `latest` pointer (or, with no usable pointer, its highest step directory,
// with `note` saying so). Throws kInput when `path` is neither.
std::string resolve_checkpoint_dir(const std::string& path, std::string* note = nullptr);

// The job config stored in the manifest, for tools that need its model (inspect, export). Its
// parallel section is reset to one process: the writer's layout is manifest.layout, and the
// stored config need not be valid for any world size the tool runs with. Throws kConfig naming
// `where` when the stored YAML does not load (e.g. written by a newer tandem with other keys).
JobConfig job_config_from_manifest(const runtime::CheckpointManifest& manifest, const std::string& where);

struct FileCheck {
  int rank = 0;
  std::string name;  // "rank_00003.bin"
  int64_t expected_size_bytes = 0;
  uint32_t expected_crc32c = 0;
  std::optional<int64_t> size_bytes;     // nullopt: missing or unreadable
  std::optional<uint32_t> crc32c;        // computed (when verified and the size matches)
  std::string problem;                   // empty when the file is intact
  std::vector<std::string> bad_tensors;  // "name (kind)" whose entry CRC fails (when the file CRC does)
};

// One global tensor of one kind, over every entry (shard) that holds part of it.
struct TensorSummary {
  std::string name;
  runtime::TensorKind kind = runtime::TensorKind::kParam;
  runtime::StorageDtype dtype = runtime::StorageDtype::kFloat32;
  std::vector<int64_t> global_shape;
  int64_t num_entries = 0;   // pieces stored (> 1 when sharded or replicated)
  int64_t stored_bytes = 0;  // over all pieces
  int64_t global_bytes = 0;  // the whole tensor once
  bool covered = true;       // the pieces cover the whole global tensor
};

struct InspectReport {
  std::string dir;   // the step directory inspected
  std::string note;  // how it was chosen, when `path` was a root
  runtime::CheckpointManifest manifest;
  std::string model_summary;           // one line about the job's model, or why the config is unreadable
  std::vector<TensorSummary> tensors;  // sorted by name, then kind
  std::vector<FileCheck> files;        // by rank
  bool checksums_verified = false;

  bool ok() const;
  std::vector<std::string> problems() const;  // "rank_00001.bin: ..." per bad file
};

// Reads the manifest (throws kInput naming manifest.pb when it is missing or corrupt) and checks
// every shard: existence, size, and with verify_checksums the CRC-32C of the whole file (and of
// each entry in a file whose CRC fails). Never throws for a bad shard: see report.problems().
InspectReport inspect_checkpoint(const std::string& path, bool verify_checksums = true);

// Human-readable report, and the same as one JSON object.
std::string render_inspect_text(const InspectReport& report);
std::string render_inspect_json(const InspectReport& report);

}  // namespace tandem::launch
