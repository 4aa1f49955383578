// ProcessGrid on real ranks: each group communicator holds exactly the ranks the layout says,
// in the layout's order (rank-encoded all-gathers), for several layouts of the running world.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>

#include "parallel/process_grid.h"
#include "runtime/error.h"
#include "tests/common/mpi_test_env.h"

namespace tandem::parallel {
namespace {

void check_grid(int64_t pp, int64_t tp, int64_t ep, const std::string& order) {
  const auto& env = test::MpiTestEnv::get();
  const GridLayout layout = GridLayout::create(env.world_size(), pp, 0, tp, ep, order);
  const ProcessGrid grid(layout, env.process(), mpi_communicator_factory(test::MpiTestEnv::kCommTimeout));
  for (GroupKind kind : {GroupKind::kTensor, GroupKind::kData, GroupKind::kPipeline, GroupKind::kExpert,
                         GroupKind::kExpertData, GroupKind::kDataTensor, GroupKind::kWorld}) {
    Communicator& comm = grid.group(kind);
    const std::vector<int64_t> expected = layout.group(kind, env.rank());
    const auto input = at::full({1}, env.rank(), at::kLong);
    auto gathered = at::empty({comm.size()}, at::kLong);
    comm.all_gather(gathered, input);
    std::vector<int64_t> actual(gathered.data_ptr<int64_t>(), gathered.data_ptr<int64_t>() + comm.size());
    EXPECT_EQ(actual, expected) << group_kind_name(kind) << " on rank " << env.rank();
    EXPECT_EQ(comm.name(), group_kind_name(kind));
  }
}

TEST(ProcessGrid, GroupsMatchTheLayoutForEveryFactorisation) {
  const int64_t world = test::MpiTestEnv::get().world_size();
  for (int64_t pp = 1; pp <= world; ++pp) {
    for (int64_t tp = 1; pp * tp <= world; ++tp) {
      if (world % (pp * tp) != 0) continue;
      const int64_t dp = world / (pp * tp);
      for (int64_t ep = 1; ep <= dp * tp; ++ep) {
        if ((dp * tp) % ep != 0) continue;
        for (const char* order : {"tp-dp-pp", "pp-dp-tp"}) {
          SCOPED_TRACE(fmt::format("pp{} tp{} ep{} {}", pp, tp, ep, order));
          check_grid(pp, tp, ep, order);
        }
      }
    }
  }
}

// Four ranks on two GPUs (device = local rank % 2, as runtime::select_device_for_local_rank picks
// them) as pp2 x dp2 x ep2 in the default order: the dp, ep and dp*tp groups pair the two GPUs
// (NCCL can serve them) while the world and the pipeline pairs hold two ranks of one GPU (NCCL
// refuses those; `tandem train` keeps them host-staged). The run_gpu_bench_2gpu.sh layout.
TEST(ProcessGrid, FourRanksOnTwoGpusShareADeviceOnlyInWorldAndPipelineGroups) {
  const auto& env = test::MpiTestEnv::get();
  if (env.world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const GridLayout layout = GridLayout::create(4, 2, 2, 1, 2, "tp-dp-pp");
  const int device = env.process().local_rank % 2;
  std::map<GroupKind, bool> shares;
  const CommunicatorFactory mpi = mpi_communicator_factory(test::MpiTestEnv::kCommTimeout);
  const ProcessGrid grid(layout, env.process(), [&](GroupKind kind, MPI_Comm comm, const std::string& name) {
    shares[kind] = group_shares_a_device(comm, device);
    return mpi(kind, comm, name);
  });
  EXPECT_TRUE(shares.at(GroupKind::kWorld));
  EXPECT_TRUE(shares.at(GroupKind::kPipeline));
  for (GroupKind kind :
       {GroupKind::kTensor, GroupKind::kData, GroupKind::kExpert, GroupKind::kExpertData, GroupKind::kDataTensor}) {
    EXPECT_FALSE(shares.at(kind)) << group_kind_name(kind) << " on rank " << env.rank();
  }
  EXPECT_EQ(grid.ep().size(), 2);
}

}  // namespace
}  // namespace tandem::parallel
