// Generation: batched autoregressive decoding of a Model with a key/value cache (MLA caches the
// compressed latent and the rotary key, model/detail/kv_cache.h), temperature / top-k / top-p
// sampling, and stopping on a stop token, a stop sequence or a length limit.
// Determinism: the random number behind the i-th new token of a request is a pure function of
// (seed, prompt_id, sample_id, i), so a request's completion does not depend on which other
// requests share its batch, on the batch order or on the parallel layout (up to the logits'
// floating-point differences between layouts, which can flip a draw that lands on a boundary).
// Parallel layouts: under tp every rank of a tp group passes the same requests (the logits are
// all-gathered over the vocabulary); under ep or dp each rank passes its own, and `lockstep`
// (the group of ranks whose forwards exchange tokens: the world, or null for one process) keeps
// them stepping together until every rank's requests are finished. Pipelines are not supported
// (the model must be one stage). Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "parallel/communicator.h"

namespace tandem::model {

struct SamplingOptions {
  double temperature = 1.0;  // <= 0: greedy (the most likely token, the lowest id on ties)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 keeps all
  double top_p = 1.0;        // then the smallest set whose probability reaches top_p
  int64_t max_new_tokens = 64;
  uint64_t seed = 0;
  // Tokens that end a completion (included in it), e.g. the tokenizer's end of document.
  std::vector<int64_t> stop_token_ids;
  // Token sequences that end a completion once it ends with one (included in it).
  std::vector<std::vector<int64_t>> stop_sequences;
  // Ids never sampled: padding, beginning of sequence, and the embedding rows past the
  // tokenizer's vocabulary (`vocab_limit`: ids >= it are never sampled; 0 = the model's size).
  std::vector<int64_t> suppressed_token_ids;
  int64_t vocab_limit = 0;
};

struct GenerationRequest {
  int64_t prompt_id = 0;
  int64_t sample_id = 0;
  std::vector<int64_t> prompt;  // at least one token
};

struct Completion {
  int64_t prompt_id = 0;
  int64_t sample_id = 0;
  std::vector<int64_t> tokens;  // the new tokens, a stop token or sequence included
  std::vector<float> logprobs;  // log pi(token) under the model (temperature 1), per new token
  std::string finish_reason;    // "stop_token", "stop_sequence" or "length"
};

struct GenerationStats {
  int64_t new_tokens = 0;     // tokens generated on this rank
  int64_t forward_steps = 0;  // decoding forwards (the prefill included)
  double seconds = 0;         // wall time of generate()
};

// Draws the next token of one row from its logits [V] (fp32, CPU) with the uniform `u` in
// [0, 1): inverse-CDF sampling over the tokens sorted by probability (ties by id), after
// temperature, top-k and top-p. Exposed for tests.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, double u);
// The uniform in [0, 1) for the `step`-th new token of (prompt_id, sample_id) under `seed`.
double sampling_uniform(uint64_t seed, int64_t prompt_id, int64_t sample_id, int64_t step);

class Generator {
 public:
  // `model` must be a single stage (no pipeline), its parameters on the device to decode on;
  // it is switched to eval mode for the calls.
  Generator(Model& model, SamplingOptions options, parallel::CommunicatorPtr lockstep = nullptr);
  // Throws kInput naming the option that is out of range (what the constructor checks).
  static void check(const SamplingOptions& options);
  // Completions in the order of `requests` (may be empty on a rank when `lockstep` is set).
  std::vector<Completion> generate(const std::vector<GenerationRequest>& requests);
  const GenerationStats& last_stats() const { return stats_; }

 private:
  Model& model_;
  SamplingOptions options_;
  parallel::CommunicatorPtr lockstep_;
  GenerationStats stats_;
};

}  // namespace tandem::model
