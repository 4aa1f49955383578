// ProcessGrid: the layout of this job (GridLayout) plus one communicator per group this rank
// belongs to (tp, dp, pp, ep, expert-dp, dp*tp, world). Built once after MPI start-up and passed
// by reference to everything that communicates; there is no global grid. Construction is
// collective over MPI_COMM_WORLD: every rank builds its grid with the same layout.
#pragma once

#include <mpi.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "parallel/communicator.h"
#include "parallel/grid_layout.h"

namespace tandem::runtime {
struct ProcessContext;
}

namespace tandem::parallel {

// Makes the communicator of one group from the MPI communicator of exactly that group's ranks
// (collective over `group_comm`; the callee may keep its own duplicate, the caller frees
// group_comm afterwards). The MPI backend wraps it; the NCCL backend bootstraps over it.
using CommunicatorFactory =
    std::function<CommunicatorPtr(GroupKind kind, MPI_Comm group_comm, const std::string& name)>;

// The MPI backend for every group, with `timeout` on each wait.
CommunicatorFactory mpi_communicator_factory(std::chrono::milliseconds timeout);

// True when two ranks of `group_comm` on one host use the same GPU (`device`: this rank's CUDA
// device index), on any host of the group; the same answer on every member. NCCL refuses such a
// group, so a run with several ranks per GPU (e.g. 4 ranks on 2 GPUs) keeps those groups on
// another backend. Collective over `group_comm` (the caller keeps it).
bool group_shares_a_device(MPI_Comm group_comm, int device);

class ProcessGrid {
 public:
  ProcessGrid(GridLayout layout, const runtime::ProcessContext& process, const CommunicatorFactory& factory);

  const GridLayout& layout() const { return layout_; }
  const GridCoord& coord() const { return coord_; }
  int64_t rank() const { return rank_; }

  // The communicator of this rank's group of `kind`. Valid for the grid's lifetime.
  Communicator& group(GroupKind kind) const;
  Communicator& tp() const { return group(GroupKind::kTensor); }
  Communicator& dp() const { return group(GroupKind::kData); }
  Communicator& pp() const { return group(GroupKind::kPipeline); }
  Communicator& ep() const { return group(GroupKind::kExpert); }
  Communicator& edp() const { return group(GroupKind::kExpertData); }
  Communicator& world() const { return group(GroupKind::kWorld); }
  CommunicatorPtr shared(GroupKind kind) const;

  // Marks every communicator failed (top-level handler, before MPI_Abort).
  void abort_all(const std::string& reason) const;

 private:
  GridLayout layout_;
  GridCoord coord_;
  int64_t rank_ = 0;
  std::map<GroupKind, CommunicatorPtr> groups_;
};

}  // namespace tandem::parallel
