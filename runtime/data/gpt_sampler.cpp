// GptSampler: per-epoch document and sample orders (explicitly seeded, portable), the
// stream-offset -> document lookup, and the checks that must fail before training starts.
#include "runtime/data/gpt_sampler.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <random>

#include "runtime/error.h"
#include "runtime/log.h"

namespace tandem::runtime {
namespace {

// Stream tags: independent random streams for the different shuffles.
constexpr uint64_t kDocumentOrderStream = 0x646f632d6f726472ull;  // "doc-ordr"
constexpr uint64_t kSampleOrderStream = 0x73616d702d6f7264ull;    // "samp-ord"
constexpr uint64_t kSplitSeed = 0x73706c6974763031ull;            // "splitv01": fixed, not run.seed

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t derive_seed(uint64_t seed, uint64_t stream, int64_t epoch) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ static_cast<uint64_t>(epoch));
}

// Unbiased draw from [0, n) by rejection; the same sequence on every standard library.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % n);  // a multiple of n
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % n;
}

void shuffle(std::vector<int64_t>& values, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = values.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(values[i - 1], values[j]);
  }
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = i;
  return values;
}

}  // namespace

DocumentSplit split_documents(int64_t num_documents, double valid_fraction) {
  TANDEM_CHECK_INPUT(valid_fraction >= 0 && valid_fraction < 1, "data.valid_fraction: {} is outside [0, 1)",
                     valid_fraction);
  DocumentSplit split;
  int64_t num_valid = 0;
  if (valid_fraction > 0) {
    num_valid = std::max<int64_t>(1, std::llround(valid_fraction * static_cast<double>(num_documents)));
    TANDEM_CHECK_INPUT(num_valid < num_documents,
                       "data.valid_fraction: holding out {} of {} documents leaves none for training; lower "
                       "data.valid_fraction, set it to 0, or give a separate data.valid_path",
                       num_valid, num_documents);
  }
  std::vector<int64_t> order = iota(num_documents);
  shuffle(order, derive_seed(kSplitSeed, 0, 0));
  split.valid.assign(order.begin(), order.begin() + num_valid);
  split.train.assign(order.begin() + num_valid, order.end());
  std::sort(split.valid.begin(), split.valid.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

std::vector<int64_t> all_documents(const IndexedDataset& dataset) { return iota(dataset.num_documents()); }

// --- SamplerState ------------------------------------------------------------------------------

std::string SamplerState::serialize() const {
  return fmt::format("gpt_sampler v1 epoch={} position={} samples_per_epoch={} seed={}", epoch, position,
                     samples_per_epoch, seed);
}

SamplerState SamplerState::parse(std::string_view text) {
  const std::string_view kPrefix = "gpt_sampler v1 ";
  TANDEM_CHECK_INPUT(text.substr(0, kPrefix.size()) == kPrefix, "data-loader state '{}' is not a gpt_sampler v1 state",
                     text);
  SamplerState state;
  text.remove_prefix(kPrefix.size());
  int found = 0;
  while (!text.empty()) {
    const size_t space = text.find(' ');
    const std::string_view field = text.substr(0, space);
    text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
    const size_t equals = field.find('=');
    TANDEM_CHECK_INPUT(equals != std::string_view::npos, "data-loader state: malformed field '{}'", field);
    const std::string_view key = field.substr(0, equals), value = field.substr(equals + 1);
    auto parse_number = [&](auto& target) {
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), target);
      TANDEM_CHECK_INPUT(error == std::errc() && end == value.data() + value.size(),
                         "data-loader state: '{}' is not a number in '{}'", value, field);
      ++found;
    };
    if (key == "epoch") parse_number(state.epoch);
    else if (key == "position") parse_number(state.position);
    else if (key == "samples_per_epoch") parse_number(state.samples_per_epoch);
    else if (key == "seed") parse_number(state.seed);
    else TANDEM_THROW(kInput, "data-loader state: unknown field '{}'", key);
  }
  TANDEM_CHECK_INPUT(found == 4 && state.epoch >= 0 && state.position >= 0 && state.samples_per_epoch >= 0,
                     "data-loader state: incomplete or negative fields");
  return state;
}

// --- GptSampler --------------------------------------------------------------------------------

GptSampler::GptSampler(std::shared_ptr<const IndexedDataset> dataset, std::vector<int64_t> documents,
                       GptSamplerOptions options)
    : dataset_(std::move(dataset)), documents_(std::move(documents)), options_(std::move(options)) {
  TANDEM_CHECK(dataset_ != nullptr, "GptSampler needs a dataset");
  const IndexedDataset& data = *dataset_;
  const std::string& key = options_.config_key;
  TANDEM_CHECK_CONFIG(options_.dp_size >= 1 && options_.dp_rank >= 0 && options_.dp_rank < options_.dp_size,
                      "sampler: dp_rank {} is outside [0, dp_size {})", options_.dp_rank, options_.dp_size);
  TANDEM_CHECK_CONFIG(options_.seq_length >= 1, "data.seq_length: must be at least 1, got {}", options_.seq_length);
  TANDEM_CHECK_INPUT(!token_dtype_is_float(data.dtype()),
                     "{}: {} stores {} values; token ids need an integer dtype (re-run tandem preprocess)", key,
                     data.idx_path(), token_dtype_name(data.dtype()));
  TANDEM_CHECK_INPUT(token_dtype_max_id(data.dtype()) >= options_.vocab_size - 1,
                     "{}: {} has dtype {}, which cannot hold token {} of the {}-token vocabulary; re-run `tandem "
                     "preprocess --dtype uint16`",
                     key, data.idx_path(), token_dtype_name(data.dtype()), options_.vocab_size - 1,
                     options_.vocab_size);
  TANDEM_CHECK_INPUT(data.num_documents() > 0, "{}: {}: empty corpus: the dataset holds no documents", key,
                     data.prefix());
  TANDEM_CHECK_INPUT(!documents_.empty(), "{}: {}: the {} has no documents", key, data.prefix(), options_.name);

  document_tokens_.reserve(documents_.size());
  int64_t longest = 0, stored = 0;
  for (const int64_t document : documents_) {
    TANDEM_CHECK(document >= 0 && document < data.num_documents(), "document {} outside [0, {})", document,
                 data.num_documents());
    int64_t tokens = 0;
    for (int64_t s = data.document_index(document); s < data.document_index(document + 1); ++s) {
      tokens += data.sequence_length(s);
    }
    document_tokens_.push_back(tokens);
    longest = std::max(longest, tokens);
    stored += tokens;
  }
  TANDEM_CHECK_INPUT(stored > 0, "{}: {}: empty corpus: the {} has {} documents but no tokens", key, data.prefix(),
                     options_.name, documents_.size());
  stream_tokens_ = stored + static_cast<int64_t>(documents_.size());
  samples_per_epoch_ = (stream_tokens_ - 1) / options_.seq_length;
  TANDEM_CHECK_INPUT(samples_per_epoch_ >= 1,
                     "data.seq_length: a sample needs {} tokens but the {} of {} holds only {} ({} documents with "
                     "an EOD after each); lower data.seq_length or use a larger corpus",
                     options_.seq_length + 1, options_.name, data.prefix(), stream_tokens_, documents_.size());
  if (options_.seq_length + 1 > longest) {
    TANDEM_LOG_WARN("data",
                    "{}: data.seq_length {} + 1 exceeds the longest document ({} tokens) of the {}: every sample "
                    "spans several documents separated by EOD",
                    key, options_.seq_length, longest, options_.name);
  }
}

const GptSampler::EpochOrder& GptSampler::order_for(int64_t epoch) {
  if (order_.epoch == epoch) return order_;
  order_.epoch = epoch;
  const int64_t num = static_cast<int64_t>(documents_.size());
  order_.documents = iota(num);
  if (options_.shuffle) shuffle(order_.documents, derive_seed(options_.seed, kDocumentOrderStream, epoch));
  order_.starts.resize(static_cast<size_t>(num) + 1);
  int64_t start = 0;
  for (int64_t p = 0; p < num; ++p) {
    order_.starts[static_cast<size_t>(p)] = start;
    start += document_tokens_[static_cast<size_t>(order_.documents[static_cast<size_t>(p)])] + 1;  // + EOD
  }
  order_.starts[static_cast<size_t>(num)] = start;
  order_.samples.clear();
  if (options_.shuffle) {
    order_.samples = iota(samples_per_epoch_);
    shuffle(order_.samples, derive_seed(options_.seed, kSampleOrderStream, epoch));
  }
  return order_;
}

void GptSampler::read_document(int64_t position, int64_t offset, int64_t count, int64_t* out) const {
  const IndexedDataset& data = *dataset_;
  const int64_t document = documents_[static_cast<size_t>(position)];
  int64_t* cursor = out;
  for (int64_t s = data.document_index(document); s < data.document_index(document + 1) && count > 0; ++s) {
    const int64_t length = data.sequence_length(s);
    if (offset >= length) {
      offset -= length;
      continue;
    }
    const int64_t take = std::min(count, length - offset);
    data.read_tokens(s, offset, take, cursor);
    cursor += take;
    count -= take;
    offset = 0;
  }
  for (int64_t* token = out; token < cursor; ++token) {
    TANDEM_CHECK_INPUT(*token >= 0 && *token < options_.vocab_size,
                       "{}: {}: token {} in document {} is outside the vocabulary [0, {}); was the data "
                       "preprocessed with another tokenizer?",
                       options_.config_key, data.bin_path(), *token, document, options_.vocab_size);
  }
}

void GptSampler::read_sample(int64_t global_index, int64_t* out) {
  TANDEM_CHECK(global_index >= 0, "negative sample index {}", global_index);
  const int64_t epoch = global_index / samples_per_epoch_;
  const int64_t visit = global_index % samples_per_epoch_;
  const EpochOrder& order = order_for(epoch);
  const int64_t sample = order.samples.empty() ? visit : order.samples[static_cast<size_t>(visit)];
  int64_t stream_offset = sample * options_.seq_length;
  int64_t remaining = options_.seq_length + 1;
  // The last stream position whose document starts at or before stream_offset.
  auto found = std::upper_bound(order.starts.begin(), order.starts.end(), stream_offset);
  int64_t position = static_cast<int64_t>(found - order.starts.begin()) - 1;
  while (remaining > 0) {
    TANDEM_CHECK(position < static_cast<int64_t>(order.documents.size()), "sample {} runs past the epoch's stream",
                 global_index);
    const int64_t index = order.documents[static_cast<size_t>(position)];
    const int64_t length = document_tokens_[static_cast<size_t>(index)];
    const int64_t offset = stream_offset - order.starts[static_cast<size_t>(position)];
    if (offset < length) {
      const int64_t take = std::min(remaining, length - offset);
      read_document(index, offset, take, out);
      out += take;
      remaining -= take;
      stream_offset += take;
    }
    if (remaining > 0) {  // the EOD that closes this document
      *out++ = options_.eod_token;
      --remaining;
      ++stream_offset;
      ++position;
    }
  }
}

SampleBatch GptSampler::micro_batch_at(int64_t window_start, int64_t micro_batch_size) {
  TANDEM_CHECK(micro_batch_size >= 1 && window_start >= 0, "bad micro-batch request ({} at {})", micro_batch_size,
               window_start);
  SampleBatch batch;
  batch.batch_size = micro_batch_size;
  batch.sample_length = options_.seq_length + 1;
  batch.tokens.resize(static_cast<size_t>(micro_batch_size * batch.sample_length));
  const int64_t first = window_start + options_.dp_rank * micro_batch_size;
  for (int64_t row = 0; row < micro_batch_size; ++row) {
    batch.sample_indices.push_back(first + row);
    read_sample(first + row, batch.tokens.data() + row * batch.sample_length);
  }
  return batch;
}

SampleBatch GptSampler::next_batch(int64_t micro_batch_size) {
  SampleBatch batch = micro_batch_at(consumed_, micro_batch_size);
  consumed_ += options_.dp_size * micro_batch_size;
  return batch;
}

SamplerState GptSampler::state() const {
  return SamplerState{.epoch = consumed_ / samples_per_epoch_,
                      .position = consumed_ % samples_per_epoch_,
                      .samples_per_epoch = samples_per_epoch_,
                      .seed = options_.seed};
}

void GptSampler::restore(const SamplerState& state) {
  TANDEM_CHECK_INPUT(state.samples_per_epoch == 0 || state.samples_per_epoch == samples_per_epoch_,
                     "{}: the saved data position was taken over {} samples per epoch, but the {} now has {}; did "
                     "{}, data.seq_length or data.valid_fraction change since the checkpoint?",
                     options_.config_key, state.samples_per_epoch, options_.name, samples_per_epoch_,
                     options_.config_key);
  TANDEM_CHECK_INPUT(state.seed == options_.seed,
                     "run.seed: the checkpoint's data order was drawn with seed {}, this run uses {}; resume with "
                     "the same seed",
                     state.seed, options_.seed);
  TANDEM_CHECK_INPUT(state.position >= 0 && state.position < std::max<int64_t>(1, samples_per_epoch_),
                     "data-loader state: position {} is outside the epoch of {} samples", state.position,
                     samples_per_epoch_);
  consumed_ = state.epoch * samples_per_epoch_ + state.position;
}

std::string GptSampler::describe() const {
  return fmt::format("{}: {} documents, {} tokens with EODs, {} samples of {} tokens per epoch{}", options_.name,
                     documents_.size(), stream_tokens_, samples_per_epoch_, options_.seq_length + 1,
                     options_.shuffle ? "" : " (unshuffled)");
}

}  // namespace tandem::runtime
