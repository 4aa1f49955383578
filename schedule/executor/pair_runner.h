// PairRunner: runs the two sides of an overlapped pair (the forward of one micro-batch and the
// backward of another) so that each side's communication is in flight while the other side
// computes. The first side runs on the calling thread, the second on a worker thread the runner
// owns; exactly one of them runs at any time. They trade turns at every OverlapHook::on_in_flight()
// call (the MoE layer's dispatch and combine, forward and backward): the caller of on_in_flight
// has just started an exchange, so the other side computes until it starts one of its own (or
// finishes), and the turn comes back. No compute is concurrent, so results are bit-identical to
// running the sides one after the other, and the order of collectives depends only on where the
// sides reach on_in_flight: the same on every rank of a tensor/expert group.
// on_in_flight() from a thread that is not a side of the running pair (a piece run alone, a GPU
// autograd worker) returns at once. Exceptions: a failing second side ends its turn and is
// rethrown by run() after the first side finishes; a failing first side wakes the second one,
// whose next on_in_flight() throws, and run() rethrows the first side's error.
// Why two threads: docs/dualpipe.md#overlapped-pairs
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "parallel/overlap_hook.h"

namespace tandem::schedule {

class PairRunner final : public parallel::OverlapHook {
 public:
  PairRunner();            // starts the worker thread
  ~PairRunner() override;  // stops and joins it
  PairRunner(const PairRunner&) = delete;
  PairRunner& operator=(const PairRunner&) = delete;

  // Runs `first` here and `second` on the worker, first's turn first; returns when both have
  // finished. Not reentrant: one pair at a time, called from one thread.
  void run(const std::function<void()>& first, const std::function<void()>& second);

  void on_in_flight() override;

  // Turns handed over since construction (tests: an overlapped pair really alternated).
  long long num_switches() const;

 private:
  enum Side { kFirst = 0, kSecond = 1, kNone = 2 };
  void worker_loop();
  Side side_of_this_thread() const;  // under mutex_

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool active_ = false;
  Side turn_ = kFirst;
  bool done_[2] = {false, false};
  bool first_failed_ = false;
  std::thread::id first_thread_;
  std::function<void()> task_;  // the second side of the pair being run
  bool has_task_ = false;
  bool shutdown_ = false;
  std::exception_ptr second_error_;
  long long switches_ = 0;
  std::thread worker_;
};

}  // namespace tandem::schedule
