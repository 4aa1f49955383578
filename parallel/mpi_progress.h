// MpiProgressThread: makes non-blocking MPI operations move while the caller computes.
// Open MPI (without its own progress thread) advances transfers only inside MPI calls, so an
// all-to-all or a large point-to-point message started before a stretch of compute would sit idle
// until the next wait. While an MpiProgressThread lives, a background thread enters MPI every
// `interval` (an MPI_Iprobe on MPI_COMM_SELF, which never matches but runs the progress engine),
// so the pipeline's sends/receives and the expert exchanges complete during compute.
// It never touches Work handles or communicators (their one-thread-at-a-time contract holds); it
// needs MPI_THREAD_MULTIPLE and does nothing (active() == false) when MPI provides less.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace tandem::parallel {

class MpiProgressThread {
 public:
  // Starts polling at once. Precondition: MPI is initialised (and not finalised) for the thread's
  // whole life.
  explicit MpiProgressThread(std::chrono::microseconds interval = std::chrono::microseconds(200));
  ~MpiProgressThread();  // stops and joins
  MpiProgressThread(const MpiProgressThread&) = delete;
  MpiProgressThread& operator=(const MpiProgressThread&) = delete;

  bool active() const { return thread_.joinable(); }
  // How many times the thread entered MPI (tests, diagnostics).
  long long polls() const { return polls_.load(std::memory_order_relaxed); }

 private:
  void loop(std::chrono::microseconds interval);

  std::atomic<bool> stop_{false};
  std::atomic<long long> polls_{0};
  std::thread thread_;
};

}  // namespace tandem::parallel
