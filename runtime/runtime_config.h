// Config sections owned by runtime/: checkpoint and logging (the data section is
// runtime/data/data_config.h). Plain data with a field listing (config_schema.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config_schema.h"

namespace tandem::runtime {

struct CheckpointConfig {
  std::string dir;       // empty = <run.output_dir>/checkpoints
  int64_t interval = 0;  // steps between checkpoints; 0 = only at the end / on signal
  int64_t keep_last = 3;
  std::string resume = "auto";  // auto | none | path to a checkpoint directory
  bool save_on_exit = true;
  bool allow_changes = false;  // resume although the job changes how the optimisation continues
  std::string init_from;       // a tandem checkpoint whose weights start a new run (fine-tuning)

  template <class V>
  void visit(V& v) {
    v("dir", dir, {.doc = "Checkpoint directory; empty = <run.output_dir>/checkpoints"});
    v("interval", interval,
      {.doc = "Save every N optimizer steps; 0 = only at the end and on SIGINT/SIGTERM", .min = 0});
    v("keep_last", keep_last,
      {.doc = "Checkpoints kept; older ones are deleted after a new one is complete", .min = 1});
    v("resume", resume, {.doc = "auto (latest valid checkpoint, if any), none, or a checkpoint directory"});
    v("save_on_exit", save_on_exit, {.doc = "Write a checkpoint when training ends or is stopped by a signal"});
    v("allow_changes", allow_changes,
      {.doc = "Resume even though the job changes the optimisation of the resumed run (learning rates of its "
              "finished steps, batch, optimizer, data, model, seed); the changes are logged either way"});
    v("init_from", init_from,
      {.doc = "A tandem checkpoint (step directory, or a root whose newest valid one is taken) whose model weights "
              "start this run, written by any layout (fine-tuning, post-training); optimizer state, step and data "
              "position start fresh. A resume of this run's own checkpoints takes precedence"});
  }
};

struct LoggingConfig {
  std::string level = "info";
  bool all_ranks = false;
  int64_t log_interval = 1;
  bool tensorboard = true;
  std::vector<int64_t> trace_steps;  // steps whose op timeline is written as a Chrome trace
  bool trace_kernels = false;        // also record those steps with the Kineto profiler

  template <class V>
  void visit(V& v) {
    v("level", level, {.doc = "Log level", .choices = "trace|debug|info|warn|error"});
    v("all_ranks", all_ranks, {.doc = "Log info lines from every rank, not only rank 0"});
    v("log_interval", log_interval,
      {.doc = "Steps between step lines in the log (metrics.jsonl gets every step)", .min = 1});
    v("tensorboard", tensorboard, {.doc = "Write TensorBoard event files under run.output_dir/tensorboard"});
    v("trace_steps", trace_steps,
      {.doc = "Optimizer steps whose per-rank pipeline op timeline is recorded, next to its re-simulation "
              "(run.output_dir/traces/stepN); pipeline jobs only; steps after train.steps are not traced"});
    v("trace_kernels", trace_kernels,
      {.doc = "Also record each of the trace_steps with the Kineto profiler: host ops and, on GPUs, every device "
              "kernel per stream, as a Chrome trace per rank (run.output_dir/traces/stepN/kernels/rankR.json)"});
  }
};

}  // namespace tandem::runtime
