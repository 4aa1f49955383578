// The MPI backend of Communicator (communicator.h): CPU tensors, every operation issued as an MPI
// non-blocking call (MPI_Iallreduce, MPI_Ialltoallv, MPI_Isend, ...) and completed by Work::wait(),
// which polls MPI_Test under a timeout so that a lost peer becomes an error instead of a hang.
// Invariants: the communicator owns a private duplicate of the MPI_Comm it was built from (its
// traffic can never match anyone else's), with MPI_ERRORS_RETURN set on it; the MPI datatype and
// reduction operators that bf16/f16 need are created per communicator and freed with it.
//
// What the backend accepts (checked up front; a violation throws tandem::Error naming the
// operation, the communicator, its rank and what was expected against what was given):
//  - tensors that are defined, on the CPU and contiguous. Non-contiguous views are rejected rather
//    than copied: an in-place all-reduce on a hidden copy would silently leave the caller's view
//    unchanged, and a copy-back would hide the cost. Call .contiguous() and copy back yourself.
//  - dtypes float32, float64, bfloat16, float16, int64, int32, uint8 and bool for every operation;
//    reductions: sum/avg/max/min on floating types, sum/max/min on integers (avg is refused: an
//    integer mean would truncate), max/min on bool (logical or/and). Other dtypes can still be
//    moved (all-gather, broadcast, all-to-all, send/recv) as raw bytes.
//  - at most INT_MAX elements per buffer, and for all-to-all per split and per displacement
//    (MPI's counts are int); beyond that the call throws and says so.
//
// Threading: one thread at a time issues operations on a given communicator and waits on its
// Works (collectives must be issued in the same order on every rank, which a single issuing
// thread guarantees). abort() may be called from any thread (a watchdog): waiters notice within a
// millisecond. Different communicators may be driven from different threads when MPI was
// initialised with MPI_THREAD_MULTIPLE (runtime::MpiSession asks for it).
//
// Completion: MPI (Open MPI without a progress thread) progresses only inside MPI calls, so an
// operation moves forward while someone waits on or tests it. Work::wait() polls MPI_Test, yielding
// the core between polls for the first couple of milliseconds and then sleeping 50 us at a time
// (ranks are often oversubscribed on a development machine). The timeout counts from the start of
// a wait(); when it expires, the communicator is marked failed (the collective order of the job is
// broken past repair) and wait() throws kCommunication.
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>

#include "parallel/communicator.h"

namespace tandem::parallel {

// Builds an MPI communicator over a duplicate of `comm` (collective over `comm`: every member
// calls it, in the same order relative to other collectives on `comm`). The caller keeps ownership
// of `comm` and may free it right after this returns. `name` is the axis name used in messages
// ("dp", "tp", "world", ...). `timeout` bounds every Work::wait().
// The returned communicator must be destroyed before MPI_Finalize (if it outlives MPI, its MPI
// objects are leaked rather than freed after finalisation). Throws tandem::Error (kMpi) if MPI
// fails.
CommunicatorPtr make_mpi_communicator(MPI_Comm comm, std::string name,
                                      std::chrono::milliseconds timeout = std::chrono::minutes(5));

}  // namespace tandem::parallel
