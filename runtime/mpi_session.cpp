// MPI bootstrap and job-wide exits (see mpi_session.h).
#include "runtime/mpi_session.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdlib>

#include "runtime/log.h"
#include "runtime/mpi_check.h"

namespace tandem::runtime {

namespace detail {
void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  ::tandem::detail::throw_error(ErrorKind::kMpi, file, line,
                                fmt::format("{} failed with code {}: {}", call, code, std::string(text, length)));
}
}  // namespace detail

namespace {
std::string host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}
}  // namespace

ProcessContext single_process_context() {
  ProcessContext context;
  context.host = host_name();
  context.pid = static_cast<int>(getpid());
  return context;
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int already = 0;
  TANDEM_MPI_CHECK(MPI_Initialized(&already));
  if (already) {
    TANDEM_MPI_CHECK(MPI_Query_thread(&thread_level_));
  } else {
    TANDEM_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_));
    initialised_here_ = true;
  }
  // Errors come back as return codes, so TANDEM_MPI_CHECK can report them with context
  // instead of MPI killing the job with its own terse message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  context_ = single_process_context();
  TANDEM_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &context_.rank));
  TANDEM_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &context_.world_size));
  MPI_Comm node_comm = MPI_COMM_NULL;
  TANDEM_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, context_.rank, MPI_INFO_NULL, &node_comm));
  TANDEM_MPI_CHECK(MPI_Comm_rank(node_comm, &context_.local_rank));
  TANDEM_MPI_CHECK(MPI_Comm_size(node_comm, &context_.local_size));
  MPI_Comm_free(&node_comm);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (initialised_here_ && !finalized) MPI_Finalize();
}

bool MpiSession::any_rank(bool flag) const { return max_over_ranks(flag ? 1 : 0) != 0; }

int MpiSession::max_over_ranks(int value) const {
  int global = 0;
  TANDEM_MPI_CHECK(MPI_Allreduce(&value, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  return global;
}

std::vector<uint64_t> MpiSession::all_gather(uint64_t value) const {
  std::vector<uint64_t> values(static_cast<size_t>(context_.world_size));
  TANDEM_MPI_CHECK(MPI_Allgather(&value, 1, MPI_UINT64_T, values.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD));
  return values;
}

void MpiSession::abort_job(int exit_code) {
  flush_logs();
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort should not return; make sure this process ends regardless
}

}  // namespace tandem::runtime
