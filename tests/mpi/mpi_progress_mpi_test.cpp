// MpiProgressThread makes a transfer complete while its receiver computes: rank 1 posts a
// receive of a large message (beyond the eager limit, so the sender needs the receiver's help)
// and then computes for a second without calling MPI; rank 0 sends and times its wait. With the
// receiver's progress thread the send completes long before the second is over; without it, the
// send can finish only when the receiver calls MPI again (the baseline, checked too, so the test
// shows the thread is what makes the difference).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <thread>

#include "parallel/mpi_progress.h"
#include "tests/common/mpi_test_env.h"

namespace tandem::parallel {
namespace {

using test::MpiTestEnv;
using Clock = std::chrono::steady_clock;

constexpr auto kReceiverBusy = std::chrono::milliseconds(1000);

// Seconds rank 0 waited for its send while rank 1 was busy; -1 on rank 1.
double send_wait_seconds(bool progress_thread, int tag) {
  const MpiTestEnv& env = MpiTestEnv::get();
  Communicator& world = env.world();
  const at::Tensor message = at::ones({1 << 20});  // 4 MiB
  world.barrier();
  if (env.rank() == 0) {
    const auto start = Clock::now();
    world.send_async(message, 1, tag)->wait();
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    world.barrier();
    return waited;
  }
  std::optional<MpiProgressThread> progress;
  if (progress_thread) {
    progress.emplace(std::chrono::microseconds(200));
    EXPECT_TRUE(progress->active()) << "MPI does not provide MPI_THREAD_MULTIPLE";
  }
  at::Tensor buffer = at::zeros({1 << 20});
  WorkHandle recv = world.recv_async(buffer, 0, tag);
  std::this_thread::sleep_for(kReceiverBusy);  // "compute": no MPI call on this thread
  recv->wait();
  EXPECT_TRUE(at::equal(buffer, message));
  if (progress) {
    EXPECT_GT(progress->polls(), 10);
  }
  progress.reset();
  world.barrier();
  return -1;
}

TEST(MpiProgressThread, TransfersCompleteWhileTheReceiverComputes) {
  if (MpiTestEnv::get().world_size() != 2) GTEST_SKIP() << "a two-rank test";
  const double with_thread = send_wait_seconds(true, 11);
  const double without = send_wait_seconds(false, 12);
  if (MpiTestEnv::get().rank() == 0) {
    const double busy = std::chrono::duration<double>(kReceiverBusy).count();
    std::printf(
        "send of 4 MiB waited %.3f s with the receiver's progress thread, %.3f s without (receiver busy %.1f s)\n",
        with_thread, without, busy);
    EXPECT_LT(with_thread, 0.5 * busy);
    EXPECT_GT(without, 0.9 * busy) << "the baseline completed without receiver progress: the test shows nothing";
  }
}

}  // namespace
}  // namespace tandem::parallel
