// MpiTestEnv (see mpi_test_env.h).
#include "tests/common/mpi_test_env.h"

#include "parallel/mpi_communicator.h"

namespace tandem::test {
namespace {
// Written once, by the constructor the shared main calls before RUN_ALL_TESTS; read-only after.
// The one process-wide pointer of the test harness: gtest builds fixtures with no arguments, so
// tests have no other way to reach the environment (the header says more).
MpiTestEnv* registered_env = nullptr;
}  // namespace

MpiTestEnv::MpiTestEnv(const runtime::ProcessContext& process) : process_(process) {
  if (registered_env != nullptr) {
    throw std::logic_error("MpiTestEnv: a second environment was constructed; the shared main makes exactly one");
  }
  registered_env = this;
}

MpiTestEnv& MpiTestEnv::get() {
  if (registered_env == nullptr) {
    throw std::logic_error("MpiTestEnv::get(): no environment; link the test with tandem_mpi_gtest_main");
  }
  return *registered_env;
}

void MpiTestEnv::SetUp() { world_ = make_communicator("world"); }

void MpiTestEnv::TearDown() { world_.reset(); }

parallel::Communicator& MpiTestEnv::world() const {
  if (!world_) throw std::logic_error("MpiTestEnv::world() used outside of the test run");
  return *world_;
}

parallel::CommunicatorPtr MpiTestEnv::make_communicator(std::string name, MPI_Comm comm,
                                                        std::chrono::milliseconds timeout) const {
  return parallel::make_mpi_communicator(comm, std::move(name), timeout);
}

}  // namespace tandem::test
