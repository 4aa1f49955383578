// The immutable identity of this process inside the job: global rank, world size, rank on its
// node, and host name. Built once by the bootstrap (MpiSession) and passed by reference; there
// is no global copy of it.
#pragma once

#include <string>

namespace tandem::runtime {

struct ProcessContext {
  int rank = 0;        // global rank in MPI_COMM_WORLD
  int world_size = 1;  // number of ranks in the job
  int local_rank = 0;  // rank among the processes on this host (selects the GPU)
  int local_size = 1;  // processes on this host
  std::string host;    // host name, as the OS reports it
  int pid = 0;

  bool is_root() const { return rank == 0; }
};

// A context for code that runs without MPI (single process tools, unit tests).
ProcessContext single_process_context();

}  // namespace tandem::runtime
