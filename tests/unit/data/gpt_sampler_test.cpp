// GptSampler: determinism, EOD placement and stream structure, disjoint dp slices that equal
// the single-rank batch, exact resume (also across epochs), the document split, and the errors
// that must stop a run before training.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <set>

#include "runtime/data/gpt_sampler.h"
#include "runtime/error.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

constexpr int64_t kEod = 65535;

// Token of document d at position p: d * 100 + p (documents shorter than 100 tokens), so every
// token names its document and position.
int64_t token_of(int64_t document, int64_t position) { return document * 100 + position; }

std::shared_ptr<const IndexedDataset> make_dataset(const TempDir& dir, const std::vector<int64_t>& lengths,
                                                   TokenDtype dtype = TokenDtype::kUInt16) {
  const std::string prefix = dir / "corpus";
  IndexedDatasetWriter writer(prefix, dtype);
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int64_t> tokens;
    for (int64_t p = 0; p < lengths[d]; ++p) tokens.push_back(token_of(static_cast<int64_t>(d), p));
    writer.add_document(tokens);
  }
  writer.finish();
  return std::make_shared<const IndexedDataset>(IndexedDataset::open(prefix));
}

GptSamplerOptions options(int64_t seq_length, uint64_t seed = 1234, int64_t dp_rank = 0, int64_t dp_size = 1) {
  GptSamplerOptions o;
  o.seq_length = seq_length;
  o.seed = seed;
  o.dp_rank = dp_rank;
  o.dp_size = dp_size;
  o.eod_token = kEod;
  o.vocab_size = 65536;
  return o;
}

std::vector<int64_t> lengths_of(int count) {
  std::vector<int64_t> lengths;
  for (int d = 0; d < count; ++d) lengths.push_back(3 + (d * 37) % 60);  // 3..62 tokens
  return lengths;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.message();
  }
  ADD_FAILURE() << "no tandem::Error thrown";
  return "";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

TEST(GptSampler, SameInputsGiveTheSameBatches) {
  TempDir dir;
  const auto data = make_dataset(dir, lengths_of(50));
  GptSampler a(data, all_documents(*data), options(16));
  GptSampler b(data, all_documents(*data), options(16));
  GptSampler other_seed(data, all_documents(*data), options(16, 99));
  bool differs = false;
  for (int step = 0; step < 10; ++step) {
    const SampleBatch x = a.next_batch(4), y = b.next_batch(4), z = other_seed.next_batch(4);
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.sample_indices, y.sample_indices);
    differs = differs || x.tokens != z.tokens;
  }
  EXPECT_TRUE(differs) << "another seed should give another order";
}

TEST(GptSampler, SamplesAreStreamPiecesWithOneEodAfterEachDocument) {
  TempDir dir;
  const std::vector<int64_t> lengths = lengths_of(40);
  const auto data = make_dataset(dir, lengths);
  GptSampler sampler(data, all_documents(*data), options(24));
  const int64_t s = 24;
  std::multiset<int64_t> seen;  // tokens at input positions [0, S) over one epoch
  int64_t eods = 0;
  for (int64_t g = 0; g < sampler.samples_per_epoch(); ++g) {
    std::vector<int64_t> sample(s + 1);
    sampler.read_sample(g, sample.data());
    for (int64_t i = 0; i + 1 <= s; ++i) {
      const int64_t now = sample[i], next = sample[i + 1];
      if (now == kEod) {
        EXPECT_EQ(next % 100, 0) << "after an EOD a document starts at its first token";
      } else {
        const int64_t document = now / 100, position = now % 100;
        if (position + 1 == lengths[document]) EXPECT_EQ(next, kEod) << "EOD closes document " << document;
        else EXPECT_EQ(next, now + 1) << "tokens of a document stay in order";
      }
      if (now == kEod) ++eods;
      else seen.insert(now);
    }
  }
  // The epoch's samples tile the stream: no token twice, at most S - 1 + 1 tail tokens unseen.
  std::set<int64_t> distinct(seen.begin(), seen.end());
  EXPECT_EQ(distinct.size(), seen.size());
  EXPECT_EQ(static_cast<int64_t>(seen.size()) + eods, sampler.samples_per_epoch() * s);
  EXPECT_GE(static_cast<int64_t>(seen.size()) + eods, sampler.stream_tokens() - s);
  EXPECT_EQ(sampler.stream_tokens(), std::accumulate(lengths.begin(), lengths.end(), int64_t{0}) + 40);
}

TEST(GptSampler, UnshuffledSamplesFollowTheDocumentOrder) {
  TempDir dir;
  const auto data = make_dataset(dir, {3, 2, 4});
  GptSamplerOptions o = options(4);
  o.shuffle = false;
  GptSampler sampler(data, all_documents(*data), o);
  // Stream: 0 1 2 E 100 101 E 200 201 202 203 E  (12 tokens) -> (12 - 1) / 4 = 2 samples.
  EXPECT_EQ(sampler.samples_per_epoch(), 2);
  const SampleBatch batch = sampler.next_batch(2);
  EXPECT_EQ(batch.tokens, (std::vector<int64_t>{0, 1, 2, kEod, 100, 100, 101, kEod, 200, 201}));
}

TEST(GptSampler, DpRanksGetDisjointSlicesOfTheSingleRankBatch) {
  TempDir dir;
  const auto data = make_dataset(dir, lengths_of(60));
  const int64_t dp = 4, mbs = 2;
  GptSampler single(data, all_documents(*data), options(16, 7, 0, 1));
  std::vector<std::unique_ptr<GptSampler>> ranks;
  for (int64_t r = 0; r < dp; ++r) {
    ranks.push_back(std::make_unique<GptSampler>(data, all_documents(*data), options(16, 7, r, dp)));
  }
  for (int micro_step = 0; micro_step < 6; ++micro_step) {
    const SampleBatch whole = single.next_batch(dp * mbs);
    std::set<int64_t> indices;
    for (int64_t r = 0; r < dp; ++r) {
      const SampleBatch part = ranks[r]->next_batch(mbs);
      for (const int64_t index : part.sample_indices) EXPECT_TRUE(indices.insert(index).second) << "shared sample";
      const std::vector<int64_t> expected(whole.tokens.begin() + r * mbs * 17,
                                          whole.tokens.begin() + (r + 1) * mbs * 17);
      EXPECT_EQ(part.tokens, expected) << "rank " << r << " micro-step " << micro_step;
    }
    EXPECT_EQ(std::vector<int64_t>(indices.begin(), indices.end()), whole.sample_indices);
  }
}

TEST(GptSampler, ResumeFromSavedStateGivesIdenticalBatchesAcrossEpochs) {
  TempDir dir;
  const auto data = make_dataset(dir, lengths_of(12));
  GptSampler original(data, all_documents(*data), options(20));
  ASSERT_LT(original.samples_per_epoch(), 30) << "the test should cross epochs";
  for (int step = 0; step < 5; ++step) original.next_batch(3);
  const std::string saved = original.state().serialize();
  GptSampler resumed(data, all_documents(*data), options(20));
  resumed.restore(SamplerState::parse(saved));
  EXPECT_EQ(resumed.state(), original.state());
  for (int step = 0; step < 20; ++step) {
    const SampleBatch expected = original.next_batch(3);
    const SampleBatch got = resumed.next_batch(3);
    EXPECT_EQ(got.tokens, expected.tokens) << "step " << step;
    EXPECT_EQ(got.sample_indices, expected.sample_indices);
  }
  EXPECT_GE(original.state().epoch, 2);
}

TEST(GptSampler, EachEpochHasItsOwnOrder) {
  TempDir dir;
  const auto data = make_dataset(dir, lengths_of(30));
  GptSampler sampler(data, all_documents(*data), options(16));
  const int64_t n = sampler.samples_per_epoch();
  std::vector<int64_t> epoch0(17), epoch1(17);
  sampler.read_sample(0, epoch0.data());
  sampler.read_sample(n, epoch1.data());
  EXPECT_NE(epoch0, epoch1);
}

TEST(GptSampler, StateSerialisesAndRejectsGarbage) {
  const SamplerState state{.epoch = 3, .position = 17, .samples_per_epoch = 40, .seed = 18446744073709551615ull};
  EXPECT_EQ(state.serialize(), "gpt_sampler v1 epoch=3 position=17 samples_per_epoch=40 seed=18446744073709551615");
  EXPECT_EQ(SamplerState::parse(state.serialize()), state);
  EXPECT_EQ(state.consumed_samples(), 137);
  EXPECT_CONTAINS(error_of([] { SamplerState::parse("epoch=1"); }), "not a gpt_sampler v1 state");
  EXPECT_CONTAINS(error_of([] { SamplerState::parse("gpt_sampler v1 epoch=x position=1 samples_per_epoch=1 seed=1"); }),
                  "'x' is not a number");
  EXPECT_CONTAINS(error_of([] { SamplerState::parse("gpt_sampler v1 epoch=1"); }), "incomplete");
}

TEST(GptSampler, RestoreRefusesAnotherCorpusOrSeed) {
  TempDir dir;
  const auto data = make_dataset(dir, lengths_of(30));
  GptSampler sampler(data, all_documents(*data), options(16));
  SamplerState other = sampler.state();
  other.samples_per_epoch += 1;
  EXPECT_CONTAINS(error_of([&] { sampler.restore(other); }),
                  "did data.path, data.seq_length or data.valid_fraction change");
  other = sampler.state();
  other.seed = 5;
  EXPECT_CONTAINS(error_of([&] { sampler.restore(other); }),
                  "run.seed: the checkpoint's data order was drawn with seed 5");
}

TEST(GptSampler, SequenceLongerThanEveryDocumentIsLegal) {
  TempDir dir;
  const auto data = make_dataset(dir, {5, 6, 7, 8, 9, 10, 11});  // 56 tokens + 7 EOD
  GptSampler sampler(data, all_documents(*data), options(30));
  EXPECT_EQ(sampler.samples_per_epoch(), (63 - 1) / 30);
  const SampleBatch batch = sampler.next_batch(2);
  EXPECT_GE(std::count(batch.tokens.begin(), batch.tokens.begin() + 31, kEod), 2)
      << "31 tokens over documents of 5-11 tokens cross several EODs";
}

TEST(GptSampler, ErrorsBeforeTraining) {
  TempDir dir;
  {
    const auto data = make_dataset(dir, {4, 4});
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, all_documents(*data), options(10)); }),
                    "data.seq_length: a sample needs 11 tokens but the training split of");
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, all_documents(*data), options(10)); }),
                    "holds only 10 (2 documents");
    EXPECT_NO_THROW(GptSampler(data, all_documents(*data), options(9)));
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, {}, options(2)); }), "the training split has no documents");
  }
  {
    const auto data = make_dataset(dir, {});
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, all_documents(*data), options(2)); }),
                    "empty corpus: the dataset holds no documents");
  }
  {
    const auto data = make_dataset(dir, {0, 0, 0});
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, all_documents(*data), options(2)); }),
                    "empty corpus: the training split has 3 documents but no tokens");
  }
  {
    const auto data = make_dataset(dir, {3}, TokenDtype::kUInt8);
    GptSamplerOptions bytes = options(2);
    bytes.vocab_size = ByteTokenizer::kVocabSize;
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, all_documents(*data), bytes); }),
                    "has dtype uint8, which cannot hold token 258 of the 259-token vocabulary");
  }
  {
    const auto data = make_dataset(dir, {3}, TokenDtype::kFloat32);
    EXPECT_CONTAINS(error_of([&] { GptSampler(data, all_documents(*data), options(2)); }),
                    "stores float32 values; token ids need an integer dtype");
  }
  {
    const auto data = make_dataset(dir, {150});  // tokens up to 149, above a 100-token vocabulary
    GptSamplerOptions small = options(8);
    small.vocab_size = 100;
    small.eod_token = 99;
    GptSampler sampler(data, all_documents(*data), small);
    EXPECT_CONTAINS(error_of([&] {
                      for (int i = 0; i < 20; ++i) sampler.next_batch(1);
                    }),
                    "outside the vocabulary [0, 100)");
  }
}

TEST(GptSampler, DocumentSplitIsFixedDisjointAndComplete) {
  const DocumentSplit split = split_documents(1000, 0.01);
  EXPECT_EQ(split.valid.size(), 10u);
  EXPECT_EQ(split.train.size(), 990u);
  std::vector<int64_t> all = split.train;
  all.insert(all.end(), split.valid.begin(), split.valid.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(all[i], i);
  EXPECT_EQ(split_documents(1000, 0.01).valid, split.valid);
  EXPECT_EQ(split_documents(10, 0.001).valid.size(), 1u) << "a positive fraction holds out at least one document";
  EXPECT_TRUE(split_documents(10, 0).valid.empty());
  EXPECT_CONTAINS(error_of([] { split_documents(1, 0.01); }), "data.valid_fraction: holding out 1 of 1 documents");
}

}  // namespace
}  // namespace tandem::runtime
