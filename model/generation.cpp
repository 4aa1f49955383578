// Generator: left-pads the batch's prompts to a common start so every row shares one cache
// length, runs the prompts through in one forward (the prefill), then one token per row per
// forward, sampling on the host. The padding never influences a real token: its keys are masked
// out and rotary positions count from each row's first real token.
#include "model/generation.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <numeric>

#include "model/detail/kv_cache.h"
#include "model/detail/stage_impl.h"
#include "parallel/tp_mappings.h"
#include "runtime/error.h"

namespace tandem::model {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

bool ends_with(const std::vector<int64_t>& tokens, const std::vector<int64_t>& suffix) {
  return !suffix.empty() && tokens.size() >= suffix.size() &&
         std::equal(suffix.rbegin(), suffix.rend(), tokens.rbegin());
}

// One row's state between decoding steps.
struct Row {
  const GenerationRequest* request = nullptr;  // null: a placeholder keeping an empty rank in step
  int64_t padding = 0;                         // left padding before the prompt
  bool active = false;
  Completion completion;
};

// Keys row b may see from queries at absolute columns [first, first + n) of a cache that will
// hold `keys` positions: its own prompt and tokens (column >= padding) up to the query, and each
// padding query itself (so no mask row is empty).
at::Tensor decoding_mask(const std::vector<Row>& rows, int64_t first, int64_t n, int64_t keys) {
  const int64_t b = static_cast<int64_t>(rows.size());
  const at::Tensor key = at::arange(keys, at::kLong).view({1, 1, 1, keys});
  const at::Tensor query = at::arange(first, first + n, at::kLong).view({1, 1, n, 1});
  std::vector<int64_t> pads;
  for (const Row& r : rows) pads.push_back(r.padding);
  const at::Tensor pad = at::tensor(pads, at::kLong).view({b, 1, 1, 1});
  return ((key <= query) & (key >= pad)) | (key == query);  // [B, 1, n, keys]
}

// Rotary positions of columns [first, first + n): counted from each row's first real token.
at::Tensor decoding_positions(const std::vector<Row>& rows, int64_t first, int64_t n) {
  std::vector<int64_t> pads;
  for (const Row& r : rows) pads.push_back(r.padding);
  const at::Tensor pad = at::tensor(pads, at::kLong).view({-1, 1});
  return (at::arange(first, first + n, at::kLong).view({1, n}) - pad).clamp_min(0);  // [B, n]
}

// One row per request, or a single placeholder when there is none (it keeps this rank's
// forwards in step with the others and is never sampled). Checks every prompt.
std::vector<Row> make_rows(const std::vector<GenerationRequest>& requests, int64_t vocab) {
  std::vector<Row> rows;
  for (const GenerationRequest& r : requests) {
    TANDEM_CHECK_INPUT(!r.prompt.empty(), "prompt {} (sample {}) is empty", r.prompt_id, r.sample_id);
    for (int64_t id : r.prompt) {
      TANDEM_CHECK_INPUT(id >= 0 && id < vocab, "prompt {} holds token id {} outside the vocabulary [0, {})",
                         r.prompt_id, id, vocab);
    }
    Row row{.request = &r, .active = true};
    row.completion.prompt_id = r.prompt_id;
    row.completion.sample_id = r.sample_id;
    rows.push_back(std::move(row));
  }
  if (rows.empty()) rows.push_back({.request = nullptr});
  return rows;
}

// The prompts right-aligned in [B, L] (L the longest); sets each row's padding.
at::Tensor left_padded_prompts(std::vector<Row>& rows) {
  const std::vector<int64_t> placeholder{0};
  auto prompt_of = [&](const Row& r) -> const std::vector<int64_t>& {
    return r.request ? r.request->prompt : placeholder;
  };
  int64_t longest = 0;
  for (const Row& r : rows) longest = std::max<int64_t>(longest, static_cast<int64_t>(prompt_of(r).size()));
  at::Tensor tokens = at::zeros({static_cast<int64_t>(rows.size()), longest}, at::kLong);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::vector<int64_t>& prompt = prompt_of(rows[i]);
    rows[i].padding = longest - static_cast<int64_t>(prompt.size());
    tokens[static_cast<int64_t>(i)]
        .narrow(0, rows[i].padding, static_cast<int64_t>(prompt.size()))
        .copy_(at::tensor(prompt, at::kLong));
  }
  return tokens;
}

// Draws row's token of `step` from its logits [V] and applies the stop rules.
int64_t sample_next(Row& row, const at::Tensor& logits, int64_t step, const SamplingOptions& options) {
  Completion& c = row.completion;
  const int64_t token = sample_token(logits, options, sampling_uniform(options.seed, c.prompt_id, c.sample_id, step));
  c.tokens.push_back(token);
  c.logprobs.push_back(at::log_softmax(logits, 0)[token].item<float>());
  const auto& stops = options.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
    c.finish_reason = "stop_token";
  } else if (std::any_of(options.stop_sequences.begin(), options.stop_sequences.end(),
                         [&](const std::vector<int64_t>& s) { return ends_with(c.tokens, s); })) {
    c.finish_reason = "stop_sequence";
  } else if (step + 1 == options.max_new_tokens) {
    c.finish_reason = "length";
  }
  row.active = c.finish_reason.empty();
  return token;
}

}  // namespace

double sampling_uniform(uint64_t seed, int64_t prompt_id, int64_t sample_id, int64_t step) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<uint64_t>(prompt_id));
  h = splitmix64(h ^ static_cast<uint64_t>(sample_id));
  h = splitmix64(h ^ static_cast<uint64_t>(step));
  return static_cast<double>(h >> 11) * 0x1.0p-53;  // 53 random bits: uniform on [0, 1)
}

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, double u) {
  TANDEM_CHECK(logits.dim() == 1 && logits.scalar_type() == at::kFloat && logits.device().is_cpu(),
               "sample_token needs fp32 CPU logits [V]");
  at::Tensor scores = logits.clone();
  const int64_t vocab = scores.size(0);
  if (options.vocab_limit > 0 && options.vocab_limit < vocab)
    scores.narrow(0, options.vocab_limit, vocab - options.vocab_limit).fill_(-INFINITY);
  for (int64_t id : options.suppressed_token_ids) {
    if (id >= 0 && id < vocab) scores[id] = -INFINITY;
  }
  // Sorted by score, ties by id (a stable sort of the ids), so the draw is reproducible.
  const auto [sorted, order] = at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  if (options.temperature <= 0) return order[0].item<int64_t>();
  at::Tensor probs = at::softmax(sorted.to(at::kDouble) / options.temperature, 0);
  // Never past the tokens left possible (suppressed ones have probability 0).
  int64_t keep = (probs > 0).sum().item<int64_t>();
  if (options.top_k > 0) keep = std::min(keep, options.top_k);
  if (options.top_p < 1.0) {
    // The smallest prefix reaching top_p: count the tokens whose preceding mass is below it.
    const at::Tensor before = probs.cumsum(0) - probs;
    keep = std::min(keep, std::max<int64_t>(1, (before < options.top_p).sum().item<int64_t>()));
  }
  const at::Tensor kept = probs.narrow(0, 0, keep);
  const at::Tensor cdf = kept.cumsum(0) / kept.sum();
  const int64_t index = std::min<int64_t>((cdf <= u).sum().item<int64_t>(), keep - 1);
  return order[index].item<int64_t>();
}

Generator::Generator(Model& model, SamplingOptions options, parallel::CommunicatorPtr lockstep)
    : model_(model), options_(std::move(options)), lockstep_(std::move(lockstep)) {
  check(options_);
}

void Generator::check(const SamplingOptions& o) {
  TANDEM_CHECK_INPUT(o.max_new_tokens >= 1, "max_new_tokens must be >= 1 (got {})", o.max_new_tokens);
  TANDEM_CHECK_INPUT(o.top_p > 0 && o.top_p <= 1, "top_p must be in (0, 1] (got {})", o.top_p);
  TANDEM_CHECK_INPUT(o.top_k >= 0, "top_k must be >= 0 (got {})", o.top_k);
  TANDEM_CHECK_INPUT(o.temperature >= 0, "temperature must be >= 0 (got {}; 0 is greedy)", o.temperature);
}

std::vector<Completion> Generator::generate(const std::vector<GenerationRequest>& requests) {
  const auto start = std::chrono::steady_clock::now();
  Stage::Impl& impl = model_.whole().impl();
  model_.train(false);
  const at::Device device = impl.embed->weight.device();
  std::vector<Row> rows = make_rows(requests, model_.config().vocab_size);
  const at::Tensor tokens = left_padded_prompts(rows);  // [B, L]
  const int64_t b = tokens.size(0), longest = tokens.size(1);

  detail::KvCache cache{.capacity = longest + options_.max_new_tokens};
  stats_ = {};
  auto forward = [&](const at::Tensor& step_tokens, int64_t first) {
    const int64_t n = step_tokens.size(1);
    at::Tensor logits = impl.decode_logits(step_tokens.to(device), decoding_positions(rows, first, n).to(device),
                                           decoding_mask(rows, first, n, first + n).to(device), cache);  // [B, V/tp]
    ++stats_.forward_steps;
    if (impl.groups.tp_size() > 1) logits = parallel::all_gather_along(logits, *impl.groups.tp, 1);  // [B, V]
    return logits.to(at::kFloat).cpu();
  };
  at::Tensor logits = forward(tokens, 0);
  for (int64_t step = 0;; ++step) {
    at::Tensor next = at::zeros({b, 1}, at::kLong);
    bool any_active = false;
    for (int64_t i = 0; i < b; ++i) {
      if (!rows[i].active) continue;
      next[i][0] = sample_next(rows[i], logits[i], step, options_);
      ++stats_.new_tokens;
      any_active = any_active || rows[i].active;
    }
    if (step + 1 == options_.max_new_tokens) break;  // the same step on every rank
    if (lockstep_ && lockstep_->size() > 1) {
      at::Tensor flag = at::full({1}, any_active ? 1.0f : 0.0f, at::TensorOptions().device(device));
      lockstep_->all_reduce(flag, parallel::ReduceOp::kMax);
      any_active = flag.item<float>() > 0;
    }
    if (!any_active) break;
    logits = forward(next, longest + step);
  }

  std::vector<Completion> out;
  for (Row& row : rows) {
    if (row.request) out.push_back(std::move(row.completion));
  }
  stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace tandem::model
