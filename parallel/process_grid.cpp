// ProcessGrid construction: one MPI_Comm_split per group kind, in a fixed order on every rank
// (splits are collectives over MPI_COMM_WORLD), each turned into a Communicator by the factory.
#include "parallel/process_grid.h"

#include <algorithm>
#include <vector>

#include <mpi.h>

#include "parallel/mpi_communicator.h"
#include "runtime/mpi_check.h"
#include "runtime/process_context.h"

namespace tandem::parallel {

CommunicatorFactory mpi_communicator_factory(std::chrono::milliseconds timeout) {
  return [timeout](GroupKind, MPI_Comm group_comm, const std::string& name) {
    return make_mpi_communicator(group_comm, name, timeout);
  };
}

bool group_shares_a_device(MPI_Comm group_comm, int device) {
  // Device indices only mean the same GPU on one host: compare within each host's part of the group.
  MPI_Comm host = MPI_COMM_NULL;
  TANDEM_MPI_CHECK(MPI_Comm_split_type(group_comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host));
  int host_size = 0;
  TANDEM_MPI_CHECK(MPI_Comm_size(host, &host_size));
  std::vector<int> devices(static_cast<size_t>(host_size));
  TANDEM_MPI_CHECK(MPI_Allgather(&device, 1, MPI_INT, devices.data(), 1, MPI_INT, host));
  MPI_Comm_free(&host);
  std::sort(devices.begin(), devices.end());
  int shared_here = std::adjacent_find(devices.begin(), devices.end()) != devices.end() ? 1 : 0;
  int shared_anywhere = 0;
  TANDEM_MPI_CHECK(MPI_Allreduce(&shared_here, &shared_anywhere, 1, MPI_INT, MPI_MAX, group_comm));
  return shared_anywhere != 0;
}

ProcessGrid::ProcessGrid(GridLayout layout, const runtime::ProcessContext& process, const CommunicatorFactory& factory)
    : layout_(std::move(layout)), rank_(process.rank) {
  TANDEM_CHECK(layout_.world_size() == process.world_size,
               "the layout is for {} ranks but the job has {}; build the layout with the job's world size",
               layout_.world_size(), process.world_size);
  coord_ = layout_.coord(rank_);
  for (GroupKind kind : {GroupKind::kWorld, GroupKind::kTensor, GroupKind::kData, GroupKind::kPipeline,
                         GroupKind::kExpert, GroupKind::kExpertData, GroupKind::kDataTensor}) {
    const std::vector<int64_t> members = layout_.group(kind, rank_);
    const auto position = std::find(members.begin(), members.end(), rank_) - members.begin();
    MPI_Comm split = MPI_COMM_NULL;
    TANDEM_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(layout_.group_color(kind, rank_)),
                                    static_cast<int>(position), &split));
    groups_[kind] = factory(kind, split, group_kind_name(kind));
    MPI_Comm_free(&split);
    TANDEM_CHECK(groups_[kind]->size() == static_cast<int>(members.size()) &&
                     groups_[kind]->rank() == static_cast<int>(position),
                 "communicator '{}' has rank {} of {}, the layout says {} of {}", group_kind_name(kind),
                 groups_[kind]->rank(), groups_[kind]->size(), position, members.size());
  }
}

Communicator& ProcessGrid::group(GroupKind kind) const { return *groups_.at(kind); }

CommunicatorPtr ProcessGrid::shared(GroupKind kind) const { return groups_.at(kind); }

void ProcessGrid::abort_all(const std::string& reason) const {
  for (const auto& [kind, communicator] : groups_) communicator->abort(reason);
}

}  // namespace tandem::parallel
