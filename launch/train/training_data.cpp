// TrainingData (see training_data.h).
#include "launch/train/training_data.h"

#include <ATen/ATen.h>

#include "runtime/data/gpt_sampler.h"
#include "runtime/data/indexed_dataset.h"

namespace tandem::launch {
namespace {

runtime::GptSamplerOptions sampler_options(const JobConfig& config, int64_t dp_rank, int64_t dp_size, bool train) {
  runtime::GptSamplerOptions options;
  options.seq_length = config.data.seq_length;
  options.seed = static_cast<uint64_t>(config.run.seed);
  options.dp_rank = dp_rank;
  options.dp_size = dp_size;
  options.vocab_size = config.model.vocab_size;
  options.shuffle = train;
  options.name = train ? "training split" : "validation split";
  options.config_key = train || config.data.valid_path.empty() ? "data.path" : "data.valid_path";
  return options;
}

}  // namespace

TrainingData::TrainingData(const JobConfig& config, int64_t dp_rank, int64_t dp_size)
    : micro_batch_size_(config.data.micro_batch_size) {
  train_data_ =
      std::make_shared<const runtime::IndexedDataset>(runtime::IndexedDataset::open(config.data.path, "data.path"));
  runtime::DocumentSplit split;
  if (config.data.valid_path.empty()) {
    split = runtime::split_documents(train_data_->num_documents(), config.data.valid_fraction);
    valid_data_ = train_data_;
  } else {
    split.train = runtime::all_documents(*train_data_);
    valid_data_ = std::make_shared<const runtime::IndexedDataset>(
        runtime::IndexedDataset::open(config.data.valid_path, "data.valid_path"));
    split.valid = runtime::all_documents(*valid_data_);
  }
  train_sampler_ = std::make_unique<runtime::GptSampler>(train_data_, std::move(split.train),
                                                         sampler_options(config, dp_rank, dp_size, true));
  valid_sampler_ = std::make_unique<runtime::GptSampler>(valid_data_, std::move(split.valid),
                                                         sampler_options(config, dp_rank, dp_size, false));
}

TrainingData::~TrainingData() = default;

std::vector<at::Tensor> TrainingData::next_training(int64_t count, const at::Device& device) {
  return next(*train_sampler_, count, device);
}

std::vector<at::Tensor> TrainingData::validation(int64_t count, const at::Device& device) {
  valid_sampler_->reset();
  return next(*valid_sampler_, count, device);
}

std::vector<at::Tensor> TrainingData::next(runtime::GptSampler& sampler, int64_t count,
                                           const at::Device& device) const {
  std::vector<at::Tensor> out;
  for (int64_t k = 0; k < count; ++k) {
    const runtime::SampleBatch batch = sampler.next_batch(micro_batch_size_);
    out.push_back(
        at::from_blob(const_cast<int64_t*>(batch.tokens.data()), {batch.batch_size, batch.sample_length}, at::kLong)
            .clone()
            .to(device));  // [B, T+1]
  }
  return out;
}

std::vector<std::string> TrainingData::describe() const {
  return {train_sampler_->describe(), valid_sampler_->describe()};
}

}  // namespace tandem::launch
