// Rank placement: one rank per GPU passes; more ranks than GPUs, idle GPUs, a cuda job without
// a GPU and oversubscribed CPU cores each produce one warning naming the host, the numbers and a fix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "runtime/placement_check.h"

namespace tandem::runtime {
namespace {

PlacementInputs node(int ranks, int gpus, DeviceKind device = DeviceKind::kAuto) {
  PlacementInputs in;
  in.host = "node7";
  in.ranks_on_node = ranks;
  in.gpus_visible = gpus;
  in.device = device;
  in.cpu_cores = 64;
  in.cuda_visible_devices = "(unset)";
  return in;
}

void expect_warning(const PlacementReport& report, const std::vector<std::string>& fragments) {
  ASSERT_EQ(report.warnings.size(), 1u);
  for (const std::string& fragment : fragments) {
    EXPECT_NE(report.warnings[0].find(fragment), std::string::npos)
        << "missing '" << fragment << "' in: " << report.warnings[0];
  }
}

TEST(PlacementCheck, OneRankPerGpuIsClean) {
  const PlacementReport report = check_rank_placement(node(8, 8));
  EXPECT_TRUE(report.ok());
  ASSERT_EQ(report.info.size(), 1u);
  EXPECT_NE(report.info[0].find("host node7: 8 rank(s), 8 GPU(s) visible"), std::string::npos) << report.info[0];
  EXPECT_NE(report.info[0].find("one GPU per rank"), std::string::npos);
}

TEST(PlacementCheck, MoreRanksThanGpusWarns) {
  expect_warning(check_rank_placement(node(16, 8)),
                 {"node7", "16 ranks but only 8 GPU(s)", "share GPUs", "NCCL", "--ntasks-per-node=8", "ppr:8:node"});
}

TEST(PlacementCheck, IdleGpusWarn) {
  expect_warning(check_rank_placement(node(4, 8)), {"4 rank(s) for 8 GPUs", "4 GPU(s) stay idle"});
}

TEST(PlacementCheck, CudaWithoutGpuWarns) {
  expect_warning(check_rank_placement(node(2, 0, DeviceKind::kCuda)), {"run.device is cuda but no GPU is visible"});
  // auto without a GPU is a CPU run, not a mismatch.
  EXPECT_TRUE(check_rank_placement(node(2, 0, DeviceKind::kAuto)).ok());
}

TEST(PlacementCheck, CpuOversubscriptionWarns) {
  PlacementInputs in = node(8, 0, DeviceKind::kCpu);
  in.cpu_cores = 16;
  in.threads_per_rank = 4;
  expect_warning(check_rank_placement(in), {"8 rank(s) x 4 thread(s) = 32 busy threads on 16", "OMP_NUM_THREADS=2"});
  in.threads_per_rank = 2;
  EXPECT_TRUE(check_rank_placement(in).ok());
  // One thread per rank already: OMP_NUM_THREADS cannot help, so no advice to set it, only a note.
  in.ranks_on_node = 32;
  in.threads_per_rank = 1;
  const PlacementReport crowded = check_rank_placement(in);
  EXPECT_TRUE(crowded.ok());
  ASSERT_EQ(crowded.info.size(), 2u);
  EXPECT_NE(crowded.info[1].find("32 ranks of one thread each share 16"), std::string::npos) << crowded.info[1];
  EXPECT_EQ(crowded.info[1].find("OMP_NUM_THREADS"), std::string::npos) << crowded.info[1];
  in.ranks_on_node = 8;
  in.threads_per_rank = 2;
  // A cpu job on a GPU node ignores the GPUs.
  in.gpus_visible = 8;
  EXPECT_TRUE(check_rank_placement(in).ok());
}

TEST(PlacementCheck, ThreadsPerRankFollowOmpNumThreadsElseShareTheCores) {
  const char* saved = std::getenv("OMP_NUM_THREADS");
  const std::string restore = saved != nullptr ? saved : "";
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  setenv("OMP_NUM_THREADS", "3", 1);
  EXPECT_EQ(threads_per_rank(64), 3);  // the launcher's choice wins, even when it oversubscribes
  setenv("OMP_NUM_THREADS", "0", 1);   // not a thread count: ignored
  EXPECT_EQ(threads_per_rank(1), cores);
  unsetenv("OMP_NUM_THREADS");
  EXPECT_EQ(threads_per_rank(1), cores);
  EXPECT_EQ(threads_per_rank(2 * cores), 1);  // never below one
  EXPECT_EQ(threads_per_rank(cores), 1);
  if (saved != nullptr) setenv("OMP_NUM_THREADS", restore.c_str(), 1);
}

}  // namespace
}  // namespace tandem::runtime
