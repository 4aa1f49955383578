// The test environment of multi-rank gtest executables (those linking tandem_mpi_gtest_main):
// gives tests this process's identity and a world communicator. Every rank runs every test; the
// shared main (mpi_gtest_main.cpp) makes all ranks agree on one verdict.
//
// Rules for tests written against it:
//  - Every rank runs the same tests in the same order, so collectives inside a test match up. A
//    test must issue the same collectives on every rank even when an expectation fails on one
//    (prefer EXPECT_* to ASSERT_* between collectives, or the other ranks wait for the timeout).
//  - A test that aborts a communicator or lets one time out builds its own (make_communicator);
//    world() stays healthy for the tests after it.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <string>

#include "parallel/communicator.h"
#include "runtime/process_context.h"

namespace tandem::test {

class MpiTestEnv : public ::testing::Environment {
 public:
  // Communicator timeout for tests: long enough for 4 oversubscribed ranks on 2 cores, short
  // enough that a mismatched collective fails well inside the ctest timeout.
  static constexpr std::chrono::milliseconds kCommTimeout = std::chrono::seconds(20);

  // Registered by the shared main, which owns MPI (runtime::MpiSession) for the whole run.
  explicit MpiTestEnv(const runtime::ProcessContext& process);

  // The environment the shared main registered. gtest constructs fixtures itself, so there is no
  // way to hand them a reference: this write-once pointer (set by the constructor, before any test
  // runs, never changed after) is the one channel. Fails the calling test if there is none.
  static MpiTestEnv& get();

  void SetUp() override;     // builds world() (collective over MPI_COMM_WORLD)
  void TearDown() override;  // releases world() before MPI_Finalize

  const runtime::ProcessContext& process() const { return process_; }
  int rank() const { return process_.rank; }
  int world_size() const { return process_.world_size; }

  // Communicator over every rank, named "world", with kCommTimeout. Shared by all tests.
  parallel::Communicator& world() const;

  // A fresh MPI communicator over a duplicate of `comm` (collective over `comm`): for tests that
  // need their own (abort, timeouts, sub-groups).
  parallel::CommunicatorPtr make_communicator(std::string name, MPI_Comm comm = MPI_COMM_WORLD,
                                              std::chrono::milliseconds timeout = kCommTimeout) const;

 private:
  runtime::ProcessContext process_;
  parallel::CommunicatorPtr world_;
};

}  // namespace tandem::test
