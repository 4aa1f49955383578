// Post-training data: the three JSONL forms (and the chat template), malformed lines named by
// file:line, the overlong policies, the packed and unpacked row layouts (loss mask, segment ids,
// positions) on a hand example and as invariants over many samples, DPO rows and RL prompts.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>

#include "runtime/data/byte_tokenizer.h"
#include "runtime/data/post_train_data.h"
#include "runtime/error.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

constexpr int64_t kBos = ByteTokenizer::kBos;
constexpr int64_t kEod = ByteTokenizer::kEod;
constexpr int64_t kPad = ByteTokenizer::kPad;

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

Error error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error;
  }
  ADD_FAILURE() << "no tandem::Error thrown";
  return Error(ErrorKind::kInternal, "", "", 0);
}

PostTrainDataOptions options(int64_t seq_length, OverlongPolicy policy = OverlongPolicy::kReject) {
  PostTrainDataOptions o;
  o.seq_length = seq_length;
  o.overlong = policy;
  return o;
}

// BOS + bytes of `prompt`, then the bytes of `response` + EOD (what a sample should hold).
std::vector<int64_t> sequence(std::string_view prompt, std::string_view response, bool eod = true) {
  std::vector<int64_t> tokens{kBos};
  for (const char c : prompt) tokens.push_back(static_cast<uint8_t>(c));
  for (const char c : response) tokens.push_back(static_cast<uint8_t>(c));
  if (eod) tokens.push_back(kEod);
  return tokens;
}

TEST(PostTrainData, ReadsPromptResponseLinesSkippingBlankOnes) {
  const std::string text = "{\"prompt\": \"1+1=\", \"response\": \"2\", \"id\": 7}\n"
                           "\n"
                           "   \r\n"
                           "{\"response\": \"ok\", \"prompt\": \"\"}\r\n";
  const SftData data = parse_sft_jsonl(text, "sft.jsonl", options(64));
  ASSERT_EQ(data.samples.size(), 2u);
  EXPECT_EQ(data.samples[0].tokens, sequence("1+1=", "2"));
  EXPECT_EQ(data.samples[0].prompt_length, 5);  // BOS + 4 bytes
  EXPECT_EQ(data.samples[0].line, 1);
  EXPECT_EQ(data.samples[1].tokens, sequence("", "ok"));
  EXPECT_EQ(data.samples[1].prompt_length, 1);
  EXPECT_EQ(data.samples[1].line, 4);
  EXPECT_EQ(data.num_truncated, 0);
}

TEST(PostTrainData, RendersChatWithTheTemplateAndTheLastAssistantMessageAsResponse) {
  const std::string text =
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},)"
      R"( {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"},)"
      R"( {"role": "assistant", "content": "4"}]})";
  const SftData data = parse_sft_jsonl(text, "chat.jsonl", options(128));
  ASSERT_EQ(data.samples.size(), 1u);
  const std::string prompt = "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: 2+2?\nAssistant: ";
  EXPECT_EQ(data.samples[0].tokens, sequence(prompt, "4\n"));
  EXPECT_EQ(data.samples[0].prompt_length, 1 + static_cast<int64_t>(prompt.size()));

  PostTrainDataOptions custom = options(128);
  custom.chat_template = {"<s>", "</s>", "<u>", "</u>", "<a>", "</a>"};
  const SftData chat = parse_sft_jsonl(text, "chat.jsonl", custom);
  EXPECT_EQ(chat.samples[0].tokens, sequence("<s>Be brief.</s><u>Hi</u><a>Hello</a><u>2+2?</u><a>", "4</a>"));
}

struct BadLine {
  std::string text;
  std::vector<std::string> expected;  // parts of the message
};

TEST(PostTrainData, MalformedLinesNameFileLineAndField) {
  const std::string good = "{\"prompt\": \"p\", \"response\": \"r\"}\n";
  const std::vector<BadLine> cases = {
      {good + "\n" + "{\"prompt\": \"p\", \"response\": }\n", {"sft.jsonl:3: JSON error at column", "syntax error"}},
      {good + "{\"prompt\": \"p\"}\n", {"sft.jsonl:2: missing field \"response\"", "\"messages\""}},
      {"{\"prompt\": 3, \"response\": \"r\"}", {"sft.jsonl:1: field \"prompt\" must be a string, got a number"}},
      {good + "[1, 2]\n", {"sft.jsonl:2: expected a JSON object", "got an array"}},
      {"{\"prompt\": \"p\", \"prompt\": \"q\", \"response\": \"r\"}", {"sft.jsonl:1:", "appears twice"}},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", {"sft.jsonl:1: messages[0].role is \"robot\""}},
      {R"({"messages": [{"role": "user", "content": 5}]})",
       {"sft.jsonl:1: field \"messages[0].content\" must be a string"}},
      {R"({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]})",
       {"sft.jsonl:1: the last message (messages[1]) is from \"user\""}},
      {R"({"messages": []})", {"sft.jsonl:1: field \"messages\" must be a non-empty array", "an empty array"}},
      {R"({"messages": [{"role": "assistant", "content": "a"}], "prompt": "p"})", {"sft.jsonl:1: the record has both"}},
      {"", {"sft.jsonl: no records", "empty"}},
      {"\n  \n", {"sft.jsonl: no records"}},
  };
  for (const BadLine& bad : cases) {
    const Error error = error_of([&] { parse_sft_jsonl(bad.text, "sft.jsonl", options(64)); });
    EXPECT_EQ(error.kind(), ErrorKind::kInput) << bad.text;
    for (const std::string& part : bad.expected) EXPECT_CONTAINS(error.message(), part);
  }
  const Error dpo = error_of([] { parse_dpo_jsonl("{\"prompt\": \"p\", \"chosen\": \"c\"}", "d.jsonl", options(64)); });
  EXPECT_CONTAINS(dpo.message(), "d.jsonl:1: missing field \"rejected\"");
  const Error rl = error_of([] { parse_rl_jsonl("{\"prompt\": \"p\", \"answer\": 42}", "rl.jsonl", options(64)); });
  EXPECT_CONTAINS(rl.message(), "rl.jsonl:1: field \"answer\" must be a string, got a number");
}

TEST(PostTrainData, ReadsFilesAndNamesAMissingOne) {
  TempDir dir;
  testing::spit(dir / "sft.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"c\"}\n");
  const Error error = error_of([&] { read_sft_jsonl(dir / "sft.jsonl", options(16)); });
  EXPECT_CONTAINS(error.message(), dir / "sft.jsonl:2: missing field \"response\"");
  testing::spit(dir / "rl.jsonl", "{\"prompt\": \"a\", \"answer\": \"b\"}\n");
  EXPECT_EQ(read_rl_jsonl(dir / "rl.jsonl", options(16)).prompts.size(), 1u);
  EXPECT_EQ(error_of([&] { read_dpo_jsonl(dir / "missing.jsonl", options(16)); }).kind(), ErrorKind::kIo);
}

TEST(PostTrainData, OverlongSamplesAreRejectedOrTruncatedAndCounted) {
  // BOS + "abcdef" (7) + "xyz" + EOD (4) = 11 tokens; seq_length 7 allows 8.
  const std::string text =
      "{\"prompt\": \"ab\", \"response\": \"x\"}\n{\"prompt\": \"abcdef\", \"response\": \"xyz\"}\n";
  const Error reject = error_of([&] { parse_sft_jsonl(text, "s.jsonl", options(7)); });
  EXPECT_EQ(reject.kind(), ErrorKind::kInput);
  EXPECT_CONTAINS(reject.message(), "s.jsonl:2: the sample is 11 tokens (prompt 7 tokens with BOS, response 4");
  EXPECT_CONTAINS(reject.message(), "seq_length + 1 = 8");
  EXPECT_CONTAINS(reject.message(), "post_train.overlong");

  const SftData left = parse_sft_jsonl(text, "s.jsonl", options(7, OverlongPolicy::kTruncatePromptLeft));
  EXPECT_EQ(left.num_truncated, 1);
  EXPECT_FALSE(left.samples[0].truncated);
  EXPECT_TRUE(left.samples[1].truncated);
  EXPECT_EQ(left.samples[1].tokens, sequence("def", "xyz"));  // BOS kept, oldest prompt bytes dropped
  EXPECT_EQ(left.samples[1].prompt_length, 4);

  const SftData cut = parse_sft_jsonl(text, "s.jsonl", options(7, OverlongPolicy::kTruncateResponse));
  EXPECT_EQ(cut.num_truncated, 1);
  EXPECT_EQ(cut.samples[1].tokens, sequence("abcdef", "x", /*eod=*/false));  // no EOD after a cut response
  EXPECT_EQ(cut.samples[1].prompt_length, 7);

  // Neither truncation can fit these: the message says which policy to try instead.
  const std::string long_response = "{\"prompt\": \"a\", \"response\": \"0123456789\"}";
  EXPECT_CONTAINS(error_of([&] {
                    parse_sft_jsonl(long_response, "s.jsonl", options(7, OverlongPolicy::kTruncatePromptLeft));
                  }).message(),
                  "s.jsonl:1: the response alone is 11 tokens");
  const std::string long_prompt = "{\"prompt\": \"0123456789\", \"response\": \"a\"}";
  EXPECT_CONTAINS(error_of([&] {
                    parse_sft_jsonl(long_prompt, "s.jsonl", options(7, OverlongPolicy::kTruncateResponse));
                  }).message(),
                  "s.jsonl:1: the prompt alone is 11 tokens");
}

// Row 0: [BOS a b | c EOD][BOS d | e EOD]; row 1: [BOS f | g h EOD][BOS | EOD] PAD PAD.
std::vector<TokenizedSample> hand_samples() {
  return {
      {sequence("ab", "c"), 3, 1}, {sequence("d", "e"), 2, 2}, {sequence("f", "gh"), 2, 3}, {sequence("", ""), 1, 4}};
}

TEST(PostTrainData, PacksTheHandExample) {
  const TokenRows rows = pack_samples(hand_samples(), 8, PackingMode::kPacked);
  ASSERT_EQ(rows.num_rows, 2);
  const int64_t a = 'a', b = 'b', c = 'c', d = 'd', e = 'e', f = 'f', g = 'g', h = 'h';
  EXPECT_EQ(rows.tokens, (std::vector<int64_t>{kBos, a, b, c, kEod, kBos, d, e, kEod,  //
                                               kBos, f, g, h, kEod, kBos, kEod, kPad, kPad}));
  // Targets of row 0: a b c EOD | BOS d e EOD; of row 1: f g h EOD | BOS EOD PAD PAD.
  EXPECT_EQ(rows.loss_mask, (std::vector<float>{0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0}));
  EXPECT_EQ(rows.segment_ids, (std::vector<int32_t>{1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2, 0}));
  EXPECT_EQ(rows.positions, (std::vector<int64_t>{0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 0}));
  ASSERT_EQ(rows.placements.size(), 4u);
  EXPECT_EQ(rows.placements[1].row, 0);
  EXPECT_EQ(rows.placements[1].column, 5);
  EXPECT_EQ(rows.placements[3].row, 1);
  EXPECT_EQ(rows.placements[3].column, 5);
}

TEST(PostTrainData, PacksFirstFitInSampleOrder) {
  // Lengths 6, 6, 3, 3 into rows of 9: the 3s fill the gaps of rows 0 and 1, in that order.
  std::vector<TokenizedSample> samples;
  for (const int64_t length : {6, 6, 3, 3}) samples.push_back({std::vector<int64_t>(length, 'x'), 1, 0});
  const TokenRows rows = pack_samples(samples, 8, PackingMode::kPacked);
  EXPECT_EQ(rows.num_rows, 2);
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 0}, {1, 0}, {0, 6}, {1, 6}};
  for (size_t i = 0; i < samples.size(); ++i) {
    EXPECT_EQ(std::pair(rows.placements[i].row, rows.placements[i].column), expected[i]) << "sample " << i;
  }
}

// Checks every layout invariant of `rows` against the samples it was built from.
void check_layout(const TokenRows& rows, const std::vector<TokenizedSample>& samples) {
  const int64_t seq = rows.seq_length;
  std::vector<int> owner(rows.num_rows * (seq + 1), -1);  // token slot -> sample
  std::vector<int32_t> segments(rows.num_rows, 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    const SamplePlacement& place = rows.placements[i];
    ASSERT_EQ(place.length, static_cast<int64_t>(samples[i].tokens.size()));
    ++segments[place.row];
    for (int64_t k = 0; k < place.length; ++k) {
      const int64_t slot = place.row * (seq + 1) + place.column + k;
      ASSERT_EQ(owner[slot], -1) << "samples overlap at row " << place.row;
      owner[slot] = static_cast<int>(i);
      EXPECT_EQ(rows.tokens[slot], samples[i].tokens[k]);  // contiguous and in order
      const int64_t t = place.column + k;
      if (t >= seq) continue;  // the row's last token is only a target
      const int64_t index = place.row * seq + t;
      EXPECT_EQ(rows.segment_ids[index], segments[place.row]);
      EXPECT_EQ(rows.positions[index], k);
      const bool response_target = k + 1 < place.length && k + 1 >= samples[i].prompt_length;
      EXPECT_EQ(rows.loss_mask[index], response_target ? 1.0f : 0.0f) << "sample " << i << " token " << k;
    }
  }
  for (int64_t r = 0; r < rows.num_rows; ++r) {
    for (int64_t t = 0; t <= seq; ++t) {
      if (owner[r * (seq + 1) + t] >= 0) continue;
      EXPECT_EQ(rows.tokens[r * (seq + 1) + t], kPad);
      if (t < seq) {
        EXPECT_EQ(rows.segment_ids[r * seq + t], 0);
      }
      if (t > 0) {
        EXPECT_EQ(rows.loss_mask[r * seq + t - 1], 0.0f) << "padding is a target";
      }
    }
  }
}

std::vector<TokenizedSample> varied_samples(int count, int64_t seq_length) {
  std::vector<TokenizedSample> samples;
  for (int i = 0; i < count; ++i) {
    const int64_t length = 2 + (i * 37) % seq_length;  // 2 .. seq_length + 1 tokens
    TokenizedSample sample{std::vector<int64_t>(length), 1 + (i * 11) % (length - 1), i + 1};
    for (int64_t k = 0; k < length; ++k) sample.tokens[k] = (i * 7 + k) % 256;
    samples.push_back(std::move(sample));
  }
  return samples;
}

TEST(PostTrainData, PackedAndUnpackedRowsKeepEverySampleWhole) {
  const std::vector<TokenizedSample> samples = varied_samples(200, 40);
  const TokenRows packed = pack_samples(samples, 40, PackingMode::kPacked);
  check_layout(packed, samples);
  const int64_t total = std::accumulate(samples.begin(), samples.end(), int64_t{0},
                                        [](int64_t sum, const TokenizedSample& s) { return sum + s.tokens.size(); });
  EXPECT_LT(packed.num_rows, 200);
  EXPECT_GE(packed.num_rows * 41, total);
  const TokenRows again = pack_samples(samples, 40, PackingMode::kPacked);
  EXPECT_EQ(again.tokens, packed.tokens);  // deterministic

  const TokenRows unpacked = pack_samples(samples, 40, PackingMode::kUnpacked);
  EXPECT_EQ(unpacked.num_rows, 200);
  check_layout(unpacked, samples);
  for (int64_t i = 0; i < 200; ++i) EXPECT_EQ(unpacked.placements[i].row, i);
}

TEST(PostTrainData, PackingRejectsSamplesThatCannotBeLaidOut) {
  std::vector<TokenizedSample> samples = {{std::vector<int64_t>(10, 'x'), 1, 5}};
  EXPECT_CONTAINS(error_of([&] { pack_samples(samples, 8, PackingMode::kPacked); }).message(),
                  "sample 0 (line 5) is 10 tokens, more than a row of seq_length + 1 = 9");
  samples = {{std::vector<int64_t>(3, 'x'), 0, 2}};
  EXPECT_CONTAINS(error_of([&] { pack_samples(samples, 8, PackingMode::kPacked); }).message(),
                  "sample 0 (line 2) has prompt_length 0 outside [1, 3]");
}

TEST(PostTrainData, DpoPairsBecomeChosenRowsThenRejectedRows) {
  const std::string text = "{\"prompt\": \"q1\", \"chosen\": \"good\", \"rejected\": \"bad\"}\n"
                           "{\"prompt\": \"longquestion\", \"chosen\": \"yes\", \"rejected\": \"no\"}\n";
  EXPECT_CONTAINS(error_of([&] { parse_dpo_jsonl(text, "p.jsonl", options(12)); }).message(),
                  "p.jsonl:2: the sample is 17 tokens (prompt 13 tokens with BOS, longer response 4 tokens");
  const DpoData data = parse_dpo_jsonl(text, "p.jsonl", options(12, OverlongPolicy::kTruncatePromptLeft));
  ASSERT_EQ(data.pairs.size(), 2u);
  EXPECT_EQ(data.num_truncated, 1);
  // 13 allowed tokens, the longer response "yes" + EOD takes 4: BOS + the last 8 prompt bytes.
  EXPECT_EQ(data.pairs[1].prompt, sequence("question", "", false));
  EXPECT_EQ(data.pairs[0].chosen, (std::vector<int64_t>{'g', 'o', 'o', 'd', kEod}));
  EXPECT_EQ(data.pairs[0].rejected, (std::vector<int64_t>{'b', 'a', 'd', kEod}));

  const DpoBatch batch = make_dpo_batch(data.pairs, 12);
  EXPECT_EQ(batch.num_pairs, 2);
  ASSERT_EQ(batch.rows.num_rows, 4);
  const auto row = [&](int64_t r) {
    return std::vector<int64_t>(batch.rows.tokens.begin() + r * 13, batch.rows.tokens.begin() + (r + 1) * 13);
  };
  auto padded = [](std::vector<int64_t> tokens) {
    tokens.resize(13, kPad);
    return tokens;
  };
  EXPECT_EQ(row(0), padded(sequence("q1", "good")));
  EXPECT_EQ(row(1), padded(sequence("question", "yes")));
  EXPECT_EQ(row(2), padded(sequence("q1", "bad")));
  EXPECT_EQ(row(3), padded(sequence("question", "no")));
  // Row 2 (rejected of pair 0): inputs BOS q 1 b a d; targets b a d EOD are the response.
  const std::vector<float> mask(batch.rows.loss_mask.begin() + 2 * 12, batch.rows.loss_mask.begin() + 3 * 12);
  EXPECT_EQ(mask, (std::vector<float>{0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}));
}

TEST(PostTrainData, RlPromptsKeepIdsAnswersAndTruncateOnlyFromTheLeft) {
  const std::string text = "{\"prompt\": \"12+30=\", \"answer\": \"42\"}\n\n"
                           "{\"prompt\": \"a very long prompt\", \"answer\": \" 7 \"}\n";
  PostTrainDataOptions o = options(32);
  o.max_prompt_tokens = 8;
  const Error reject = error_of([&] { parse_rl_jsonl(text, "rl.jsonl", o); });
  EXPECT_CONTAINS(reject.message(), "rl.jsonl:3: the prompt is 19 tokens with BOS, more than the 8");
  o.overlong = OverlongPolicy::kTruncateResponse;
  EXPECT_CONTAINS(error_of([&] { parse_rl_jsonl(text, "rl.jsonl", o); }).message(), "no response to cut");

  o.overlong = OverlongPolicy::kTruncatePromptLeft;
  const RlData data = parse_rl_jsonl(text, "rl.jsonl", o);
  ASSERT_EQ(data.prompts.size(), 2u);
  EXPECT_EQ(data.num_truncated, 1);
  EXPECT_EQ(data.prompts[0].prompt_id, 0);
  EXPECT_EQ(data.prompts[0].line, 1);
  EXPECT_EQ(data.prompts[0].answer, "42");
  EXPECT_EQ(data.prompts[0].prompt, sequence("12+30=", "", false));
  EXPECT_EQ(data.prompts[1].prompt_id, 1);
  EXPECT_EQ(data.prompts[1].line, 3);
  EXPECT_EQ(data.prompts[1].answer, " 7 ");  // the reward trims, the data keeps what the file says
  EXPECT_EQ(data.prompts[1].prompt_text, "a very long prompt");
  EXPECT_EQ(data.prompts[1].prompt, sequence(" prompt", "", false));
  EXPECT_TRUE(data.prompts[1].truncated);

  o.max_prompt_tokens = 33;
  EXPECT_EQ(error_of([&] { parse_rl_jsonl(text, "rl.jsonl", o); }).kind(), ErrorKind::kConfig);
}

}  // namespace
}  // namespace tandem::runtime
