// A Communicator decorator that lets a host-only backend (MPI) move device tensors: inputs are
// copied to the host before the operation and outputs copied back to the device when the caller
// waits. This is how GPU runs communicate without the NCCL backend (parallel.backend mpi or auto,
// or a build without NCCL) and, under nccl, what the pipeline group and any group with two ranks
// on one GPU use (launch/cli/cmd_train.cpp): correct everywhere, but every wait blocks the host
// and each byte crosses PCIe twice, so it is not the fast path.
// Host tensors pass straight through to the wrapped communicator.
#pragma once

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace tandem::parallel {

CommunicatorPtr make_host_staged(CommunicatorPtr host_backend);

// Wraps every communicator `factory` makes.
CommunicatorFactory host_staged_factory(CommunicatorFactory factory);

}  // namespace tandem::parallel
