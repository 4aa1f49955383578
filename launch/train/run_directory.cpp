// Run-directory and resume checks (see run_directory.h). Keys are compared as the resolved
// config prints them (config_loader.h: job_config_values), so a new key is compared without
// code here: it counts as changing the optimisation unless listed as layout or bookkeeping.
#include "launch/train/run_directory.h"

#include <algorithm>
#include <map>
#include <optional>

#include "launch/config/config_loader.h"
#include "launch/train/lr_schedule.h"
#include "runtime/checkpoint_store.h"
#include "runtime/file_util.h"
#include "runtime/log.h"
#include "runtime/metrics_writer.h"

namespace tandem::launch {
namespace {

bool starts_with(const std::string& text, const char* prefix) { return text.rfind(prefix, 0) == 0; }

// Keys that change how the job is laid out or computed, not what it computes (a checkpoint
// reshards into any layout; micro-batching, recomputation and CUDA graphs change rounding at most).
bool is_layout_key(const std::string& key) {
  return starts_with(key, "parallel.") || key == "data.micro_batch_size" || starts_with(key, "train.recompute") ||
         key == "train.cuda_graph" || key == "run.device";
}

// Keys that only say where and how often things are written or logged.
bool is_bookkeeping_key(const std::string& key) {
  return starts_with(key, "checkpoint.") || starts_with(key, "logging.") || starts_with(key, "hardware.") ||
         key == "run.name" || key == "run.output_dir" || key == "run.overwrite" || key == "train.eval_interval" ||
         key == "train.eval_steps";
}

// The learning-rate schedule: a change is harmless while the finished steps keep their rates.
bool is_schedule_key(const std::string& key) {
  return key == "train.steps" || key == "optim.lr" || key == "optim.min_lr" || key == "optim.warmup_steps" ||
         key == "optim.lr_schedule";
}

std::string checkpoint_root(const JobConfig& config) {
  return config.checkpoint.dir.empty() ? config.run.output_dir + "/checkpoints" : config.checkpoint.dir;
}

std::string metrics_path(const JobConfig& config) { return config.run.output_dir + "/metrics.jsonl"; }

// Steps logged in metrics.jsonl: count and last (0, nullopt when none).
std::pair<int64_t, std::optional<int64_t>> logged_steps(const std::string& path) {
  if (!runtime::is_regular_file(path)) return {0, std::nullopt};
  const std::string text = runtime::read_file(path);
  int64_t count = 0;
  std::optional<int64_t> last;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    if (const auto step = runtime::metrics_line_int(std::string_view(text).substr(begin, end - begin), "step")) {
      ++count;
      last = std::max(last.value_or(*step), *step);
    }
    begin = end + 1;
  }
  return {count, last};
}

// The checkpoint checkpoint.resume would load, if one is there to load (auto: the one `latest`
// names, else the newest step directory; the Checkpointer verifies it and falls back further).
std::optional<std::string> resume_candidate(const JobConfig& config) {
  const std::string& resume = config.checkpoint.resume;
  if (resume == "none") return std::nullopt;
  if (resume != "auto") return resume;
  const runtime::CheckpointStore store(checkpoint_root(config));
  const std::vector<int64_t> steps = store.list_steps();
  if (steps.empty()) return std::nullopt;
  const std::optional<int64_t> latest = store.latest_pointer();
  const bool named = latest && std::binary_search(steps.begin(), steps.end(), *latest);
  return store.root() + "/" + runtime::checkpoint_dir_name(named ? *latest : steps.back());
}

// Logs (and refuses, unless confirmed) what resuming the checkpoint in `dir` changes.
void check_resume(const JobConfig& config, const std::string& dir, RunDirectoryPlan& plan) {
  const runtime::VerifyResult checked = runtime::verify_checkpoint(dir, /*verify_checksums=*/false);
  if (!checked.manifest) return;  // the Checkpointer reports it (and falls back, for auto)
  const runtime::CheckpointManifest& manifest = *checked.manifest;
  JobConfig saved;
  try {
    saved = load_job_config_from_string(manifest.config_yaml, dir + " (its config)", {}, manifest.layout.world_size);
  } catch (const Error& error) {
    plan.notes.push_back(
        fmt::format("cannot compare with the config saved in {} ({}); resuming as asked", dir, error.message()));
    return;
  }
  const ResumeChanges changes = compare_for_resume(saved, config, manifest.step);
  const auto joined = [](const std::vector<std::string>& lines) { return fmt::format("{}", fmt::join(lines, "; ")); };
  if (!changes.layout.empty()) {
    plan.notes.push_back(fmt::format("resuming step {} under another layout (the checkpoint reshards): {}",
                                     manifest.step, joined(changes.layout)));
  }
  if (!changes.schedule.empty()) {
    plan.notes.push_back(fmt::format("resuming step {} with {} (steps 1-{} keep their learning rates)", manifest.step,
                                     joined(changes.schedule), manifest.step));
  }
  if (changes.optimisation.empty()) return;
  TANDEM_CHECK_INPUT(config.checkpoint.allow_changes,
                     "resuming {} (step {}) with a job that changes its optimisation: {}. The continuation would "
                     "differ from a straight run of either job. Resume with the saved values, start afresh "
                     "elsewhere (--set run.output_dir=...), or confirm with --set checkpoint.allow_changes=true",
                     dir, manifest.step, joined(changes.optimisation));
  plan.notes.push_back(fmt::format("resuming step {} with changes to its optimisation (checkpoint.allow_changes): {}",
                                   manifest.step, joined(changes.optimisation)));
}

}  // namespace

ResumeChanges compare_for_resume(const JobConfig& saved, const JobConfig& current, int64_t step) {
  const std::vector<std::pair<std::string, std::string>> before = job_config_values(saved);
  const std::map<std::string, std::string> before_map(before.begin(), before.end());
  ResumeChanges changes;
  std::vector<std::string> schedule;
  for (const auto& [key, value] : job_config_values(current)) {
    const auto old = before_map.find(key);
    const std::string old_value = old == before_map.end() ? std::string("(absent)") : old->second;
    if (old_value == value || is_bookkeeping_key(key)) continue;
    const std::string line = fmt::format("{} {} -> {}", key, old_value, value);
    if (is_layout_key(key)) changes.layout.push_back(line);
    else if (is_schedule_key(key)) schedule.push_back(line);
    else changes.optimisation.push_back(line);
  }
  if (schedule.empty()) return changes;
  // The finished steps ran with the saved schedule; the continuation equals a straight run of
  // the new job only if that job would have given them the same rates.
  for (int64_t s = 1; s <= step; ++s) {
    const double old_lr = learning_rate(saved.optim, s, saved.train.steps);
    const double new_lr = learning_rate(current.optim, s, current.train.steps);
    if (old_lr != new_lr) {
      changes.optimisation.push_back(fmt::format("{} (the learning rate of step {} was {:.4g}, the new job gives it "
                                                 "{:.4g}: the schedule would jump)",
                                                 fmt::join(schedule, ", "), s, old_lr, new_lr));
      return changes;
    }
  }
  changes.schedule = std::move(schedule);
  return changes;
}

RunDirectoryPlan check_run_directory(const JobConfig& config) {
  RunDirectoryPlan plan;
  if (const std::optional<std::string> dir = resume_candidate(config)) {
    check_resume(config, *dir, plan);
    return plan;
  }
  const auto [logged, last_step] = logged_steps(metrics_path(config));
  const std::vector<int64_t> checkpoints = runtime::CheckpointStore(checkpoint_root(config)).list_steps();
  if (logged == 0 && checkpoints.empty()) return plan;
  std::vector<std::string> held;
  if (logged > 0) held.push_back(fmt::format("metrics.jsonl with {} steps (last {})", logged, *last_step));
  if (!checkpoints.empty()) {
    held.push_back(
        fmt::format("checkpoints of step(s) {} in {}", fmt::join(checkpoints, ", "), checkpoint_root(config)));
  }
  const std::string why = config.checkpoint.resume == "none"
                              ? std::string("a fresh start (checkpoint.resume: none) would overwrite it")
                              : fmt::format("checkpoint.resume: auto finds no checkpoint in {} to continue from, so "
                                            "this run would start afresh and overwrite it",
                                            checkpoint_root(config));
  // Continuing is a choice only where there is a checkpoint to continue from.
  const std::string resume_choice = checkpoints.empty() ? std::string()
                                                        : "continue that run (--set checkpoint.resume=auto), ";
  TANDEM_CHECK_INPUT(config.run.overwrite,
                     "run.output_dir {} holds another run ({}); {}. Choose one: {}write to another directory (--set "
                     "run.output_dir=...), or replace it (tandem train --overwrite, or run.overwrite: true)",
                     config.run.output_dir, fmt::join(held, "; "), why, resume_choice);
  plan.clear = true;
  plan.notes.push_back(
      fmt::format("run.overwrite: replacing the earlier run in {} ({})", config.run.output_dir, fmt::join(held, "; ")));
  return plan;
}

void clear_run_directory(const JobConfig& config) {
  const std::string& out = config.run.output_dir;
  const runtime::CheckpointStore store(checkpoint_root(config));
  // The pointer first: an interruption then leaves step directories that nothing names as latest.
  std::vector<std::string> doomed = {store.root() + "/latest"};
  for (const int64_t step : store.list_steps())
    doomed.push_back(store.root() + "/" + runtime::checkpoint_dir_name(step));
  for (const char* name : {"metrics.jsonl", "tensorboard", "traces", "config.resolved.yaml"}) {
    doomed.push_back(out + "/" + name);
  }
  for (const std::string& path : doomed) {
    const std::string problem = runtime::remove_tree(path);
    TANDEM_CHECK_KIND(kIo, problem.empty(), "run.overwrite: cannot delete {}: {}", path, problem);
  }
}

}  // namespace tandem::launch
