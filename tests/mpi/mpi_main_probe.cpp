// Tests of the shared multi-rank main (tests/common/mpi_gtest_main.cpp), run by ctest through
// expect_job_failure.sh. TANDEM_MAIN_PROBE=fail: one test fails on the last rank only, and the job
// must fail on every rank (exit 1), with rank 0 naming the test and the rank.
// TANDEM_MAIN_PROBE=terminate: the last rank dies of an exception escaping a thread, and its
// std::terminate handler must take the job down (MPI_Abort) instead of leaving the others waiting.
// Without the variable the probes skip themselves, so a plain run of this binary passes.
#include <ATen/core/Tensor.h>
#include <ATen/ops/ones.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "tests/common/mpi_test_env.h"

namespace tandem::test {
namespace {

bool probing(std::string_view mode) {
  const char* value = std::getenv("TANDEM_MAIN_PROBE");
  return value != nullptr && mode == value;
}

TEST(MainProbe, EnvironmentKnowsTheProcess) {
  const MpiTestEnv& env = MpiTestEnv::get();
  EXPECT_EQ(env.world().size(), env.world_size());
  EXPECT_EQ(env.world().rank(), env.rank());
}

TEST(MainProbe, FailsOnTheLastRankOnly) {
  if (!probing("fail")) GTEST_SKIP() << "set TANDEM_MAIN_PROBE=fail to run this probe";
  const MpiTestEnv& env = MpiTestEnv::get();
  env.world().barrier();  // the test's collectives still match: the failure is an expectation
  EXPECT_NE(env.rank(), env.world_size() - 1) << "deliberate failure on the last rank";
}

TEST(MainProbe, UncaughtExceptionOnTheLastRankAbortsTheJob) {
  if (!probing("terminate")) GTEST_SKIP() << "set TANDEM_MAIN_PROBE=terminate to run this probe";
  const MpiTestEnv& env = MpiTestEnv::get();
  if (env.rank() == env.world_size() - 1) {
    // gtest catches exceptions of the test body; one escaping a thread reaches std::terminate.
    std::thread([] { throw std::runtime_error("deliberate uncaught exception"); }).join();
  }
  env.world().barrier();  // the others wait here (or at the verdict) until MPI_Abort ends them
}

TEST(MainProbe, LaterTestsStillRunOnEveryRank) {
  at::Tensor ones = at::ones({2});
  MpiTestEnv::get().world().all_reduce(ones);
  EXPECT_EQ(ones[0].item<float>(), static_cast<float>(MpiTestEnv::get().world_size()));
}

}  // namespace
}  // namespace tandem::test
