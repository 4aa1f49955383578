// SignalWatcher: turns SIGINT and SIGTERM into a flag the training loop polls, so a stop request
// finishes the current step, writes a checkpoint and exits 0 instead of killing the process
// mid-write. Implemented with a dedicated thread in sigwait() (no async-signal handler and no
// global flag): the signals are blocked in every thread, and only the watcher receives them.
// Construct it in main() before anything starts a thread, MPI included (threads inherit the
// signal mask; a thread that does not block the signals would take the default action and kill
// the process). Until a command opts in with set_graceful(true), a signal has its usual effect
// (the process ends); once graceful, the first SIGINT/SIGTERM only sets the flag and a second
// one ends the process, so an impatient user can still kill it.
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

  // Commands that poll stop_requested() (the trainer) turn this on. Thread-safe.
  void set_graceful(bool graceful) { graceful_.store(graceful, std::memory_order_release); }

  // True once SIGINT or SIGTERM arrived. Thread-safe.
  bool stop_requested() const { return stop_requested_.load(std::memory_order_acquire); }
  int signal_number() const { return signal_number_.load(std::memory_order_acquire); }

 private:
  void watch();

  sigset_t signals_{};
  sigset_t previous_mask_{};
  std::atomic<bool> graceful_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> signal_number_{0};
  std::thread thread_;
};

}  // namespace tandem::runtime
