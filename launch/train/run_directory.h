// Whether a job may use its run.output_dir, decided once on rank 0 during set-up (before the
// set-up agreement, so a refusal exits 2 on every rank before anything is written):
//  - a fresh start never replaces another run's outputs by accident: a directory that holds
//    metrics.jsonl lines or checkpoints is refused unless the job resumes from it or says
//    run.overwrite (`tandem train --overwrite`), in which case those outputs are deleted first;
//  - a resume says what it changes (layout, steps, batch, ...) and refuses a change that would
//    alter the optimisation of the resumed run unless checkpoint.allow_changes confirms it.
// The same checkpoint is resumed later by the Checkpointer; this only reads its manifest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/config/job_config.h"

namespace tandem::launch {

// What resuming a checkpoint of `saved` at optimizer step `step` under `current` changes, as
// "key: old -> new" lines.
struct ResumeChanges {
  std::vector<std::string> layout;        // parallel.*, micro-batch size, recompute: the checkpoint reshards
  std::vector<std::string> schedule;      // steps / LR keys whose finished steps keep their learning rates
  std::vector<std::string> optimisation;  // what makes the continuation differ from a straight run
};
ResumeChanges compare_for_resume(const JobConfig& saved, const JobConfig& current, int64_t step);

struct RunDirectoryPlan {
  bool clear = false;              // fresh start with run.overwrite over another run's outputs
  std::vector<std::string> notes;  // lines for rank 0's log (what a resume changes, what is replaced)
};

// Rank 0, during set-up. Throws kInput naming the directory and the choices when a fresh start
// would replace another run's outputs without run.overwrite, or a resume changes the
// optimisation without checkpoint.allow_changes. Reads only file listings and one manifest.
RunDirectoryPlan check_run_directory(const JobConfig& config);

// Rank 0, after the set-up agreement, when plan.clear: deletes the earlier run's metrics.jsonl,
// tensorboard/, traces/, config.resolved.yaml and checkpoints (the step directories and the
// `latest` pointer of the checkpoint directory). Throws kIo when something cannot be deleted.
void clear_run_directory(const JobConfig& config);

}  // namespace tandem::launch
