// Rewards (reward.h): exact match of an extracted answer, a format regex, and an external
// command. The command gets the whole batch at once, so a reward model or a sandbox it starts
// is paid for once per batch, not once per completion.
#include "launch/post_train/reward.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <regex>

#include "launch/post_train/subprocess.h"
#include "runtime/error.h"
#include "runtime/json.h"

namespace tandem::launch {
namespace {

std::string_view trim(std::string_view text) {
  constexpr std::string_view kWhitespace = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(kWhitespace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kWhitespace) - begin + 1);
}

// ECMAScript syntax, matched breadth-first where the library offers it (libstdc++'s
// __polynomial): its default depth-first matcher recurses once per character (a 40 KB
// completion overflowed an 8 MB stack) and backtracks exponentially on patterns like (a*)*b
// (over 20 s on 26 characters). Breadth-first matching takes linear stack and polynomial time;
// the price is no back-references and, among alternatives, the longer match (a|ab finds ab).
constexpr std::regex::flag_type kRegexFlags = std::regex::ECMAScript
#if defined(__GLIBCXX__)
                                              | std::regex_constants::__polynomial
#endif
    ;

// A bad regex is a config error naming the key that set it.
std::regex compile(const std::string& text, const std::string& key) {
  try {
    return std::regex(text, kRegexFlags);
  } catch (const std::regex_error& error) {
    throw config::KeyError(key, fmt::format("`{}` is not a valid ECMAScript regex: {}", text, error.what()), __FILE__,
                           __LINE__);
  }
}

// The last match's first group (or the whole match), trimmed.
std::optional<std::string> last_answer(const std::string& completion, const std::regex& regex) {
  std::optional<std::string> found;
  for (auto match = std::sregex_iterator(completion.begin(), completion.end(), regex); match != std::sregex_iterator();
       ++match) {
    found = match->size() > 1 ? match->str(1) : match->str(0);
  }
  if (found) *found = std::string(trim(*found));
  return found;
}

constexpr const char* kAnswerRegexKey = "post_train.reward.answer_regex";
constexpr const char* kPatternKey = "post_train.reward.pattern";

class ExactMatchReward final : public Reward {
 public:
  explicit ExactMatchReward(const RewardConfig& config)
      : Reward(config.correct_at), text_(config.answer_regex), regex_(compile(text_, kAnswerRegexKey)) {}

  std::string describe() const override {
    return fmt::format("exact_match (the last match of `{}`, trimmed, against the trimmed answer)", text_);
  }

 protected:
  std::vector<double> rewards(std::span<const RewardItem> items, const std::string&) const override {
    std::vector<double> out;
    out.reserve(items.size());
    for (const RewardItem& item : items) {
      const std::optional<std::string> answer = last_answer(item.completion, regex_);
      out.push_back(answer.has_value() && *answer == trim(item.answer) ? 1.0 : 0.0);
    }
    return out;
  }

 private:
  std::string text_;
  std::regex regex_;
};

class RegexReward final : public Reward {
 public:
  explicit RegexReward(const RewardConfig& config)
      : Reward(config.correct_at), text_(config.pattern), regex_(compile(text_, kPatternKey)) {}

  std::string describe() const override { return fmt::format("regex (the completion contains `{}`)", text_); }

 protected:
  std::vector<double> rewards(std::span<const RewardItem> items, const std::string&) const override {
    std::vector<double> out;
    out.reserve(items.size());
    for (const RewardItem& item : items) out.push_back(std::regex_search(item.completion, regex_) ? 1.0 : 0.0);
    return out;
  }

 private:
  std::string text_;
  std::regex regex_;
};

// A finite number filling the whole (trimmed) line, or nullopt.
std::optional<double> parse_reward(std::string_view line) {
  line = trim(line);
  double value = 0;
  const auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), value);
  if (line.empty() || error != std::errc() || end != line.data() + line.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::string clip(std::string_view text, size_t max_bytes = 200) {
  if (text.size() <= max_bytes) return std::string(text);
  return fmt::format("{}... ({} bytes)", text.substr(0, max_bytes), text.size());
}

class CommandReward final : public Reward {
 public:
  explicit CommandReward(const RewardConfig& config)
      : Reward(config.correct_at), command_(config.command), timeout_s_(config.timeout_s) {}

  std::string describe() const override {
    return fmt::format("command `{}` (timeout {} s per batch)", command_, timeout_s_);
  }

 protected:
  std::vector<double> rewards(std::span<const RewardItem> items, const std::string& rollouts_path) const override {
    std::string input;
    for (const RewardItem& item : items) {
      const nlohmann::ordered_json line = {
          {"prompt", item.prompt}, {"completion", item.completion}, {"answer", item.answer}};
      input += tandem::json::dump(line) + "\n";  // invalid UTF-8 (a byte-level model's) becomes U+FFFD
    }
    const SubprocessResult run = run_subprocess(command_, input, timeout_s_);
    check_exit(run, items.size(), rollouts_path);
    return parse_output(run, items.size(), rollouts_path);
  }

 private:
  // What every failure message ends with: the command's last words and where the rollouts are.
  static std::string context(const SubprocessResult& run, const std::string& rollouts_path) {
    const std::string stderr_text = trim(run.err_tail).empty()
                                        ? "; it wrote nothing to stderr"
                                        : fmt::format("; its stderr ended with:\n{}", tail_lines(run.err_tail, 20));
    return stderr_text +
           (rollouts_path.empty() ? "" : fmt::format("\nthis batch's rollouts are kept in {}", rollouts_path));
  }

  void check_exit(const SubprocessResult& run, size_t count, const std::string& rollouts_path) const {
    if (run.timed_out) {
      TANDEM_THROW(kRuntime,
                   "reward command `{}` did not answer {} completions within {} s; killed it (SIGTERM, then SIGKILL "
                   "to its process group). Make it faster or raise post_train.reward.timeout_s{}",
                   command_, count, timeout_s_, context(run, rollouts_path));
    }
    if (run.signal != 0) {
      TANDEM_THROW(kRuntime, "reward command `{}` was killed by signal {} ({}) while scoring {} completions{}",
                   command_, run.signal, strsignal(run.signal), count, context(run, rollouts_path));
    }
    TANDEM_CHECK_KIND(kRuntime, run.exit_code == 0,
                      "reward command `{}` exited with status {} while scoring {} completions{}", command_,
                      run.exit_code, count, context(run, rollouts_path));
  }

  std::vector<double> parse_output(const SubprocessResult& run, size_t count, const std::string& rollouts_path) const {
    std::string_view out = run.out;
    if (out.ends_with('\n')) out.remove_suffix(1);
    std::vector<double> rewards;
    std::string_view last;
    for (size_t begin = 0; !out.empty() && begin <= out.size();) {
      const size_t end = std::min(out.find('\n', begin), out.size());
      last = out.substr(begin, end - begin);
      const std::optional<double> reward = parse_reward(last);
      TANDEM_CHECK_KIND(kRuntime, reward.has_value(),
                        "reward command `{}` printed a line that is not a number: line {}: `{}` (expected one finite "
                        "number per line, one line per completion, in input order){}",
                        command_, rewards.size() + 1, clip(last), context(run, rollouts_path));
      rewards.push_back(*reward);
      begin = end + 1;
    }
    TANDEM_CHECK_KIND(kRuntime, rewards.size() == count,
                      "reward command `{}` printed {} reward lines for {} completions (expected one per completion, in "
                      "input order){}{}",
                      command_, rewards.size(), count,
                      rewards.empty() ? "" : fmt::format("; its last line ({}) was `{}`", rewards.size(), clip(last)),
                      context(run, rollouts_path));
    return rewards;
  }

  std::string command_;
  double timeout_s_;
};

}  // namespace

void RewardConfig::validate() const {
  compile(answer_regex, kAnswerRegexKey);
  compile(pattern, kPatternKey);
  TANDEM_CONFIG_REQUIRE(kind != RewardKind::kCommand || !trim(command).empty(), "post_train.reward.command",
                        "is empty; kind: command needs a shell command that reads JSONL {{\"prompt\", \"completion\", "
                        "\"answer\"}} lines on stdin and prints one reward per line");
  TANDEM_CONFIG_REQUIRE(std::isfinite(timeout_s) && timeout_s > 0, "post_train.reward.timeout_s",
                        "must be a positive number of seconds (got {})", timeout_s);
  TANDEM_CONFIG_REQUIRE(std::isfinite(correct_at), "post_train.reward.correct_at", "must be a finite number (got {})",
                        correct_at);
}

double RewardScores::accuracy() const {
  if (correct.empty()) return 0.0;
  int64_t hits = 0;
  for (const char c : correct) hits += c != 0 ? 1 : 0;
  return static_cast<double>(hits) / static_cast<double>(correct.size());
}

RewardScores Reward::score(std::span<const RewardItem> items, const std::string& rollouts_path) const {
  RewardScores scores;
  scores.rewards = rewards(items, rollouts_path);
  TANDEM_CHECK(scores.rewards.size() == items.size(), "{} rewards for {} items", scores.rewards.size(), items.size());
  scores.correct.reserve(items.size());
  for (const double reward : scores.rewards) scores.correct.push_back(reward >= correct_at_ ? 1 : 0);
  return scores;
}

std::unique_ptr<Reward> make_reward(const RewardConfig& config) {
  config.validate();
  switch (config.kind) {
    case RewardKind::kExactMatch: return std::make_unique<ExactMatchReward>(config);
    case RewardKind::kRegex: return std::make_unique<RegexReward>(config);
    case RewardKind::kCommand: return std::make_unique<CommandReward>(config);
  }
  TANDEM_THROW(kInternal, "unknown reward kind {}", static_cast<int>(config.kind));
}

std::optional<std::string> extract_answer(const std::string& completion, const std::string& answer_regex) {
  return last_answer(completion, compile(answer_regex, kAnswerRegexKey));
}

}  // namespace tandem::launch
