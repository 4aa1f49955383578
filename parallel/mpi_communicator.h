// The MPI backend of Communicator (communicator.h) for CPU tensors: each operation is one MPI
// non-blocking call; Work::wait() polls MPI_Test (MPI progresses only inside MPI calls) until it
// completes or the timeout, counted from the start of the wait, expires, which marks the
// communicator failed and throws kCommunication. Invariants: it works on a private duplicate of
// the MPI_Comm it was built from (MPI_ERRORS_RETURN) and owns its bf16/f16 datatype and operators.
// Accepted, else a tandem::Error naming operation, communicator, rank, expected and given:
// defined, contiguous CPU tensors (non-contiguous ones are refused, not copied); f32, f64, bf16,
// f16, i64, i32, i16, i8, u8, bool: sum/avg/max/min on floating types, sum/max/min on integers,
// max/min (or/and) on bool, other dtypes moved as bytes; <= INT_MAX elements per buffer, split
// and displacement. Threading: one thread at a time issues operations on a communicator and
// waits on its Works; abort() may come from any thread; distinct communicators may be driven
// from distinct threads (MPI_THREAD_MULTIPLE, which runtime::MpiSession asks for).
// Why: docs/DESIGN.md#mpi-backend
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
