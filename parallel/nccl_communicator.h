// The NCCL backend of Communicator (communicator.h) for CUDA tensors, in builds with CUDA and
// NCCL (nccl_backend_available()). Building one is collective over the group's MPI communicator
// and joins NCCL on the CURRENT CUDA device (select it first: select_device_for_local_rank).
// Streams: an operation runs on options.stream if given, else on the communicator's own stream
// after the work already queued on the caller's current stream. Work::wait() makes the caller's
// current stream wait (no host block, except for barrier()); synchronize() blocks the host,
// bounded by the timeout; is_completed() is one event query. Point-to-point matches in issue
// order per peer: tags are range-checked but reorder nothing. avg on integers is refused; bool
// travels as uint8 (max/min = or/and). Errors: a watchdog aborts the NCCL communicator on an
// asynchronous NCCL or CUDA error or an operation older than the timeout; every later operation,
// wait() and synchronize() then throws that reason (kNccl, kCuda or kCommunication).
// Threading: one thread issues operations; abort() may come from any thread.
// Why: docs/DESIGN.md#nccl-backend
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

#ifndef TANDEM_HAVE_CUDA
#include "runtime/error.h"
#endif

namespace tandem::parallel {

#ifdef TANDEM_HAVE_CUDA
// True when this binary carries the NCCL backend (built with CUDA and NCCL).
bool nccl_backend_available();

// Builds an NCCL communicator over the ranks of `comm` on the current CUDA device (collective over
// `comm`; the caller keeps `comm` and may free it right after). `name` is the axis name for
// messages; `timeout` bounds every operation (watchdog) and every synchronize(). Throws
// tandem::Error: kNccl when NCCL fails, kCuda without a usable device, kConfig when the backend
// is not built in.
CommunicatorPtr make_nccl_communicator(MPI_Comm comm, std::string name,
                                       std::chrono::milliseconds timeout = std::chrono::minutes(5));

// The NCCL backend for every group of a ProcessGrid (which builds them all at construction),
// with `timeout`.
CommunicatorFactory nccl_communicator_factory(std::chrono::milliseconds timeout);

#else  // a build without CUDA: the same names, refusing with a message that says why
inline bool nccl_backend_available() { return false; }
[[noreturn]] inline CommunicatorPtr make_nccl_communicator(MPI_Comm, std::string name,
                                                           std::chrono::milliseconds = std::chrono::minutes(5)) {
  TANDEM_THROW(kConfig,
               "communicator '{}': the NCCL backend is not in this build (configure with a CUDA toolkit "
               "and NCCL, -DTANDEM_WITH_CUDA=ON), use the MPI backend",
               name);
}
inline CommunicatorFactory nccl_communicator_factory(std::chrono::milliseconds timeout) {
  return [timeout](GroupKind, MPI_Comm comm, const std::string& name) {
    return make_nccl_communicator(comm, name, timeout);
  };
}
#endif

}  // namespace tandem::parallel
