// Deterministic fixed-length sampling for GPT-style pretraining over an IndexedDataset.
// Per epoch e the split's documents are put in a shuffled order and concatenated into one token
// stream with an EOD token after each document; sample k of that stream is tokens
// [k*S, k*S + S + 1) for S = seq_length (inputs = the first S, labels = the last S), so samples
// cross document boundaries and a corpus holds N = (stream_tokens - 1) / S samples per epoch.
// The N samples are visited in a shuffled order. Global sample g is sample (g mod N) of epoch
// g / N, so the only state is the number of samples consumed: resume is exact, and the set of
// samples in an optimizer step depends on (seed, epoch, step) only, not on the parallel layout.
// A window of dp_size * micro_batch_size consecutive global samples forms one micro-step; dp rank
// r takes rows [r*mbs, (r+1)*mbs) of it, so ranks get disjoint slices of the same global batch.
// Shuffles use std::mt19937_64 (whose output sequence the standard fixes) seeded by a splitmix64
// hash of (seed, stream, epoch), with our own unbiased bounded draw (std::uniform_int_distribution
// differs between standard libraries): batches are bit-identical across machines and compilers.
// Sequence length vs. documents: because samples cross documents, seq_length may exceed every
// document (a warning says so); the hard error is a split too short for a single sample.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/data/byte_tokenizer.h"
#include "runtime/data/indexed_dataset.h"

namespace tandem::runtime {

// Document ids of the training and validation splits of one dataset.
struct DocumentSplit {
  std::vector<int64_t> train;  // ascending
  std::vector<int64_t> valid;  // ascending
};

// Holds out round(valid_fraction * num_documents) documents (at least one when the fraction is
// positive), chosen by a fixed-seed shuffle that does not depend on run.seed, so every run of a
// corpus evaluates on the same documents. Throws kInput when the split would leave either side
// empty ("data.valid_fraction: ...").
DocumentSplit split_documents(int64_t num_documents, double valid_fraction);

// All documents of a dataset (for a separate validation dataset).
std::vector<int64_t> all_documents(const IndexedDataset& dataset);

struct GptSamplerOptions {
  int64_t seq_length = 128;  // S: tokens per input; samples hold S + 1 tokens
  uint64_t seed = 0;         // run.seed
  int64_t dp_rank = 0;
  int64_t dp_size = 1;
  int64_t eod_token = ByteTokenizer::kEod;
  int64_t vocab_size = ByteTokenizer::kVocabSize;  // stored tokens must lie in [0, vocab_size)
  bool shuffle = true;                             // false: split order and stream order (evaluation)
  std::string name = "training split";             // names the split in messages
  std::string config_key = "data.path";            // the key that set the dataset, for messages
};

// Where a sampler stands. Identical on every dp rank. Serialises to a short text line that goes
// into checkpoints ("gpt_sampler v1 epoch=0 position=64 samples_per_epoch=18000 seed=1234").
struct SamplerState {
  int64_t epoch = 0;
  int64_t position = 0;           // samples of this epoch consumed (all dp ranks together)
  int64_t samples_per_epoch = 0;  // consistency check on restore (0 = unknown, not checked)
  uint64_t seed = 0;

  int64_t consumed_samples() const { return epoch * samples_per_epoch + position; }
  std::string serialize() const;
  // Throws kInput on text that serialize() did not produce.
  static SamplerState parse(std::string_view text);
  bool operator==(const SamplerState&) const = default;
};

// One dp rank's micro-batch: batch_size rows of seq_length + 1 tokens.
struct SampleBatch {
  int64_t batch_size = 0;
  int64_t sample_length = 0;            // seq_length + 1
  std::vector<int64_t> tokens;          // [batch_size, sample_length] row-major
  std::vector<int64_t> sample_indices;  // [batch_size] global sample index of each row

  // Row `row`'s tokens: inputs are [0, S), labels [1, S + 1).
  const int64_t* row(int64_t r) const { return tokens.data() + r * sample_length; }
};

// Not thread-safe (it caches the current epoch's orders); one per rank and split.
class GptSampler {
 public:
  // Validates everything a training run needs before it starts; throws kInput with a message
  // naming options.config_key and the file for: no documents, no tokens, a split shorter than
  // one sample (seq_length + 1 tokens including EODs), a float dtype or one too narrow for
  // vocab_size (e.g. uint8 for the byte tokenizer's 259 ids), a bad dp_rank/dp_size (kConfig).
  // Warns (log module "data") when seq_length + 1 exceeds the longest document.
  GptSampler(std::shared_ptr<const IndexedDataset> dataset, std::vector<int64_t> documents, GptSamplerOptions options);

  const GptSamplerOptions& options() const { return options_; }
  int64_t num_documents() const { return static_cast<int64_t>(documents_.size()); }
  int64_t stream_tokens() const { return stream_tokens_; }  // per epoch, EODs included
  int64_t samples_per_epoch() const { return samples_per_epoch_; }

  // Tokens of global sample `global_index` (>= 0) into out[0, seq_length + 1). Throws kInput
  // when the data holds a token outside [0, vocab_size) (naming file, document and token).
  void read_sample(int64_t global_index, int64_t* out);

  // This rank's share of the micro-step window that starts at global sample `window_start`:
  // samples window_start + dp_rank * micro_batch_size + [0, micro_batch_size). Stateless.
  SampleBatch micro_batch_at(int64_t window_start, int64_t micro_batch_size);

  // micro_batch_at(state's consumed samples), then advances the state by dp_size *
  // micro_batch_size. Every dp rank must call it the same number of times with the same size.
  SampleBatch next_batch(int64_t micro_batch_size);

  SamplerState state() const;
  // Continues from `state` (taken by state() of a sampler over the same data and seed). Throws
  // kInput when samples_per_epoch or seed differ, i.e. the data or seq_length changed.
  void restore(const SamplerState& state);
  void reset() { consumed_ = 0; }  // back to the first sample (evaluation passes)

  // "training split: 13992 documents, 2.43M tokens, 18995 samples of 129 tokens per epoch".
  std::string describe() const;

 private:
  struct EpochOrder {
    int64_t epoch = -1;
    std::vector<int64_t> documents;  // stream position -> index into documents_
    std::vector<int64_t> starts;     // stream position -> its first stream token; then the end
    std::vector<int64_t> samples;    // visit order -> sample index (empty = identity)
  };
  const EpochOrder& order_for(int64_t epoch);
  void read_document(int64_t document, int64_t offset, int64_t count, int64_t* out) const;

  std::shared_ptr<const IndexedDataset> dataset_;
  std::vector<int64_t> documents_;
  std::vector<int64_t> document_tokens_;  // tokens of documents_[i], EOD not counted
  GptSamplerOptions options_;
  int64_t stream_tokens_ = 0;
  int64_t samples_per_epoch_ = 0;
  int64_t consumed_ = 0;
  EpochOrder order_;
};

}  // namespace tandem::runtime
