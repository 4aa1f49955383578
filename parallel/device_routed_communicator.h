// A Communicator over one process group that carries two backends and routes every operation by
// where its tensors live: device (CUDA) tensors through `device_backend` (NCCL), host tensors
// through `host_backend` (MPI). This is the GPU trainer's fast path: gradients, activations and
// expert exchanges stay on the GPU and use NCCL, while the few host scalars of a step (losses
// for the log, the stop flag) keep using MPI, without staging either kind through the other.
// Contracts:
//  - All tensors of one operation must be on the same side (host or device); mixing is an error.
//  - Ordering: each backend sees the subsequence of operations routed to it. Since every rank
//    issues the same operations on the same kinds of tensors (the usual collective contract),
//    both subsequences match across ranks.
//  - Work, streams, errors: those of the backend that ran the operation (see its header).
//  - barrier() is the host backend's (it orders hosts); abort() aborts both.
// rank(), size() and name() come from the host backend; both must span the same group.
#pragma once

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace tandem::parallel {

// Throws tandem::Error (kInternal) when the two backends disagree on rank or size.
CommunicatorPtr make_device_routed(CommunicatorPtr host_backend, CommunicatorPtr device_backend);

// For every group: the host and the device backend built over the same MPI communicator (host
// first), joined by make_device_routed.
CommunicatorFactory device_routed_factory(CommunicatorFactory host_factory, CommunicatorFactory device_factory);

}  // namespace tandem::parallel
