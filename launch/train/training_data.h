// TrainingData: a job's training and validation data on one data-parallel rank: the indexed
// datasets (opened and validated at construction, so a missing or bad file fails set-up on
// every rank), the document split, and one deterministic sampler per split. Every tp, pp and ep
// rank of a dp rank reads the same samples; the dp ranks read disjoint slices of each global
// batch (runtime/data/gpt_sampler.h). Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/config/job_config.h"

namespace tandem::runtime {
class GptSampler;
class IndexedDataset;
}  // namespace tandem::runtime

namespace tandem::launch {

class TrainingData {
 public:
  // Throws tandem::Error (kInput) naming data.path or data.valid_path.
  TrainingData(const JobConfig& config, int64_t dp_rank, int64_t dp_size);
  ~TrainingData();
  TrainingData(const TrainingData&) = delete;
  TrainingData& operator=(const TrainingData&) = delete;

  // This dp rank's next `count` training micro-batches, each [micro_batch_size, T+1] int64 on
  // `device`.
  std::vector<at::Tensor> next_training(int64_t count, const at::Device& device);
  // The first `count` validation micro-batches of this dp rank (the split is read from its start
  // on every call, so every evaluation sees the same samples).
  std::vector<at::Tensor> validation(int64_t count, const at::Device& device);

  // Where training stands in the data (checkpoints save and restore it).
  runtime::GptSampler& training_sampler() { return *train_sampler_; }
  std::vector<std::string> describe() const;  // one line per split, for the start-of-run log

 private:
  std::vector<at::Tensor> next(runtime::GptSampler& sampler, int64_t count, const at::Device& device) const;

  int64_t micro_batch_size_;
  std::shared_ptr<const runtime::IndexedDataset> train_data_;
  std::shared_ptr<const runtime::IndexedDataset> valid_data_;
  std::unique_ptr<runtime::GptSampler> train_sampler_;
  std::unique_ptr<runtime::GptSampler> valid_sampler_;
};

}  // namespace tandem::launch
