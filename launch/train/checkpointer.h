// Checkpointer: the trainer's checkpoints (docs/checkpoints.md). Every rank writes its shard into
// a staging directory, rank 0 gathers the shard records and commits the manifest atomically
// (runtime/checkpoint_store.h). A checkpoint holds the parameters, AdamW moments and step count,
// the routing biases, the step, the sampler position and the resolved config. Every tensor is
// stored under its global name and global shape, each element once, by the rank that owns it
// (DataParallelOptimizer::visit_owned); loading reads only the boxes a rank needs, so a
// checkpoint of one layout loads under any other (resharding) and the same layout resumes
// bit-exactly. Collective: every method runs on every rank of the job.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "launch/config/job_config.h"

namespace tandem::parallel {
class Communicator;
class DataParallelOptimizer;
}  // namespace tandem::parallel
namespace tandem::runtime {
class CheckpointStore;
class GptSampler;
struct ProcessContext;
}  // namespace tandem::runtime

namespace tandem::launch {

class StepRunner;

// The trainer's parts a checkpoint saves and restores.
struct CheckpointedState {
  parallel::DataParallelOptimizer& optimizer;  // parameters, AdamW moments, optimizer step count
  StepRunner& runner;                          // buffers (routing biases)
  runtime::GptSampler& sampler;                // the position in the training data
};

class Checkpointer {
 public:
  // `world`: the communicator of every rank. Checkpoints live in checkpoint.dir, or
  // run.output_dir/checkpoints when that is empty.
  Checkpointer(const JobConfig& config, const runtime::ProcessContext& process, parallel::Communicator& world);

  // Saves `state` as the checkpoint of optimizer step `step`, keeping checkpoint.keep_last.
  void save(int64_t step, const CheckpointedState& state);
  // Restores `state` from checkpoint.resume (auto: the latest valid checkpoint, if any; none; or
  // a directory). Returns the step resumed from, or nullopt when starting fresh. Throws kInput
  // for a checkpoint that does not fit the model.
  std::optional<int64_t> resume(const CheckpointedState& state);

 private:
  // Rank 0 writes the manifest of the staged shards `records` and commits `dir` (atomic rename).
  void commit(const runtime::CheckpointStore& store, const std::string& dir, int64_t step,
              const CheckpointedState& state, const std::vector<std::string>& records,
              std::chrono::steady_clock::time_point start) const;
  // The checkpoint checkpoint.resume names (verified by rank 0), or nullopt to start fresh.
  std::optional<std::string> find_resume_dir() const;

  const JobConfig& config_;
  const runtime::ProcessContext& process_;
  parallel::Communicator& world_;
  std::string root_;
};

}  // namespace tandem::launch
