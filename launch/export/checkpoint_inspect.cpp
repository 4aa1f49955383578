// Checkpoint inspection (see checkpoint_inspect.h): every shard is checked, not only up to the
// first fault, and a file whose CRC fails is searched for the tensors that changed.
#include "launch/export/checkpoint_inspect.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <set>
#include <tuple>

#include "launch/config/config_loader.h"
#include "model/model_size.h"
#include "runtime/checkpoint_store.h"
#include "runtime/crc32c.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"

namespace tandem::launch {
namespace {

using runtime::CheckpointManifest;
using runtime::TensorEntry;
using runtime::TensorSlice;

constexpr const char* kManifestName = "manifest.pb";

bool boxes_overlap(const TensorSlice& a, const TensorSlice& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    if (a.offsets[d] + a.lengths[d] <= b.offsets[d] || b.offsets[d] + b.lengths[d] <= a.offsets[d]) return false;
  }
  return true;
}

// Whether the distinct slices tile the global tensor (no overlap, nothing missing). Replicated
// copies of the same slice count once.
bool slices_tile(const std::vector<TensorSlice>& slices, const std::vector<int64_t>& global_shape) {
  std::vector<TensorSlice> distinct;
  for (const TensorSlice& s : slices) {
    if (std::find(distinct.begin(), distinct.end(), s) == distinct.end()) distinct.push_back(s);
  }
  int64_t total = 0;
  for (size_t i = 0; i < distinct.size(); ++i) {
    total += distinct[i].numel();
    for (size_t j = 0; j < i; ++j) {
      if (boxes_overlap(distinct[i], distinct[j])) return false;
    }
  }
  return total == TensorSlice::whole(global_shape).numel();
}

std::vector<TensorSummary> summarize_tensors(const CheckpointManifest& manifest) {
  std::map<std::pair<std::string, runtime::TensorKind>, TensorSummary> by_key;
  std::map<std::pair<std::string, runtime::TensorKind>, std::vector<TensorSlice>> slices;
  for (const runtime::RankRecord& record : manifest.ranks) {
    for (const TensorEntry& entry : record.tensors) {
      const auto key = std::make_pair(entry.name, entry.kind);
      TensorSummary& summary = by_key[key];
      if (summary.num_entries == 0) {
        summary.name = entry.name;
        summary.kind = entry.kind;
        summary.dtype = entry.dtype;
        summary.global_shape = entry.global_shape;
        summary.global_bytes = TensorSlice::whole(entry.global_shape).numel() *
                               runtime::storage_dtype_size_bytes(entry.dtype);
      }
      ++summary.num_entries;
      summary.stored_bytes += entry.length_bytes;
      slices[key].push_back(entry.slice);
    }
  }
  std::vector<TensorSummary> out;
  for (auto& [key, summary] : by_key) {
    summary.covered = slices_tile(slices[key], summary.global_shape);
    out.push_back(std::move(summary));
  }
  return out;
}

std::string describe_model(const CheckpointManifest& manifest) {
  try {
    const JobConfig config = job_config_from_manifest(manifest, "manifest.pb (config)");
    const model::ModelConfig& m = config.model;
    const model::ModelSize size = model::compute_model_size(m);
    std::string experts = m.n_routed_experts > 0
                              ? fmt::format("{} routed + {} shared experts, top-{}", m.n_routed_experts,
                                            m.n_shared_experts, m.num_experts_per_tok)
                              : std::string("dense");
    return fmt::format("run '{}': {} attention, {} layers (+{} MTP), hidden {}, {}, vocab {}: {} parameters (+{} MTP)",
                       config.run.name, config::enum_name(m.attention_type), m.num_hidden_layers,
                       m.num_nextn_predict_layers, m.hidden_size, experts, m.vocab_size, size.total_params,
                       size.mtp_params);
  } catch (const Error& error) {
    return fmt::format("(the stored job config does not load: {})", error.message());
  }
}

FileCheck check_file(const std::string& dir, const runtime::RankRecord& record, bool verify) {
  FileCheck check;
  check.rank = record.rank;
  check.name = record.shard.name;
  check.expected_size_bytes = record.shard.size_bytes;
  check.expected_crc32c = record.shard.crc32c;
  const std::string path = dir + "/" + record.shard.name;
  check.size_bytes = runtime::file_size(path);
  if (!check.size_bytes.has_value()) {
    check.problem = fmt::format("{}: missing or unreadable", check.name);
    return check;
  }
  if (*check.size_bytes != record.shard.size_bytes) {
    check.problem = fmt::format("{}: {} bytes, the manifest records {} ({})", check.name, *check.size_bytes,
                                record.shard.size_bytes,
                                *check.size_bytes < record.shard.size_bytes ? "truncated" : "grown");
    return check;
  }
  if (!verify) return check;
  runtime::MappedFile file;
  try {
    file = runtime::MappedFile::open(path);
  } catch (const Error& error) {
    check.problem = fmt::format("{}: unreadable: {}", check.name, error.message());
    return check;
  }
  check.crc32c = runtime::crc32c(file.data(), file.size());
  if (*check.crc32c == record.shard.crc32c) return check;
  check.problem = fmt::format("{}: CRC-32C {:08x} does not match the manifest's {:08x} (corrupt data)", check.name,
                              *check.crc32c, record.shard.crc32c);
  for (const TensorEntry& entry : record.tensors) {
    if (entry.offset_bytes + entry.length_bytes > static_cast<int64_t>(file.size())) continue;
    if (runtime::crc32c(file.data() + entry.offset_bytes, static_cast<size_t>(entry.length_bytes)) != entry.crc32c) {
      check.bad_tensors.push_back(fmt::format("{} ({})", entry.name, runtime::tensor_kind_name(entry.kind)));
    }
  }
  return check;
}

std::string utc_time(double seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return "?";
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string human_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace

JobConfig job_config_from_manifest(const runtime::CheckpointManifest& manifest, const std::string& where) {
  static const std::vector<std::string> kOneProcess = {"parallel.pp=1",
                                                       "parallel.dp=1",
                                                       "parallel.tp=1",
                                                       "parallel.ep=1",
                                                       "parallel.zero=0",
                                                       "parallel.sequence_parallel=false",
                                                       "parallel.pipeline.schedule=1f1b",
                                                       "parallel.pipeline.micro_batches=0",
                                                       "parallel.pipeline.virtual_stages=1"};
  return load_job_config_from_string(manifest.config_yaml, where, kOneProcess, 1);
}

std::string resolve_checkpoint_dir(const std::string& path, std::string* note) {
  TANDEM_CHECK_INPUT(runtime::is_directory(path), "{}: not a directory (expected a checkpoint step directory or root)",
                     path);
  if (runtime::path_exists(path + "/" + kManifestName)) return path;
  const runtime::CheckpointStore store(path);
  const std::vector<int64_t> steps = store.list_steps();
  if (const std::optional<int64_t> latest = store.latest_pointer()) {
    if (std::binary_search(steps.begin(), steps.end(), *latest)) {
      if (note != nullptr) *note = fmt::format("{}/latest -> {}", path, runtime::checkpoint_dir_name(*latest));
      return path + "/" + runtime::checkpoint_dir_name(*latest);
    }
  }
  TANDEM_CHECK_INPUT(!steps.empty(), "{}: holds neither manifest.pb nor step_XXXXXXXX checkpoint directories", path);
  if (note != nullptr) {
    *note = fmt::format("{}/latest is missing or names no checkpoint here; using the highest step directory", path);
  }
  return path + "/" + runtime::checkpoint_dir_name(steps.back());
}

bool InspectReport::ok() const { return problems().empty(); }

std::vector<std::string> InspectReport::problems() const {
  std::vector<std::string> out;
  for (const FileCheck& file : files) {
    if (file.problem.empty()) continue;
    std::string line = file.problem;
    if (!file.bad_tensors.empty()) line += fmt::format("; damaged tensors: {}", fmt::join(file.bad_tensors, ", "));
    out.push_back(line);
  }
  if (static_cast<int64_t>(manifest.ranks.size()) != manifest.layout.world_size) {
    out.push_back(fmt::format("{}: holds {} rank records for a world of {} ranks", kManifestName, manifest.ranks.size(),
                              manifest.layout.world_size));
  }
  return out;
}

InspectReport inspect_checkpoint(const std::string& path, bool verify_checksums) {
  InspectReport report;
  report.dir = resolve_checkpoint_dir(path, &report.note);
  const std::string manifest_path = report.dir + "/" + kManifestName;
  TANDEM_CHECK_INPUT(runtime::is_regular_file(manifest_path), "{}: missing (the checkpoint was never committed)",
                     manifest_path);
  report.manifest = runtime::decode_manifest(runtime::read_file(manifest_path), manifest_path);
  report.model_summary = describe_model(report.manifest);
  report.tensors = summarize_tensors(report.manifest);
  report.checksums_verified = verify_checksums;
  for (const runtime::RankRecord& record : report.manifest.ranks) {
    report.files.push_back(check_file(report.dir, record, verify_checksums));
  }
  return report;
}

std::string render_inspect_text(const InspectReport& report) {
  const CheckpointManifest& m = report.manifest;
  const runtime::CheckpointLayout& l = m.layout;
  std::string out = fmt::format("checkpoint {}\n", report.dir);
  if (!report.note.empty()) out += fmt::format("  ({})\n", report.note);
  out += fmt::format("  step {}, optimizer step {}, format {}, written by {} at {}\n", m.step, m.optimizer_step,
                     m.format_version, m.created_by, utc_time(m.wall_time));
  out += fmt::format("  layout: {} ranks = pp {} x dp {} x tp {} (order {}), ep {}, zero {}, schedule {} "
                     "(virtual stages {}, micro-batches {})\n",
                     l.world_size, l.pp, l.dp, l.tp, l.order, l.ep, l.zero, l.schedule, l.virtual_stages,
                     l.micro_batches);
  out += fmt::format("  model: {}\n", report.model_summary);
  for (const auto& [key, value] : m.scalars) out += fmt::format("  {} = {}\n", key, value);

  int64_t stored = 0;
  for (const TensorSummary& t : report.tensors) stored += t.stored_bytes;
  out += fmt::format("\ntensors: {} (global name, kind), {} stored\n", report.tensors.size(), human_bytes(stored));
  out += fmt::format("  {:<20} {:<9} {:<18} {:>6} {:>12}  {}\n", "kind", "dtype", "shape", "pieces", "bytes", "name");
  for (const TensorSummary& t : report.tensors) {
    out += fmt::format("  {:<20} {:<9} {:<18} {:>6} {:>12}  {}{}\n", runtime::tensor_kind_name(t.kind),
                       runtime::storage_dtype_name(t.dtype), shape_text(t.global_shape), t.num_entries, t.stored_bytes,
                       t.name, t.covered ? "" : "  (pieces do not tile the global tensor)");
  }
  out += fmt::format("\nfiles: {} (+ manifest.pb)\n", report.files.size());
  out += fmt::format("  {:>5}  {:<16} {:>14}  {:<8}  {}\n", "rank", "file", "bytes", "crc32c", "status");
  for (const FileCheck& f : report.files) {
    std::string status = f.problem.empty() ? (report.checksums_verified ? "ok (CRC-32C verified)" : "ok (size only)")
                                           : "BAD: " + f.problem;
    out += fmt::format("  {:>5}  {:<16} {:>14}  {:08x}  {}\n", f.rank, f.name, f.expected_size_bytes, f.expected_crc32c,
                       status);
  }
  const std::vector<std::string> problems = report.problems();
  if (problems.empty()) {
    out += fmt::format("\nverification: all {} files intact{}\n", report.files.size(),
                       report.checksums_verified ? " (sizes and CRC-32C)" : " (sizes only: --no-verify)");
  } else {
    out += fmt::format("\nverification FAILED: {} problem(s)\n", problems.size());
    for (const std::string& p : problems) out += "  " + p + "\n";
  }
  return out;
}

namespace {

nlohmann::ordered_json layout_json(const runtime::CheckpointLayout& l) {
  nlohmann::ordered_json out;
  out["world_size"] = l.world_size;
  out["pp"] = l.pp;
  out["dp"] = l.dp;
  out["tp"] = l.tp;
  out["ep"] = l.ep;
  out["zero"] = l.zero;
  out["schedule"] = l.schedule;
  out["order"] = l.order;
  out["virtual_stages"] = l.virtual_stages;
  out["micro_batches"] = l.micro_batches;
  return out;
}

nlohmann::ordered_json tensor_json(const TensorSummary& t) {
  nlohmann::ordered_json out;
  out["name"] = t.name;
  out["kind"] = runtime::tensor_kind_name(t.kind);
  out["dtype"] = runtime::storage_dtype_name(t.dtype);
  out["shape"] = t.global_shape;
  out["pieces"] = t.num_entries;
  out["stored_bytes"] = t.stored_bytes;
  out["global_bytes"] = t.global_bytes;
  out["covered"] = t.covered;
  return out;
}

nlohmann::ordered_json file_json(const FileCheck& f) {
  nlohmann::ordered_json out;
  out["rank"] = f.rank;
  out["name"] = f.name;
  out["size_bytes"] = f.expected_size_bytes;
  out["crc32c"] = fmt::format("{:08x}", f.expected_crc32c);
  out["ok"] = f.problem.empty();
  out["problem"] = f.problem;
  return out;
}

}  // namespace

std::string render_inspect_json(const InspectReport& report) {
  const CheckpointManifest& m = report.manifest;
  nlohmann::ordered_json root;
  root["dir"] = report.dir;
  root["step"] = m.step;
  root["optimizer_step"] = m.optimizer_step;
  root["format_version"] = m.format_version;
  root["created_by"] = m.created_by;
  root["wall_time"] = json::rounded(m.wall_time, 3);
  root["layout"] = layout_json(m.layout);
  root["model"] = report.model_summary;
  nlohmann::ordered_json scalars = nlohmann::ordered_json::object();
  for (const auto& [key, value] : m.scalars) json::append_unique(scalars, key, json::number(value));
  root["scalars"] = std::move(scalars);
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const TensorSummary& t : report.tensors) tensors.push_back(tensor_json(t));
  root["tensors"] = std::move(tensors);
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const FileCheck& f : report.files) files.push_back(file_json(f));
  root["files"] = std::move(files);
  root["checksums_verified"] = report.checksums_verified;
  root["ok"] = report.ok();
  root["problems"] = report.problems();
  return json::dump_rows(root);
}

}  // namespace tandem::launch
