// Post-training JSONL readers and row layout (post_train_data.h). Lines are parsed one at a
// time with the strict JSON reader, so an error can name its file line; lengths are decided
// per sample before anything is laid out, so a reject stops before any work is wasted.
#include "runtime/data/post_train_data.h"

#include <algorithm>
#include <array>

#include "runtime/data/byte_tokenizer.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"

namespace tandem::runtime {
namespace {

using nlohmann::json;

// Where a record came from, for messages: "data/sft.jsonl:12".
struct Where {
  std::string_view path;
  int64_t line = 0;
  int64_t index = 0;  // 0-based among the file's records
};

std::string at(const Where& where) { return fmt::format("{}:{}", where.path, where.line); }

bool is_blank(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

// json::parse counts lines inside the one-line document; the file's line is what helps.
std::string without_document_line(std::string message) {
  const std::string_view inner = "at line 1, column";
  const size_t found = message.find(inner);
  if (found != std::string::npos) message.replace(found, inner.size(), "at column");
  return message;
}

json parse_record(std::string_view line, const Where& where) {
  json record;
  try {
    record = tandem::json::parse(line);
  } catch (const Error& error) {
    TANDEM_THROW(kInput, "{}: {}", at(where), without_document_line(error.message()));
  }
  TANDEM_CHECK_INPUT(record.is_object(), "{}: expected a JSON object (one record per line), got {}", at(where),
                     tandem::json::type_name(record));
  return record;
}

// Calls fn(record, where) for every non-blank line of `text`; a text without records is an error.
template <class Fn>
void for_each_record(std::string_view text, std::string_view path, std::string_view form, Fn&& fn) {
  Where where{path, 0, 0};
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(begin, end - begin);
    ++where.line;
    begin = end + 1;
    if (is_blank(line)) continue;
    fn(parse_record(line, where), where);
    ++where.index;
  }
  TANDEM_CHECK_INPUT(where.index > 0,
                     "{}: no records: the file is empty or holds only blank lines; expected one {} per line", path,
                     form);
}

// The string `key` of `record`, or an error naming the line, the field and the expected form.
// `owner` names the object when it is not the record itself ("messages[2]").
std::string string_field(const json& record, std::string_view key, const Where& where, std::string_view form,
                         std::string_view owner = {}) {
  const std::string name = owner.empty() ? std::string(key) : fmt::format("{}.{}", owner, key);
  const auto found = record.find(key);
  TANDEM_CHECK_INPUT(found != record.end(), "{}: missing field \"{}\"; expected {}", at(where), name, form);
  TANDEM_CHECK_INPUT(found->is_string(), "{}: field \"{}\" must be a string, got {}", at(where), name,
                     tandem::json::type_name(*found));
  return found->get<std::string>();
}

std::vector<int64_t> encode(std::string_view text, bool add_bos, bool add_eod) {
  const std::vector<int32_t> ids = ByteTokenizer().encode(text, add_bos, add_eod);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

// Keeps BOS and the last `keep - 1` prompt tokens.
void truncate_prompt_left(std::vector<int64_t>& prompt, int64_t keep) {
  prompt.erase(prompt.begin() + 1, prompt.end() - (keep - 1));
}

constexpr std::string_view kSftForm =
    "{\"prompt\": str, \"response\": str} or {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", "
    "\"content\": str}, ...]}";
constexpr std::string_view kDpoForm = "{\"prompt\": str, \"chosen\": str, \"rejected\": str}";
constexpr std::string_view kRlForm = "{\"prompt\": str, \"answer\": str}";

struct PromptResponse {
  std::string prompt;
  std::string response;
};

// Renders a chat record with the template (post_train_data.h says how).
PromptResponse render_chat(const json& messages, const Where& where, const ChatTemplate& chat) {
  TANDEM_CHECK_INPUT(messages.is_array() && !messages.empty(),
                     "{}: field \"messages\" must be a non-empty array of {{\"role\", \"content\"}} objects, got {}",
                     at(where), messages.is_array() ? "an empty array" : tandem::json::type_name(messages));
  PromptResponse out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& message = messages[i];
    const std::string name = fmt::format("messages[{}]", i);
    TANDEM_CHECK_INPUT(message.is_object(), "{}: {} must be an object with \"role\" and \"content\", got {}", at(where),
                       name, tandem::json::type_name(message));
    const std::string form = name + " with \"role\" and \"content\" strings";
    const std::string role = string_field(message, "role", where, form, name);
    const std::string content = string_field(message, "content", where, form, name);
    const bool last = i + 1 == messages.size();
    TANDEM_CHECK_INPUT(role == "system" || role == "user" || role == "assistant",
                       "{}: {}.role is \"{}\"; expected \"system\", \"user\" or \"assistant\"", at(where), name, role);
    TANDEM_CHECK_INPUT(!last || role == "assistant",
                       "{}: the last message ({}) is from \"{}\"; a chat sample must end with the assistant's "
                       "response, which is what the model learns",
                       at(where), name, role);
    if (last) {
      out.prompt += chat.assistant_prefix;
      out.response = content + chat.assistant_suffix;
    } else if (role == "system") {
      out.prompt += chat.system_prefix + content + chat.system_suffix;
    } else if (role == "user") {
      out.prompt += chat.user_prefix + content + chat.user_suffix;
    } else {
      out.prompt += chat.assistant_prefix + content + chat.assistant_suffix;
    }
  }
  return out;
}

PromptResponse sft_texts(const json& record, const Where& where, const ChatTemplate& chat) {
  const auto messages = record.find("messages");
  if (messages == record.end()) {
    return {string_field(record, "prompt", where, kSftForm), string_field(record, "response", where, kSftForm)};
  }
  TANDEM_CHECK_INPUT(!record.contains("prompt") && !record.contains("response"),
                     "{}: the record has both \"messages\" and \"prompt\"/\"response\"; give one form: {}", at(where),
                     kSftForm);
  return render_chat(*messages, where, chat);
}

std::string fix_hint(const PostTrainDataOptions& options) {
  return fmt::format("shorten it, raise seq_length, or set {} to truncate_prompt_left or truncate_response",
                     options.policy_key);
}

// Fits BOS + prompt and the responses (each + EOD) into `limit` tokens each, by the policy.
// Returns whether anything was cut. DPO passes two responses sharing one prompt.
bool fit_sequences(std::vector<int64_t>& prompt, std::span<std::vector<int64_t>* const> responses, int64_t limit,
                   const Where& where, const PostTrainDataOptions& options) {
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  int64_t longest = 0;
  for (const auto* response : responses) longest = std::max(longest, static_cast<int64_t>(response->size()));
  if (prompt_tokens + longest <= limit) return false;
  const std::string lengths = fmt::format("prompt {} tokens with BOS, {}response {} tokens with EOD", prompt_tokens,
                                          responses.size() > 1 ? "longer " : "", longest);
  switch (options.overlong) {
    case OverlongPolicy::kReject:
      TANDEM_THROW(kInput, "{}: the sample is {} tokens ({}), more than seq_length + 1 = {}; {}", at(where),
                   prompt_tokens + longest, lengths, limit, fix_hint(options));
    case OverlongPolicy::kTruncatePromptLeft:
      TANDEM_CHECK_INPUT(
          limit - longest >= 1,
          "{}: the response alone is {} tokens with EOD, leaving no room for BOS in seq_length + 1 = {}, "
          "so truncate_prompt_left cannot fit it; shorten it, raise seq_length, or set {} to "
          "truncate_response",
          at(where), longest, limit, options.policy_key);
      truncate_prompt_left(prompt, limit - longest);
      return true;
    case OverlongPolicy::kTruncateResponse:
      TANDEM_CHECK_INPUT(limit - prompt_tokens >= 1,
                         "{}: the prompt alone is {} tokens with BOS, leaving no room in seq_length + 1 = {} for "
                         "a response, so truncate_response cannot fit it; shorten it, raise seq_length, or set {} "
                         "to truncate_prompt_left",
                         at(where), prompt_tokens, limit, options.policy_key);
      for (auto* response : responses) {
        if (static_cast<int64_t>(response->size()) > limit - prompt_tokens) response->resize(limit - prompt_tokens);
      }
      return true;
  }
  TANDEM_THROW(kInternal, "unknown overlong policy {}", static_cast<int>(options.overlong));
}

// An RL prompt over its limit can only lose its oldest tokens: it has no response to cut.
void check_rl_prompt_fits(const PostTrainDataOptions& options, int64_t tokens, int64_t limit, const Where& where) {
  if (options.overlong == OverlongPolicy::kTruncatePromptLeft) return;
  TANDEM_THROW(kInput,
               "{}: the prompt is {} tokens with BOS, more than the {} an RL prompt may take (the rest of the "
               "sequence is for the response); shorten it, raise seq_length or max_prompt_tokens, or set {} to "
               "truncate_prompt_left{}",
               at(where), tokens, limit, options.policy_key,
               options.overlong == OverlongPolicy::kTruncateResponse ? " (truncate_response has no response to cut)"
                                                                     : "");
}

void check_options(const PostTrainDataOptions& options) {
  TANDEM_CHECK_CONFIG(options.seq_length >= 1, "post-training data: seq_length must be >= 1 (got {})",
                      options.seq_length);
  TANDEM_CHECK_CONFIG(options.max_prompt_tokens >= 0 && options.max_prompt_tokens <= options.seq_length,
                      "post-training data: max_prompt_tokens must lie in [0, seq_length = {}] so that a generated "
                      "token fits after the prompt (got {}; 0 means seq_length)",
                      options.seq_length, options.max_prompt_tokens);
}

// First fit in O(log n) per sample: a max tree over the rows' free tokens, with one leaf per
// possible row (there are never more rows than samples). Unopened rows are all free and lie to
// the right of every opened one, so "the leftmost row with room" opens a new row exactly when
// no open row has room.
class FirstFitRows {
 public:
  FirstFitRows(int64_t max_rows, int64_t capacity) : leaves_(1) {
    while (leaves_ < max_rows) leaves_ *= 2;
    free_.assign(2 * leaves_, capacity);
  }

  // The leftmost row with at least `tokens` free (the caller guarantees tokens <= capacity).
  int64_t first_with(int64_t tokens) const {
    int64_t node = 1;
    while (node < leaves_) node = free_[2 * node] >= tokens ? 2 * node : 2 * node + 1;
    return node - leaves_;
  }
  int64_t free_tokens(int64_t row) const { return free_[leaves_ + row]; }

  void take(int64_t row, int64_t tokens) {
    int64_t node = leaves_ + row;
    free_[node] -= tokens;
    for (node /= 2; node >= 1; node /= 2) free_[node] = std::max(free_[2 * node], free_[2 * node + 1]);
  }

 private:
  int64_t leaves_;
  std::vector<int64_t> free_;
};

void check_sample(const TokenizedSample& sample, size_t index, int64_t capacity) {
  const int64_t length = static_cast<int64_t>(sample.tokens.size());
  TANDEM_CHECK_INPUT(length <= capacity,
                     "sample {} (line {}) is {} tokens, more than a row of seq_length + 1 = {}; the readers cut or "
                     "reject such samples, so build rollouts within the row length too",
                     index, sample.line, length, capacity);
  TANDEM_CHECK_INPUT(sample.prompt_length >= 1 && sample.prompt_length <= length,
                     "sample {} (line {}) has prompt_length {} outside [1, {}]: its first token (BOS) is a prompt "
                     "token, since nothing predicts it",
                     index, sample.line, sample.prompt_length, length);
}

std::vector<SamplePlacement> place_samples(std::span<const TokenizedSample> samples, int64_t capacity,
                                           PackingMode mode) {
  std::vector<SamplePlacement> placements(samples.size());
  if (mode == PackingMode::kUnpacked) {
    for (size_t i = 0; i < samples.size(); ++i) {
      placements[i] = {static_cast<int64_t>(i), 0, static_cast<int64_t>(samples[i].tokens.size())};
    }
    return placements;
  }
  FirstFitRows rows(static_cast<int64_t>(samples.size()), capacity);
  for (size_t i = 0; i < samples.size(); ++i) {
    const int64_t length = static_cast<int64_t>(samples[i].tokens.size());
    const int64_t row = rows.first_with(length);
    placements[i] = {row, capacity - rows.free_tokens(row), length};
    rows.take(row, length);
  }
  return placements;
}

// Writes one placed sample into the rows; `segment` is its 1-based number within its row.
void write_sample(const TokenizedSample& sample, const SamplePlacement& place, int32_t segment, TokenRows& rows) {
  const int64_t seq = rows.seq_length;
  std::copy(sample.tokens.begin(), sample.tokens.end(), rows.tokens.begin() + place.row * (seq + 1) + place.column);
  // Input t (a column of the row) predicts token t + 1, which must lie in the same sample.
  const int64_t end = std::min(place.column + place.length, seq);
  for (int64_t t = place.column; t < end; ++t) {
    const int64_t index = place.row * seq + t;
    const int64_t target = t + 1 - place.column;  // the target's position within the sample
    rows.segment_ids[index] = segment;
    rows.positions[index] = t - place.column;
    rows.loss_mask[index] = target >= sample.prompt_length && target < place.length ? 1.0f : 0.0f;
  }
}

}  // namespace

SftData parse_sft_jsonl(std::string_view text, std::string_view path, const PostTrainDataOptions& options) {
  check_options(options);
  SftData data;
  for_each_record(text, path, kSftForm, [&](const json& record, const Where& where) {
    const PromptResponse texts = sft_texts(record, where, options.chat_template);
    std::vector<int64_t> prompt = encode(texts.prompt, /*add_bos=*/true, /*add_eod=*/false);
    std::vector<int64_t> response = encode(texts.response, /*add_bos=*/false, /*add_eod=*/true);
    std::array<std::vector<int64_t>*, 1> responses{&response};
    TokenizedSample sample;
    sample.truncated = fit_sequences(prompt, responses, options.seq_length + 1, where, options);
    sample.line = where.line;
    sample.prompt_length = static_cast<int64_t>(prompt.size());
    sample.tokens = std::move(prompt);
    sample.tokens.insert(sample.tokens.end(), response.begin(), response.end());
    data.num_truncated += sample.truncated ? 1 : 0;
    data.samples.push_back(std::move(sample));
  });
  return data;
}

DpoData parse_dpo_jsonl(std::string_view text, std::string_view path, const PostTrainDataOptions& options) {
  check_options(options);
  DpoData data;
  for_each_record(text, path, kDpoForm, [&](const json& record, const Where& where) {
    PreferencePair pair;
    pair.prompt = encode(string_field(record, "prompt", where, kDpoForm), true, false);
    pair.chosen = encode(string_field(record, "chosen", where, kDpoForm), false, true);
    pair.rejected = encode(string_field(record, "rejected", where, kDpoForm), false, true);
    std::array<std::vector<int64_t>*, 2> responses{&pair.chosen, &pair.rejected};
    pair.truncated = fit_sequences(pair.prompt, responses, options.seq_length + 1, where, options);
    pair.line = where.line;
    data.num_truncated += pair.truncated ? 1 : 0;
    data.pairs.push_back(std::move(pair));
  });
  return data;
}

RlData parse_rl_jsonl(std::string_view text, std::string_view path, const PostTrainDataOptions& options) {
  check_options(options);
  const int64_t limit = options.max_prompt_tokens > 0 ? options.max_prompt_tokens : options.seq_length;
  RlData data;
  for_each_record(text, path, kRlForm, [&](const json& record, const Where& where) {
    RlPrompt prompt;
    prompt.prompt_id = where.index;
    prompt.line = where.line;
    prompt.prompt_text = string_field(record, "prompt", where, kRlForm);
    prompt.answer = string_field(record, "answer", where, kRlForm);
    prompt.prompt = encode(prompt.prompt_text, true, false);
    const int64_t tokens = static_cast<int64_t>(prompt.prompt.size());
    if (tokens > limit) {
      check_rl_prompt_fits(options, tokens, limit, where);
      truncate_prompt_left(prompt.prompt, limit);
      prompt.truncated = true;
      ++data.num_truncated;
    }
    data.prompts.push_back(std::move(prompt));
  });
  return data;
}

SftData read_sft_jsonl(const std::string& path, const PostTrainDataOptions& options) {
  return parse_sft_jsonl(read_file(path), path, options);
}

DpoData read_dpo_jsonl(const std::string& path, const PostTrainDataOptions& options) {
  return parse_dpo_jsonl(read_file(path), path, options);
}

RlData read_rl_jsonl(const std::string& path, const PostTrainDataOptions& options) {
  return parse_rl_jsonl(read_file(path), path, options);
}

TokenRows pack_samples(std::span<const TokenizedSample> samples, int64_t seq_length, PackingMode mode) {
  TANDEM_CHECK_CONFIG(seq_length >= 1, "post-training rows: seq_length must be >= 1 (got {})", seq_length);
  for (size_t i = 0; i < samples.size(); ++i) check_sample(samples[i], i, seq_length + 1);
  TokenRows rows;
  rows.seq_length = seq_length;
  rows.placements = place_samples(samples, seq_length + 1, mode);
  for (const SamplePlacement& place : rows.placements) rows.num_rows = std::max(rows.num_rows, place.row + 1);
  rows.tokens.assign(rows.num_rows * (seq_length + 1), ByteTokenizer::kPad);
  rows.loss_mask.assign(rows.num_rows * seq_length, 0.0f);
  rows.segment_ids.assign(rows.num_rows * seq_length, 0);
  rows.positions.assign(rows.num_rows * seq_length, 0);
  std::vector<int32_t> segments(rows.num_rows, 0);  // samples placed so far, per row
  for (size_t i = 0; i < samples.size(); ++i) {
    const SamplePlacement& place = rows.placements[i];
    write_sample(samples[i], place, ++segments[place.row], rows);
  }
  return rows;
}

DpoBatch make_dpo_batch(std::span<const PreferencePair> pairs, int64_t seq_length) {
  std::vector<TokenizedSample> sequences(2 * pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    const PreferencePair& pair = pairs[i];
    for (const auto& [response, slot] : {std::pair{&pair.chosen, i}, std::pair{&pair.rejected, pairs.size() + i}}) {
      TokenizedSample& sequence = sequences[slot];
      sequence.tokens = pair.prompt;
      sequence.tokens.insert(sequence.tokens.end(), response->begin(), response->end());
      sequence.prompt_length = static_cast<int64_t>(pair.prompt.size());
      sequence.line = pair.line;
    }
  }
  DpoBatch batch;
  batch.num_pairs = static_cast<int64_t>(pairs.size());
  batch.rows = pack_samples(sequences, seq_length, PackingMode::kUnpacked);
  return batch;
}

}  // namespace tandem::runtime
