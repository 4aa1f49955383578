// Post-training data: JSONL readers for SFT, DPO and RL files, tokenized with the byte
// tokenizer, and the token rows a trainer feeds the model (packed or one sample per row).
// A sample is BOS + prompt + response + EOD; loss falls only on response targets (EOD
// included), so SFT, RFT, DPO and GRPO share one row layout: tokens [B, T+1] (inputs
// tokens[:, :T], targets tokens[:, 1:]) with a loss mask, segment ids and per-sample positions
// that let the model keep packed samples from attending to each other.
// Invariants: every malformed line is an Error(kInput) naming path:line and the field; a sample
// longer than a row is rejected or truncated as the caller chose, never silently (truncations
// are counted in the result). Everything here is a pure function of its arguments: deterministic
// and safe to call from several threads. Torch-free, like the rest of runtime/data/: buffers are
// row-major std::vectors that a trainer wraps with at::from_blob.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config_schema.h"

namespace tandem::runtime {

// What to do with a sample of more than seq_length + 1 tokens (a prompt of more than
// max_prompt_tokens for RL prompts).
enum class OverlongPolicy {
  kReject,              // Error(kInput) naming path:line and the lengths
  kTruncatePromptLeft,  // drop the oldest prompt tokens (BOS is kept); the response stays whole
  kTruncateResponse,    // cut the response's tail, EOD included (the model must not learn to stop there)
};
inline constexpr config::EnumNames<OverlongPolicy, 3> kOverlongPolicyNames{
    {{OverlongPolicy::kReject, "reject"},
     {OverlongPolicy::kTruncatePromptLeft, "truncate_prompt_left"},
     {OverlongPolicy::kTruncateResponse, "truncate_response"}}};
constexpr const auto& config_enum_names(OverlongPolicy) { return kOverlongPolicyNames; }

// How a chat `{"messages": [...]}` line becomes prompt and response text. Each message is
// prefix + content + suffix of its role. The last message must be the assistant's: it is the
// response (content + assistant_suffix); everything before it, plus assistant_prefix, is the
// prompt, so a model generates from exactly where the prompt ends.
struct ChatTemplate {
  std::string system_prefix = "System: ";
  std::string system_suffix = "\n";
  std::string user_prefix = "User: ";
  std::string user_suffix = "\n";
  std::string assistant_prefix = "Assistant: ";
  std::string assistant_suffix = "\n";
};

struct PostTrainDataOptions {
  int64_t seq_length = 128;  // T: a sample (BOS + prompt + response + EOD) takes at most T + 1 tokens
  OverlongPolicy overlong = OverlongPolicy::kReject;
  // RL prompts: at most this many tokens (BOS included), leaving room for the generated
  // response; 0 means seq_length (room for one token).
  int64_t max_prompt_tokens = 0;
  ChatTemplate chat_template;
  std::string policy_key = "post_train.overlong";  // the setting that chose `overlong`, for messages
};

// One tokenized sequence: tokens[0, prompt_length) are the prompt (BOS first), the rest the
// response (EOD last unless kTruncateResponse cut it). Also what a trainer builds from rollouts.
struct TokenizedSample {
  std::vector<int64_t> tokens;
  int64_t prompt_length = 0;
  int64_t line = 0;  // 1-based line of the JSONL file (0 when not from a file)
  bool truncated = false;
};

struct SftData {
  std::vector<TokenizedSample> samples;  // file order, blank lines skipped
  int64_t num_truncated = 0;             // samples shortened by the overlong policy
};

// A preference pair. Both sequences share the prompt (truncated once for both).
struct PreferencePair {
  std::vector<int64_t> prompt;    // BOS + prompt
  std::vector<int64_t> chosen;    // response + EOD
  std::vector<int64_t> rejected;  // response + EOD
  int64_t line = 0;
  bool truncated = false;
};

struct DpoData {
  std::vector<PreferencePair> pairs;
  int64_t num_truncated = 0;  // pairs with any part shortened
};

struct RlPrompt {
  int64_t prompt_id = 0;        // 0-based index among the file's records (blank lines not counted)
  int64_t line = 0;             // 1-based line of the JSONL file
  std::string prompt_text;      // as the file has it (not truncated), for rewards and logs
  std::vector<int64_t> prompt;  // BOS + prompt (after truncation)
  std::string answer;           // the reference answer, for the reward
  bool truncated = false;
};

struct RlData {
  std::vector<RlPrompt> prompts;
  int64_t num_truncated = 0;
};

// Readers. `path` names the file in messages; the parse_* forms take the file's text (for
// in-memory data and tests). Extra fields on a line are ignored (datasets carry ids and
// sources). Throw Error(kIo) when the file cannot be read, and Error(kInput) naming path:line
// for: bad JSON, a line that is not an object, a missing or non-string field, a chat line with
// an unknown role or not ending with the assistant, an overlong sample under kReject (or one no
// truncation can fit), and a file without records.
//  SFT: {"prompt": str, "response": str} or {"messages": [{"role": ..., "content": str}, ...]}.
SftData read_sft_jsonl(const std::string& path, const PostTrainDataOptions& options);
SftData parse_sft_jsonl(std::string_view text, std::string_view path, const PostTrainDataOptions& options);
//  DPO: {"prompt": str, "chosen": str, "rejected": str}.
DpoData read_dpo_jsonl(const std::string& path, const PostTrainDataOptions& options);
DpoData parse_dpo_jsonl(std::string_view text, std::string_view path, const PostTrainDataOptions& options);
//  RL: {"prompt": str, "answer": str}. The length limit is max_prompt_tokens.
RlData read_rl_jsonl(const std::string& path, const PostTrainDataOptions& options);
RlData parse_rl_jsonl(std::string_view text, std::string_view path, const PostTrainDataOptions& options);

// Where one sample landed in a TokenRows.
struct SamplePlacement {
  int64_t row = 0;
  int64_t column = 0;  // its first token is tokens[row, column]
  int64_t length = 0;  // its number of tokens
};

// Rows of token sequences for the model, all [B, T] buffers row-major:
//  tokens      [B, T+1] int64: padded with ByteTokenizer::kPad
//  loss_mask   [B, T] float: 1 where target tokens[b, t+1] is a response token (EOD included)
//              of the sample that input t belongs to; 0 on prompt targets, on targets in the
//              next sample, and on padding
//  segment_ids [B, T] int32: 1..n for the n samples of a row (in placement order), 0 on padding
//  positions   [B, T] int64: position of input t inside its own sample (0 at its BOS); 0 on
//              padding
// A model masks attention to (same segment id, causal) and uses `positions` for rotary.
struct TokenRows {
  int64_t num_rows = 0;    // B
  int64_t seq_length = 0;  // T
  std::vector<int64_t> tokens;
  std::vector<float> loss_mask;
  std::vector<int32_t> segment_ids;
  std::vector<int64_t> positions;
  std::vector<SamplePlacement> placements;  // placements[i]: where samples[i] went
};

enum class PackingMode {
  kPacked,    // first fit in sample order: each sample goes to the first row with room
  kUnpacked,  // row i holds sample i alone, right-padded
};

// Lays `samples` out in rows of seq_length + 1 tokens. Throws Error(kInput) naming the
// sample's line when one is longer than seq_length + 1 tokens or has prompt_length outside
// [1, size] (the first token must be a prompt token: nothing predicts it).
TokenRows pack_samples(std::span<const TokenizedSample> samples, int64_t seq_length, PackingMode mode);

// DPO rows: rows [0, P) hold the chosen sequences of pairs 0..P-1 and rows [P, 2P) the rejected
// ones (pair i is rows i and P + i), one sequence per row; the loss mask covers each response.
struct DpoBatch {
  int64_t num_pairs = 0;  // P
  TokenRows rows;         // 2P rows
};
DpoBatch make_dpo_batch(std::span<const PreferencePair> pairs, int64_t seq_length);

}  // namespace tandem::runtime
