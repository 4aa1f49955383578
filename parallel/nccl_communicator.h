// The NCCL backend of Communicator (communicator.h): CUDA tensors, every operation enqueued on a
// CUDA stream and tracked by a CUDA event, so that communication overlaps compute without the
// host waiting. Present only in builds with CUDA and NCCL (nccl_backend_available()).
//
// Set-up: the group's rank 0 draws an ncclUniqueId and broadcasts it over the group's MPI
// communicator; every member then joins one NCCL communicator on its current CUDA device (the
// caller selects the device first: runtime::select_device_for_local_rank). One NCCL communicator
// per process-grid group (nccl_communicator_factory), created eagerly by ProcessGrid.
//
// Streams: an operation runs on `options.stream` when given (the caller orders it against its
// other work), else on the communicator's own high-priority stream after an event wait on the
// caller's current stream (so it sees every tensor the caller produced before the call). Either
// way the tensors are recorded with LibTorch's caching allocator on the stream that uses them, so
// dropping a tensor early never lets its memory be reused under a running transfer.
//  - Work::wait(): makes the caller's current stream wait for the operation's event; no host
//    block (barrier() is the exception: it blocks the host, as a barrier must).
//  - Work::synchronize(): blocks the host until the event fires, bounded by the timeout.
//  - Work::is_completed(): one event query.
//
// Failure: a watchdog thread per communicator polls ncclCommGetAsyncError and the age of the
// oldest unfinished operation. On an asynchronous NCCL error, or an operation older than the
// timeout (counted from when it was issued), it records the NCCL error text and
// ncclGetLastError, aborts the NCCL communicator (ncclCommAbort: kernels waiting on a dead peer
// return, so no GPU stays hung) and marks the communicator failed: every later operation, wait()
// and synchronize() throws that reason (kNccl or kCommunication), and the caller's top-level
// handler ends the job (MPI_Abort), which takes the peers down too.
//
// Differences from the MPI backend, by NCCL's design:
//  - p2p matches in issue order per peer; tags are checked for range but do not reorder
//    anything (a sender and receiver must issue their transfers to each other in the same order).
//  - send/recv to oneself is served by the communicator itself (a queue of pending self-sends),
//    since NCCL would deadlock on an ungrouped send to self.
//  - avg on integer tensors is refused (as in MPI); bool travels as uint8 (max/min = or/and).
//
// Threading: as for MPI, one thread issues operations on a communicator; abort() may come from any
// thread. NCCL_NVLS_ENABLE=0 (the documented default of launch/env.sh) only turns off NVLink
// SHARP; nothing here depends on it.
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

// The NCCL backend for every group of a ProcessGrid, with `timeout`.
CommunicatorFactory nccl_communicator_factory(std::chrono::milliseconds timeout);

#else  // a build without CUDA: the same names, refusing with a message that says why
inline bool nccl_backend_available() { return false; }
[[noreturn]] inline CommunicatorPtr make_nccl_communicator(MPI_Comm, std::string name,
                                                           std::chrono::milliseconds = std::chrono::minutes(5)) {
  TANDEM_THROW(kConfig, "communicator '{}': the NCCL backend is not in this build (configure with a CUDA toolkit "
               "and NCCL, -DTANDEM_WITH_CUDA=ON), use the MPI backend", name);
}
inline CommunicatorFactory nccl_communicator_factory(std::chrono::milliseconds timeout) {
  return [timeout](GroupKind, MPI_Comm comm, const std::string& name) {
    return make_nccl_communicator(comm, name, timeout);
  };
}
#endif

}  // namespace tandem::parallel
