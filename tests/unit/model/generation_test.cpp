// Generation: cached decoding reproduces the full forward (MLA's absorbed form against the
// training form, GQA, MoE, left-padded batches), completions do not depend on their batch,
// sampling follows the filtered distribution exactly, the stop rules, and packed rows give
// each sample the logits it has alone.
#include "model/generation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "model/model.h"
#include "test_util.h"
#include "tiny_config.h"

namespace tandem::model {
namespace {

using testing::max_abs_diff;
using testing::report;
using testing::tiny_config;

ModelConfig gqa_config() {
  ModelConfig c = tiny_config();
  c.attention_type = AttentionType::kGqa;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.validate();
  return c;
}

std::vector<int64_t> prompt_of(int64_t length, int64_t vocab, int64_t salt) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < length; ++i) p.push_back((i * 7 + salt * 13 + 3) % vocab);
  return p;
}

// Greedy completions of prompts of different lengths (left padding), checked token by token
// against the full forward of prompt + completion: the argmax and the log-probability.
void expect_decoding_matches_full_forward(const ModelConfig& c, const std::string& family) {
  Model model(c, 7);
  SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = 6;
  Generator generator(model, options);
  std::vector<GenerationRequest> requests;
  for (int64_t i = 0; i < 3; ++i)
    requests.push_back({.prompt_id = i, .sample_id = 0, .prompt = prompt_of(3 + 2 * i, c.vocab_size, i)});
  const std::vector<Completion> out = generator.generate(requests);
  ASSERT_EQ(out.size(), 3u);
  double worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i].tokens.size(), 6u);
    EXPECT_EQ(out[i].finish_reason, "length");
    std::vector<int64_t> all = requests[i].prompt;
    all.insert(all.end(), out[i].tokens.begin(), out[i].tokens.end());
    const at::Tensor logits = model.forward_logits(at::tensor(all, at::kLong).unsqueeze(0))[0];  // [T, V]
    const at::Tensor logp = at::log_softmax(logits, -1);
    const int64_t p = static_cast<int64_t>(requests[i].prompt.size());
    for (int64_t k = 0; k < 6; ++k) {
      EXPECT_EQ(out[i].tokens[k], logits[p - 1 + k].argmax().item<int64_t>()) << "request " << i << " token " << k;
      worst = std::max(worst, std::abs(out[i].logprobs[k] - logp[p - 1 + k][out[i].tokens[k]].item<double>()));
    }
  }
  report(family, "cached decode vs full forward logprob (abs)", worst);
  EXPECT_LT(worst, 1e-5);
}

TEST(Generation, MlaDecodingWithTheLatentCacheMatchesTheFullForward) {
  expect_decoding_matches_full_forward(tiny_config(), "generation.mla");
}

TEST(Generation, GqaDecodingMatchesTheFullForward) {
  expect_decoding_matches_full_forward(gqa_config(), "generation.gqa");
}

TEST(Generation, DenseDecodingMatchesTheFullForward) {
  ModelConfig c = tiny_config();
  c.n_routed_experts = 0;
  c.validate();
  expect_decoding_matches_full_forward(c, "generation.dense");
}

TEST(Generation, ACompletionDoesNotDependOnItsBatch) {
  const ModelConfig c = tiny_config();
  Model model(c, 11);
  SamplingOptions options;
  options.temperature = 1.0;
  options.max_new_tokens = 8;
  options.seed = 5;
  Generator generator(model, options);
  const GenerationRequest alone{.prompt_id = 4, .sample_id = 2, .prompt = prompt_of(5, c.vocab_size, 4)};
  const std::vector<Completion> single = generator.generate({alone});
  const std::vector<Completion> batched =
      generator.generate({{.prompt_id = 9, .sample_id = 0, .prompt = prompt_of(9, c.vocab_size, 9)},
                          alone,
                          {.prompt_id = 4, .sample_id = 3, .prompt = alone.prompt}});
  EXPECT_EQ(batched[1].tokens, single[0].tokens);
  // Another sample of the same prompt draws other numbers: it differs somewhere (8 tokens of 64).
  EXPECT_NE(batched[2].tokens, single[0].tokens);
}

TEST(Generation, SamplingFollowsTheFilteredDistributionExactly) {
  const at::Tensor logits = at::tensor({1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f});
  SamplingOptions o;
  o.temperature = 0;
  EXPECT_EQ(sample_token(logits, o, 0.3), 1);  // greedy: the lowest id among the tied best
  o.temperature = 0.7;
  o.top_k = 1;
  EXPECT_EQ(sample_token(logits, o, 0.99), 1);
  // top_k = 4 then top_p = 0.8 at temperature 0.7, against a direct computation: u on a fine grid
  // must pick every kept token with exactly its renormalized probability.
  o.top_k = 4;
  o.top_p = 0.8;
  o.suppressed_token_ids = {3};
  const at::Tensor masked = logits.clone().index_put_({3}, -INFINITY);
  const at::Tensor p = at::softmax(masked.to(at::kDouble) / 0.7, 0);  // ids 1, 2, 0, 5, 4 by probability
  std::vector<int64_t> kept{1};
  double mass = p[1].item<double>();
  for (int64_t id : {2, 0, 5}) {
    if (mass >= 0.8) break;
    kept.push_back(id);
    mass += p[id].item<double>();
  }
  std::map<int64_t, int64_t> counts;
  const int64_t n = 20000;
  for (int64_t i = 0; i < n; ++i) ++counts[sample_token(logits, o, (i + 0.5) / n)];
  for (int64_t id : kept)
    EXPECT_NEAR(static_cast<double>(counts[id]) / n, p[id].item<double>() / mass, 1.0 / n + 1e-12) << id;
  EXPECT_EQ(counts.size(), kept.size());
  o.vocab_limit = 2;  // only ids 0 and 1 remain
  for (double u : {0.0, 0.5, 0.999}) EXPECT_LT(sample_token(logits, o, u), 2);
}

TEST(Generation, UniformsArePureFunctionsOfTheirKey) {
  EXPECT_EQ(sampling_uniform(1, 2, 3, 4), sampling_uniform(1, 2, 3, 4));
  EXPECT_NE(sampling_uniform(1, 2, 3, 4), sampling_uniform(1, 2, 3, 5));
  EXPECT_NE(sampling_uniform(1, 2, 3, 4), sampling_uniform(1, 2, 4, 4));
  double sum = 0;
  for (int i = 0; i < 4000; ++i) {
    const double u = sampling_uniform(9, i, 0, 0);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 4000, 0.5, 0.02);
}

TEST(Generation, StopsOnATokenASequenceOrTheLength) {
  const ModelConfig c = tiny_config();
  Model model(c, 13);
  SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = 5;
  const GenerationRequest request{.prompt_id = 0, .sample_id = 0, .prompt = prompt_of(4, c.vocab_size, 1)};
  const std::vector<int64_t> free_run = Generator(model, options).generate({request})[0].tokens;
  ASSERT_EQ(free_run.size(), 5u);

  SamplingOptions by_token = options;
  by_token.stop_token_ids = {free_run[2]};
  const Completion stopped = Generator(model, by_token).generate({request})[0];
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[2]) - free_run.begin();
  EXPECT_EQ(stopped.finish_reason, "stop_token");
  EXPECT_EQ(stopped.tokens, std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));

  SamplingOptions by_sequence = options;
  by_sequence.stop_sequences = {{free_run[2], free_run[3]}};
  const Completion sequence = Generator(model, by_sequence).generate({request})[0];
  EXPECT_EQ(sequence.finish_reason, "stop_sequence");
  EXPECT_EQ(sequence.tokens.back(), free_run[3]);
  EXPECT_LE(sequence.tokens.size(), 4u);
}

// Two samples packed into one row, padding after them: each sample's logits equal its own.
void expect_packing_keeps_samples_apart(const ModelConfig& c, const std::string& family) {
  Model model(c, 17);
  model.train(false);
  const std::vector<int64_t> a = prompt_of(5, c.vocab_size, 2), b = prompt_of(4, c.vocab_size, 3);
  std::vector<int64_t> row = a, segments(5, 1), positions;
  row.insert(row.end(), b.begin(), b.end());
  segments.insert(segments.end(), 4, 2);
  row.insert(row.end(), {0, 0});
  segments.insert(segments.end(), {0, 0});
  for (int64_t i = 0; i < 5; ++i) positions.push_back(i);
  for (int64_t i = 0; i < 4; ++i) positions.push_back(i);
  positions.insert(positions.end(), {0, 1});
  const PackedRows packing{.segment_ids = at::tensor(segments, at::kLong).unsqueeze(0),
                           .positions = at::tensor(positions, at::kLong).unsqueeze(0)};
  const at::Tensor packed = model.forward_logits(at::tensor(row, at::kLong).unsqueeze(0), packing)[0];  // [11, V]
  const at::Tensor alone_a = model.forward_logits(at::tensor(a, at::kLong).unsqueeze(0))[0];
  const at::Tensor alone_b = model.forward_logits(at::tensor(b, at::kLong).unsqueeze(0))[0];
  const double diff =
      std::max(max_abs_diff(packed.narrow(0, 0, 5), alone_a), max_abs_diff(packed.narrow(0, 5, 4), alone_b));
  report(family, "packed vs alone logits (abs)", diff);
  EXPECT_LT(diff, 1e-5);
  // Without the packing the second sample sees the first: its logits change.
  const at::Tensor unpacked = model.forward_logits(at::tensor(row, at::kLong).unsqueeze(0))[0];
  EXPECT_GT(max_abs_diff(unpacked.narrow(0, 5, 4), alone_b), 1e-3);
}

TEST(Generation, PackedSamplesGetTheLogitsTheyHaveAloneMla) {
  expect_packing_keeps_samples_apart(tiny_config(), "packing.mla");
}
TEST(Generation, PackedSamplesGetTheLogitsTheyHaveAloneGqa) {
  expect_packing_keeps_samples_apart(gqa_config(), "packing.gqa");
}

TEST(Generation, PackedRowsTrainWithTheMtpModules) {
  const ModelConfig c = tiny_config();  // MTP depth 1: its block runs on the narrowed mask
  Model model(c, 19);
  const at::Tensor toks = at::arange(11, at::kLong).remainder(c.vocab_size).unsqueeze(0);  // [1, T+1]
  std::vector<int64_t> segments{1, 1, 1, 1, 2, 2, 2, 2, 2, 2}, positions{0, 1, 2, 3, 0, 1, 2, 3, 4, 5};
  const PackedRows packing{.segment_ids = at::tensor(segments, at::kLong).unsqueeze(0),
                           .positions = at::tensor(positions, at::kLong).unsqueeze(0)};
  const StageOutput out = model.whole().forward({.tokens = toks, .hidden = {}, .loss_scale = 1.0, .packing = packing});
  ASSERT_TRUE(out.losses.loss.defined());
  EXPECT_TRUE(std::isfinite(out.losses.loss.item<double>()));
  EXPECT_GT(out.losses.mtp_loss.item<double>(), 0);
  out.losses.loss.backward();
  EXPECT_TRUE(model.parameters()[0].grad().defined());
}

}  // namespace
}  // namespace tandem::model
