// MPI bootstrap: RAII over MPI_Init_thread / MPI_Finalize that builds the ProcessContext
// (global and node-local rank, host). It also offers the two job-wide exits the top-level
// handler needs: a coordinated one when every rank reaches the same decision (all exit with the
// same code, nobody is killed) and MPI_Abort when one rank fails alone (all die within seconds).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/process_context.h"

namespace tandem::runtime {

class MpiSession {
 public:
  // Initialises MPI with MPI_THREAD_MULTIPLE requested (communication threads need it; a lower
  // level is accepted and reported by thread_level()). Throws tandem::Error on failure.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();  // MPI_Finalize, unless the session was aborted
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  const ProcessContext& context() const { return context_; }
  int thread_level() const { return thread_level_; }

  // Collective over MPI_COMM_WORLD: true if any rank passed true. Every rank must call it.
  bool any_rank(bool flag) const;
  // Collective over MPI_COMM_WORLD: the largest `value` passed by any rank.
  int max_over_ranks(int value) const;
  // Collective over MPI_COMM_WORLD: every rank's `value`, indexed by rank.
  std::vector<uint64_t> all_gather(uint64_t value) const;

  // Kills every rank of the job with this exit code (MPI_Abort). Does not return.
  [[noreturn]] static void abort_job(int exit_code);

 private:
  ProcessContext context_;
  int thread_level_ = 0;
  bool initialised_here_ = false;
};

}  // namespace tandem::runtime
