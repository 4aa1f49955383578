// tandem_failure_probe: a tiny job that fails on one rank while the others wait in a collective,
// to prove that one rank's error ends every rank quickly with a non-zero exit instead of a hang
// (run by expect_job_failure.sh under mpirun -np 4). It uses the top-level pattern of the real
// binary: catch tandem::Error, log it with rank, host and file:line, abort the communicators, then
// MpiSession::abort_job() so MPI_Abort takes the peers down.
//
// Usage: tandem_failure_probe [failing_rank]   (default 2, or the last rank in smaller jobs)
#include <ATen/core/Tensor.h>
#include <ATen/ops/ones.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "parallel/mpi_communicator.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/mpi_session.h"

namespace {

void run_probe(const tandem::runtime::ProcessContext& process, tandem::parallel::Communicator& world,
               int failing_rank) {
  // One collective that everybody completes, so the failure happens mid-job, not at start-up.
  at::Tensor ones = at::ones({4});
  world.all_reduce(ones);
  TANDEM_CHECK(ones[0].item<float>() == static_cast<float>(process.world_size), "warm-up all_reduce gave {}",
               ones[0].item<float>());

  if (process.rank == failing_rank) {
    TANDEM_THROW(kRuntime, "failure probe: deliberate failure on rank {}", failing_rank);
  }
  // The survivors block here, in a collective the failing rank never joins; only MPI_Abort (or the
  // communicator's timeout, far beyond the test's limit) gets them out.
  at::Tensor stuck = at::ones({4});
  world.all_reduce(stuck);
  std::printf("failure probe: rank %d left the collective without the failing rank (unexpected)\n", process.rank);
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<tandem::runtime::MpiSession> session;  // alive in the handlers below (see abort_job)
  tandem::parallel::CommunicatorPtr world;
  try {
    session.emplace(&argc, &argv);
    const tandem::runtime::ProcessContext& process = session->context();
    tandem::runtime::init_logging(process, {});
    int failing_rank = process.world_size > 2 ? 2 : process.world_size - 1;
    if (argc > 1) failing_rank = std::atoi(argv[1]);
    world = tandem::parallel::make_mpi_communicator(MPI_COMM_WORLD, "world");
    run_probe(process, *world, failing_rank);
    world.reset();
    return 0;
  } catch (const tandem::Error& error) {
    const int rank = session ? session->context().rank : -1;
    const std::string host = session ? session->context().host : std::string("unknown-host");
    TANDEM_LOG_ERROR("launch", "{}", error.rank() >= 0 ? error.what() : error.with_location(rank, host).what());
    if (!session) return tandem::exit_code_for(error.kind());  // MPI never came up: nobody to abort
    if (world) world->abort(error.message());
    tandem::runtime::MpiSession::abort_job(tandem::exit_code_for(error.kind()));
  } catch (const std::exception& error) {
    TANDEM_LOG_ERROR("launch", "unexpected exception: {}", error.what());
    if (!session) return 1;
    tandem::runtime::MpiSession::abort_job(1);
  }
}
