// PairRunner (pair_runner.h): a two-thread hand-over under one mutex. `turn_` names the side that
// may run; a side gives the turn away in on_in_flight() and blocks until it comes back (or until
// the other side has finished, after which it keeps the turn).
#include "schedule/executor/pair_runner.h"

#include <utility>

#include "runtime/error.h"

namespace tandem::schedule {

PairRunner::PairRunner() : worker_([this] { worker_loop(); }) {}

PairRunner::~PairRunner() {
  {
    std::lock_guard lock(mutex_);
    shutdown_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

PairRunner::Side PairRunner::side_of_this_thread() const {
  if (!active_) return kNone;
  const std::thread::id me = std::this_thread::get_id();
  if (me == first_thread_) return kFirst;
  if (me == worker_.get_id()) return kSecond;
  return kNone;
}

void PairRunner::worker_loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return has_task_ || shutdown_; });
    if (!has_task_) return;  // shut down
    std::function<void()> task = std::move(task_);
    has_task_ = false;
    changed_.wait(lock, [&] { return turn_ == kSecond || first_failed_; });
    if (!first_failed_) {
      lock.unlock();
      try {
        task();
      } catch (...) {
        second_error_ = std::current_exception();  // read by run() after done_[kSecond]
      }
      lock.lock();
    }
    done_[kSecond] = true;
    turn_ = kFirst;
    changed_.notify_all();
  }
}

void PairRunner::run(const std::function<void()>& first, const std::function<void()>& second) {
  {
    std::lock_guard lock(mutex_);
    TANDEM_CHECK(!active_, "PairRunner::run is not reentrant");
    active_ = true;
    turn_ = kFirst;
    done_[kFirst] = done_[kSecond] = false;
    first_failed_ = false;
    second_error_ = nullptr;
    first_thread_ = std::this_thread::get_id();
    task_ = second;
    has_task_ = true;
  }
  changed_.notify_all();
  std::exception_ptr first_error;
  try {
    first();
  } catch (...) {
    first_error = std::current_exception();
  }
  std::exception_ptr second_error;
  {
    std::unique_lock lock(mutex_);
    done_[kFirst] = true;
    first_failed_ = first_error != nullptr;
    turn_ = kSecond;
    changed_.notify_all();
    changed_.wait(lock, [&] { return done_[kSecond]; });
    active_ = false;
    second_error = std::exchange(second_error_, nullptr);
  }
  if (first_error) std::rethrow_exception(first_error);
  if (second_error) std::rethrow_exception(second_error);
}

void PairRunner::on_in_flight() {
  std::unique_lock lock(mutex_);
  const Side me = side_of_this_thread();
  if (me == kNone) return;
  const Side other = me == kFirst ? kSecond : kFirst;
  if (done_[other]) return;  // nothing left to overlap with
  ++switches_;
  turn_ = other;
  changed_.notify_all();
  changed_.wait(lock, [&] { return turn_ == me || (me == kSecond && first_failed_); });
  if (me == kSecond && first_failed_) {
    TANDEM_THROW(kRuntime, "the other side of an overlapped pair failed; abandoning this side");
  }
}

long long PairRunner::num_switches() const {
  std::lock_guard lock(mutex_);
  return switches_;
}

}  // namespace tandem::schedule
