// Rewards: exact match with the default and custom extraction regexes (the last match counts),
// the format reward, bad regexes named by their config key, and the command reward against real
// shell commands: scores in input order, a large batch that would deadlock without concurrent
// reading and writing, and every way a command can fail (timeout, exit status, signal, a bad
// line, too few or too many lines), each with a message that says what happened.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <numeric>
#include <thread>

#include "launch/post_train/reward.h"
#include "launch/post_train/subprocess.h"
#include "runtime/error.h"

namespace tandem::launch {
namespace {

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

RewardConfig config_of(RewardKind kind) {
  RewardConfig config;
  config.kind = kind;
  return config;
}

RewardConfig command_config(const std::string& command, double timeout_s = 30) {
  RewardConfig config = config_of(RewardKind::kCommand);
  config.command = command;
  config.timeout_s = timeout_s;
  return config;
}

std::vector<RewardItem> items_of(const std::vector<std::pair<std::string, std::string>>& completion_answer) {
  std::vector<RewardItem> items;
  for (const auto& [completion, answer] : completion_answer) items.push_back({"prompt", completion, answer});
  return items;
}

TEST(Reward, ExactMatchComparesTheLastAnswerTagTrimmed) {
  const auto reward = make_reward(config_of(RewardKind::kExactMatch));
  const auto items = items_of({
      {"<think>6*7</think> <answer> 42 </answer>", "42"},
      {"<answer>41</answer> wait, no: <answer>42</answer>", "42\n"},  // the last tag counts
      {"<answer>42</answer> wait, no: <answer>41</answer>", "42"},
      {"42", "42"},                           // no tag, no answer
      {"<answer>\n4\n2\n</answer>", "4\n2"},  // tags span lines
  });
  const RewardScores scores = reward->score(items);
  EXPECT_EQ(scores.rewards, (std::vector<double>{1, 1, 0, 0, 1}));
  EXPECT_EQ(scores.correct, (std::vector<char>{1, 1, 0, 0, 1}));
  EXPECT_DOUBLE_EQ(scores.accuracy(), 0.6);
  EXPECT_CONTAINS(reward->describe(), "exact_match");
}

TEST(Reward, ExactMatchWithACustomRegexUsesItsFirstGroupOrTheWholeMatch) {
  RewardConfig config = config_of(RewardKind::kExactMatch);
  config.answer_regex = R"(answer is (-?\d+))";
  const auto grouped = make_reward(config);
  EXPECT_EQ(grouped->score(items_of({{"the answer is 3, so the answer is -12.", "-12"}})).rewards,
            std::vector<double>{1});
  config.answer_regex = R"(-?\d+)";
  const auto whole = make_reward(config);
  EXPECT_EQ(whole->score(items_of({{"3 + 4 = 7", "7"}, {"3 + 4 = 7", "3"}})).rewards, (std::vector<double>{1, 0}));
  EXPECT_EQ(extract_answer("x = 1, y = 22", R"(-?\d+)"), "22");
  EXPECT_EQ(extract_answer("no digits", R"(-?\d+)"), std::nullopt);
}

TEST(Reward, FormatRewardNeedsThePattern) {
  const auto reward = make_reward(config_of(RewardKind::kRegex));
  const auto items = items_of({
      {"<think>a\nb</think>\n<answer>3</answer>", ""},
      {"<answer>3</answer>", ""},
      {"<think>a</think><answer>3</answer> trailing", ""},
  });
  EXPECT_EQ(reward->score(items).rewards, (std::vector<double>{1, 0, 0}));
}

TEST(Reward, LongCompletionsAndBacktrackingPatternsStayCheap) {
  // A depth-first std::regex overflows the stack on these and runs for minutes on the last one.
  const std::string answer(1 << 20, '7');
  const auto items =
      items_of({{"<think>" + std::string(1 << 20, 'x') + "</think>\n<answer>" + answer + "</answer>", answer}});
  EXPECT_EQ(make_reward(config_of(RewardKind::kExactMatch))->score(items).rewards, std::vector<double>{1});
  EXPECT_EQ(make_reward(config_of(RewardKind::kRegex))->score(items).rewards, std::vector<double>{1});
  RewardConfig config = config_of(RewardKind::kRegex);
  config.pattern = "(a*)*b";
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(make_reward(config)->score(items_of({{std::string(64, 'a'), ""}})).rewards, std::vector<double>{0});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST(Reward, BadSettingsAreConfigErrorsNamingTheirKey) {
  RewardConfig config = config_of(RewardKind::kExactMatch);
  config.answer_regex = "<answer>(.*";
  Error error = error_of([&] { make_reward(config); });
  EXPECT_EQ(error.kind(), ErrorKind::kConfig);
  EXPECT_CONTAINS(error.message(), "post_train.reward.answer_regex: `<answer>(.*` is not a valid ECMAScript regex");
  config = config_of(RewardKind::kRegex);
  config.pattern = "[unclosed";
  EXPECT_CONTAINS(error_of([&] { make_reward(config); }).message(), "post_train.reward.pattern:");
  config.pattern = R"((a)\1)";  // back-references need the backtracking matcher
  EXPECT_CONTAINS(error_of([&] { make_reward(config); }).message(), "post_train.reward.pattern: `(a)\\1`");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("  ")); }).message(),
                  "post_train.reward.command: is empty");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("true", 0)); }).message(),
                  "post_train.reward.timeout_s: must be a positive number");
}

bool have_python3() { return std::system("command -v python3 >/dev/null 2>&1") == 0; }

TEST(Reward, CommandScoresTheBatchInInputOrder) {
  if (!have_python3()) GTEST_SKIP() << "python3 is not installed";
  // Reward 1 when the completion (trimmed) equals the answer, else the completion's length.
  const auto reward = make_reward(
      command_config("python3 -c 'import sys, json\n"
                     "for line in sys.stdin:\n"
                     "    r = json.loads(line)\n"
                     "    assert r[\"prompt\"] == \"prompt\"\n"
                     "    print(1 if r[\"completion\"].strip() == r[\"answer\"] else len(r[\"completion\"]) / 8)'"));
  const auto items = items_of({{" 42 ", "42"}, {"no\"quote\\", "42"}, {"\xff\xfe", "x"}, {"7", "7"}});
  const RewardScores scores = reward->score(items);
  // The invalid UTF-8 bytes reach the command as two U+FFFD characters.
  EXPECT_EQ(scores.rewards, (std::vector<double>{1, 9.0 / 8, 2.0 / 8, 1}));
  EXPECT_EQ(scores.correct, (std::vector<char>{1, 1, 0, 1}));  // correct_at = 1
  EXPECT_CONTAINS(reward->describe(), "command `python3");
}

TEST(Reward, CommandReadsAndWritesConcurrentlySoLargeBatchesDoNotDeadlock) {
  // 3000 completions of 2 KB in and 3000 lines of 2 KB out: ~6 MB each way, far above a pipe's
  // buffer, with awk answering each line as it reads it.
  std::vector<RewardItem> items(3000, RewardItem{"p", std::string(2000, 'x'), "a"});
  const auto reward = make_reward(command_config("awk '{ printf \"%2000s\\n\", NR % 2 }'"));
  const RewardScores scores = reward->score(items);
  ASSERT_EQ(scores.rewards.size(), 3000u);
  for (size_t i = 0; i < scores.rewards.size(); ++i) ASSERT_EQ(scores.rewards[i], (i + 1) % 2) << i;
}

TEST(Reward, CommandThatIgnoresItsInputStillWorks) {
  // The command exits without reading 4 MB of input: the write fails with EPIPE, not SIGPIPE.
  std::vector<RewardItem> items(2, RewardItem{"p", std::string(2 << 20, 'x'), "a"});
  EXPECT_EQ(make_reward(command_config("echo 0.5; echo -1e-3"))->score(items).rewards,
            (std::vector<double>{0.5, -1e-3}));
}

TEST(Reward, CommandInheritsOnlyItsStandardStreams) {
  const int fd = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC, as MPI's or NCCL's might be
  ASSERT_GE(fd, 3);
  const std::string path = "/proc/$$/fd/" + std::to_string(fd);
  const auto reward = make_reward(command_config("if [ -e " + path + " ]; then echo 0; else echo 1; fi"));
  EXPECT_EQ(reward->score(items_of({{"a", "a"}})).rewards, std::vector<double>{1});
  ::close(fd);
}

bool process_is_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_text, name, state;
  return !(stat >> pid_text >> name >> state) || state == "Z";  // a zombie waits for init to reap it
}

TEST(Reward, CommandPastItsTimeoutIsKilledWithItsProcessGroup) {
  char pid_file[] = "/tmp/tandem-reward-pid-XXXXXX";
  const int fd = ::mkstemp(pid_file);
  ASSERT_GE(fd, 0);
  ::close(fd);
  // The shell ignores SIGTERM (and so does its background sleep), so only SIGKILL ends them.
  const std::string command = std::string("trap '' TERM; sleep 30 & echo $! > ") + pid_file +
                              "; echo started >&2; wait; echo 1";
  const auto reward = make_reward(command_config(command, 0.5));
  const auto start = std::chrono::steady_clock::now();
  const Error error = error_of([&] {
    reward->score(items_of({{"a", "a"}, {"b", "b"}}), "runs/x/rollouts/step_3.jsonl");
  });
  const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(error.kind(), ErrorKind::kRuntime);
  EXPECT_CONTAINS(error.message(),
                  "reward command `" + command + "` did not answer 2 completions within 0.5 s; killed it");
  EXPECT_CONTAINS(error.message(), "started");
  EXPECT_CONTAINS(error.message(), "this batch's rollouts are kept in runs/x/rollouts/step_3.jsonl");
  EXPECT_GE(elapsed_s, 0.5);
  EXPECT_LT(elapsed_s, 0.5 + 1.0 + 1.5);  // timeout + SIGTERM grace + slack for a loaded machine
  std::ifstream in(pid_file);
  pid_t sleeper = 0;
  ASSERT_TRUE(in >> sleeper) << "the command did not start its background sleep";
  ::unlink(pid_file);
  for (int i = 0; i < 100 && !process_is_gone(sleeper); ++i) ::usleep(10000);
  EXPECT_TRUE(process_is_gone(sleeper)) << "background sleep " << sleeper << " survived";
  if (!process_is_gone(sleeper)) ::kill(sleeper, SIGKILL);
}

TEST(Reward, CommandFailuresQuoteTheCommandTheLineAndStderr) {
  const auto two = items_of({{"a", "a"}, {"b", "b"}});
  Error error = error_of([&] { make_reward(command_config("echo oops >&2; exit 3"))->score(two); });
  EXPECT_EQ(error.kind(), ErrorKind::kRuntime);
  EXPECT_CONTAINS(error.message(), "reward command `echo oops >&2; exit 3` exited with status 3 while scoring 2");
  EXPECT_CONTAINS(error.message(), "stderr ended with:\noops");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("exit 1"))->score(two); }).message(),
                  "status 1 while scoring 2 completions; it wrote nothing to stderr");

  error = error_of([&] { make_reward(command_config("printf '1\\nabc\\n'"))->score(two, "kept.jsonl"); });
  EXPECT_CONTAINS(error.message(), "printed a line that is not a number: line 2: `abc`");
  EXPECT_CONTAINS(error.message(), "rollouts are kept in kept.jsonl");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("printf '1\\n\\n'"))->score(two); }).message(),
                  "line 2: ``");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("echo nan; echo 1"))->score(two); }).message(),
                  "line 1: `nan`");

  error = error_of([&] {
    make_reward(command_config("echo 1"))->score(items_of({{"a", "a"}, {"b", "b"}, {"c", "c"}}));
  });
  EXPECT_CONTAINS(error.message(), "printed 1 reward lines for 3 completions");
  EXPECT_CONTAINS(error.message(), "its last line (1) was `1`");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("echo 1; echo 0; echo 1"))->score(two); }).message(),
                  "printed 3 reward lines for 2 completions");
  EXPECT_CONTAINS(error_of([&] { make_reward(command_config("true"))->score(two); }).message(),
                  "printed 0 reward lines for 2 completions");

  error = error_of([&] { make_reward(command_config("kill -9 $$"))->score(two); });
  EXPECT_CONTAINS(error.message(), "was killed by signal 9");
}

TEST(Reward, ScoresFromSeveralThreadsAtOnce) {
  const auto command = make_reward(command_config("awk '{ print NR }'"));
  const auto exact = make_reward(config_of(RewardKind::kExactMatch));
  std::vector<std::vector<double>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<RewardItem> items(10 + t, RewardItem{"p", "<answer>1</answer>", "1"});
      got[t] = command->score(items).rewards;
      if (exact->score(items).accuracy() != 1.0) got[t].clear();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) {
    std::vector<double> expected(10 + t);
    std::iota(expected.begin(), expected.end(), 1.0);
    EXPECT_EQ(got[t], expected) << "thread " << t;
  }
}

TEST(Reward, TailLinesKeepsTheLastLines) {
  EXPECT_EQ(tail_lines("a\nb\nc\n", 2), "b\nc");
  EXPECT_EQ(tail_lines("a\nb\nc", 5), "a\nb\nc");
  EXPECT_EQ(tail_lines("\n\n", 3), "(empty)");
}

}  // namespace
}  // namespace tandem::launch
