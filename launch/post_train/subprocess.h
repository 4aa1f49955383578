// Runs a shell command with a deadline, feeding it input on stdin and collecting its stdout and
// the tail of its stderr: what the command reward needs from a child process. Stdin is written
// while stdout and stderr are read (poll), so a command that answers as it reads cannot
// deadlock against a large input. The child runs in its own process group with default signal
// dispositions and an empty signal mask (the trainer blocks SIGINT/SIGTERM in every thread for
// its signal watcher, and a child would inherit that), so the whole group can be ended: at the
// deadline with SIGTERM, then SIGKILL after a grace period, and after a normal exit with
// SIGKILL for anything it left running in its group.
#pragma once

#include <string>
#include <string_view>

namespace tandem::launch {

struct SubprocessResult {
  std::string out;       // all of stdout
  std::string err_tail;  // the last kErrTailBytes of stderr
  int exit_code = -1;    // the exit status when the command exited, else -1
  int signal = 0;        // the signal that ended it, else 0
  bool timed_out = false;
  double elapsed_s = 0;  // from start to the child's end (after the kill, on timeout)

  static constexpr size_t kErrTailBytes = 4096;
};

// Runs `/bin/sh -c command` with `input` on its stdin (closed once written, or when the command
// stops reading) and waits at most `timeout_s` seconds for it to close stdout and stderr and
// exit; past that it is killed as above (at most `kill_grace_s` more) and timed_out is set.
// Blocks the calling thread; thread-safe (no shared state; SIGPIPE from a closed stdin is kept
// from the process). Throws Error(kRuntime) only when the command cannot be started.
SubprocessResult run_subprocess(const std::string& command, std::string_view input, double timeout_s,
                                double kill_grace_s = 1.0);

// The last `max_lines` lines of `text` (for error messages), "(empty)" when there are none.
std::string tail_lines(std::string_view text, int max_lines);

}  // namespace tandem::launch
