// MpiProgressThread (mpi_progress.h).
#include "parallel/mpi_progress.h"

#include <mpi.h>

namespace tandem::parallel {

MpiProgressThread::MpiProgressThread(std::chrono::microseconds interval) {
  int initialised = 0, finalised = 0, level = MPI_THREAD_SINGLE;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (!initialised || finalised) return;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) return;
  thread_ = std::thread([this, interval] { loop(interval); });
}

MpiProgressThread::~MpiProgressThread() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

void MpiProgressThread::loop(std::chrono::microseconds interval) {
  while (!stop_.load(std::memory_order_acquire)) {
    int flag = 0;
    MPI_Status status;
    // Nothing is ever sent on MPI_COMM_SELF, so this only drives the progress engine.
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &flag, &status);
    polls_.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(interval);
  }
}

}  // namespace tandem::parallel
