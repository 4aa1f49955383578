// SignalWatcher: turns SIGINT and SIGTERM into a flag the training loop polls, so a stop request
// finishes the current step, writes a checkpoint and exits 0 instead of killing the process
// mid-write. Implemented with a dedicated thread in sigwait() (no async-signal handler and no
// global flag): the signals are blocked in every thread, and only the watcher receives them.
// Construct it before starting any other thread (threads inherit the signal mask).
// A second signal while a stop is pending restores the default action and re-raises it, so an
// impatient user can still kill the process.
#pragma once

#include <atomic>
#include <csignal>
#include <thread>

namespace tandem::runtime {

class SignalWatcher {
 public:
  SignalWatcher();
  ~SignalWatcher();  // stops the watcher thread and unblocks the signals
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // True once SIGINT or SIGTERM arrived. Thread-safe.
  bool stop_requested() const { return stop_requested_.load(std::memory_order_acquire); }
  int signal_number() const { return signal_number_.load(std::memory_order_acquire); }

 private:
  void watch();

  sigset_t signals_{};
  sigset_t previous_mask_{};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> signal_number_{0};
  std::thread thread_;
};

}  // namespace tandem::runtime
