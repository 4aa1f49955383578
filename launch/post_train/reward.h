// Rewards for post-training rollouts: each scores a batch of (prompt, completion, reference
// answer) with one number per item, plus a "correct" flag per item for accuracy logging.
// Built-in rule rewards (exact match of an extracted final answer, a format regex) and an
// external command that reads JSONL on stdin and answers one number per line on stdout.
// Regexes are std::regex ECMAScript, compiled once when the reward is built (a bad one is a
// kConfig error naming its key) and matched breadth-first (reward.cpp says why: long
// completions and exponential backtracking), so back-references are refused and among
// alternatives the longer match wins. A failed command stops the run with an error that says what
// the command did and, when the caller says so, where the batch's rollouts were kept.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/config_schema.h"

namespace tandem::launch {

// post_train.reward.kind.
enum class RewardKind { kExactMatch, kRegex, kCommand };
inline constexpr config::EnumNames<RewardKind, 3> kRewardKindNames{
    {{RewardKind::kExactMatch, "exact_match"}, {RewardKind::kRegex, "regex"}, {RewardKind::kCommand, "command"}}};
constexpr const auto& config_enum_names(RewardKind) { return kRewardKindNames; }

// The post_train.reward section (validate() names these keys in its errors).
struct RewardConfig {
  RewardKind kind = RewardKind::kExactMatch;
  // exact_match: the final answer is the last match in the completion; its first capture
  // group when the regex has one, else the whole match.
  std::string answer_regex = R"(<answer>([\s\S]*?)</answer>)";
  // regex: the completion earns 1 when the pattern is found in it (anchor it with ^...$ to
  // demand the whole completion).
  std::string pattern = R"(^<think>[\s\S]*</think>\s*<answer>[\s\S]*</answer>$)";
  std::string command;    // command: run with /bin/sh -c once per batch
  double timeout_s = 60;  // command: seconds for a whole batch before it is killed
  double correct_at = 1;  // an item counts as correct when its reward >= this (accuracy)

  template <class V>
  void visit(V& v) {
    v("kind", kind, {.doc = "Reward: exact match of the final answer, a format regex, or an external command"});
    v("answer_regex", answer_regex,
      {.doc = "exact_match: ECMAScript regex whose last match (first group, if any) is the final answer"});
    v("pattern", pattern, {.doc = "regex: ECMAScript pattern a completion must contain to earn reward 1"});
    v("command", command,
      {.doc = "command: shell command reading JSONL {prompt, completion, answer} lines, printing one reward per line"});
    v("timeout_s", timeout_s, {.doc = "command: seconds a batch may take before the command is killed", .min = 0.001});
    v("correct_at", correct_at, {.doc = "Rewards at or above this count as correct in the accuracy metric"});
  }

  // Throws config::KeyError (kConfig) naming post_train.reward.<key> for a regex that does not
  // compile (either one, whatever the kind: a typo is worth reporting), an empty command under
  // kind command, a timeout that is not positive, or a correct_at that is not finite.
  void validate() const;
};

// One rollout to score. The strings are copied in by the caller and only read.
struct RewardItem {
  std::string prompt;
  std::string completion;
  std::string answer;  // the reference answer (RL data's "answer")
};

struct RewardScores {
  std::vector<double> rewards;  // one per item, in input order
  std::vector<char> correct;    // 1 where rewards[i] >= correct_at
  double accuracy() const;      // fraction correct; 0 for an empty batch
};

// A reward function. score() is const and thread-safe (built-in rewards share only compiled
// regexes; the command reward starts a fresh process per call), and blocks until scored.
class Reward {
 public:
  virtual ~Reward() = default;

  // Scores `items`. `rollouts_path`, when not empty, is where the caller kept this batch's
  // rollouts: failure messages repeat it so nothing is lost. Throws Error(kRuntime) when the
  // command fails (exit status, signal, timeout, a malformed or missing line).
  RewardScores score(std::span<const RewardItem> items, const std::string& rollouts_path = "") const;

  // "exact_match (answer regex `...`)", for the start-of-run log.
  virtual std::string describe() const = 0;

 protected:
  explicit Reward(double correct_at) : correct_at_(correct_at) {}
  virtual std::vector<double> rewards(std::span<const RewardItem> items, const std::string& rollouts_path) const = 0;

 private:
  double correct_at_;
};

// The reward `config` describes, after config.validate().
std::unique_ptr<Reward> make_reward(const RewardConfig& config);

// The final answer exact_match compares: the last match of `answer_regex` in `completion` (its
// first capture group when the regex has one), whitespace-trimmed; nullopt when nothing matches.
// Compiles the regex on each call (exact_match itself compiles it once): for tests and for
// logging what a rollout answered. Throws Error(kConfig) for a regex that does not compile.
std::optional<std::string> extract_answer(const std::string& completion, const std::string& answer_regex);

}  // namespace tandem::launch
