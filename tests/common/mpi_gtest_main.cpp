// Shared main of every multi-rank gtest executable (run under mpirun; see tests/mpi/CMakeLists.txt).
// Every rank runs every test. Rank 0 prints gtest's usual output; the other ranks print only their
// failures, each line tagged `[rank N]`. After each test rank 0 names the ranks that failed it, and
// at the end the ranks combine their verdicts so that all of them exit with the same code: a
// failure anywhere fails the job everywhere, and ctest sees one answer.
// A rank that hits an uncaught exception (or anything else that would end it alone) calls
// MPI_Abort, so its peers never wait forever for a collective it will not join.
#include <gtest/gtest.h>
#include <mpi.h>
#include <spdlog/fmt/fmt.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/mpi_session.h"
#include "tests/common/mpi_test_env.h"

namespace {

using tandem::test::MpiTestEnv;

int world_rank_or_minus_one() {
  int initialised = 0;
  int finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  int rank = -1;
  if (initialised && !finalised) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// std::terminate on any rank (an exception escaping a thread or a noexcept function, or main's own
// handler failing): report it and take the whole job down, rather than leave peers waiting.
[[noreturn]] void terminate_job() {
  std::string what = "no active exception";
  if (const std::exception_ptr current = std::current_exception()) {
    try {
      std::rethrow_exception(current);
    } catch (const std::exception& error) {
      what = error.what();
    } catch (...) {
      what = "an exception not derived from std::exception";
    }
  }
  std::fprintf(stderr, "[rank %d] fatal: std::terminate called (%s); aborting every rank of the job\n",
               world_rank_or_minus_one(), what.c_str());
  std::fflush(stderr);
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (initialised) tandem::runtime::MpiSession::abort_job(1);
  std::_Exit(1);
}

// Prefixes every line of `text` with `[rank N] `.
std::string tag_lines(int rank, const std::string& text) {
  std::string tagged;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    tagged += fmt::format("[rank {}] {}\n", rank, text.substr(begin, end - begin));
    begin = end + 1;
  }
  return tagged;
}

// Ranks other than 0 have gtest's printer removed (one voice is enough for progress); this keeps
// their failures visible, since a failure on one rank only is exactly what needs to be seen.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  // The test is remembered here because UnitTest::current_test_info() takes the lock gtest holds
  // while it calls OnTestPartResult.
  void OnTestStart(const ::testing::TestInfo& test) override { current_ = &test; }
  void OnTestEnd(const ::testing::TestInfo& /*test*/) override { current_ = nullptr; }

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const std::string name = current_ != nullptr ? fmt::format("{}.{}", current_->test_suite_name(), current_->name())
                                                 : std::string("(outside any test)");
    const std::string where = result.file_name() != nullptr
                                  ? fmt::format("{}:{}", result.file_name(), result.line_number())
                                  : std::string("unknown file");
    const std::string text = fmt::format("{}: Failure in {}\n{}", where, name, result.message());
    std::fputs(tag_lines(rank_, text).c_str(), stderr);
    std::fflush(stderr);
  }

 private:
  int rank_;
  const ::testing::TestInfo* current_ = nullptr;
};

// How long a rank waits at a verdict exchange for the others to finish the same test. Tests are
// meant to take seconds; a rank still missing after this is stuck, and saying so (then aborting)
// beats waiting silently for ctest's timeout.
constexpr auto kVerdictTimeout = std::chrono::seconds(60);

// Completes `request` without spinning a core: ranks are oversubscribed on development machines
// and a rank that busy-waits slows down the very peer it waits for.
void wait_politely(MPI_Request& request, int rank, const std::string& what) {
  const auto begin = std::chrono::steady_clock::now();
  for (;;) {
    int done = 0;
    if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
      std::fprintf(stderr, "[rank %d] fatal: MPI failed while %s\n", rank, what.c_str());
      tandem::runtime::MpiSession::abort_job(1);
    }
    if (done) return;
    const auto waited = std::chrono::steady_clock::now() - begin;
    if (waited > kVerdictTimeout) {
      std::fprintf(stderr,
                   "[rank %d] fatal: other ranks did not arrive within %lld s while %s; a rank is stuck "
                   "(its last output says where); aborting the job\n",
                   rank, static_cast<long long>(kVerdictTimeout.count()), what.c_str());
      tandem::runtime::MpiSession::abort_job(1);
    }
    if (waited > std::chrono::milliseconds(2)) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    } else {
      std::this_thread::yield();
    }
  }
}

// Gathers every rank's `failed` flag to rank 0 and returns the failing ranks there (empty elsewhere).
std::vector<int> failing_ranks(MPI_Comm comm, int rank, int size, bool failed, const std::string& what) {
  const int flag = failed ? 1 : 0;
  std::vector<int> flags(rank == 0 ? size : 0);
  MPI_Request request = MPI_REQUEST_NULL;
  if (MPI_Igather(&flag, 1, MPI_INT, flags.data(), 1, MPI_INT, 0, comm, &request) != MPI_SUCCESS) {
    std::fprintf(stderr, "[rank %d] fatal: MPI_Igather of the test verdicts failed\n", rank);
    tandem::runtime::MpiSession::abort_job(1);
  }
  wait_politely(request, rank, what);
  std::vector<int> failing;
  for (int r = 0; r < static_cast<int>(flags.size()); ++r) {
    if (flags[r] != 0) failing.push_back(r);
  }
  return failing;
}

// On every rank: after each test, rank 0 learns which ranks failed it and prints them, so rank 0's
// output alone tells which test failed where. Runs over its own communicator, apart from the
// traffic of the tests.
class RankVerdictReporter : public ::testing::EmptyTestEventListener {
 public:
  RankVerdictReporter(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}

  void OnTestEnd(const ::testing::TestInfo& test) override {
    const std::vector<int> failing =
        failing_ranks(comm_, rank_, size_, test.result()->Failed(),
                      fmt::format("collecting the verdicts of {}.{}", test.test_suite_name(), test.name()));
    if (rank_ == 0 && !failing.empty()) {
      std::printf("[  RANKS   ] %s.%s failed on rank(s) %s of %d\n", test.test_suite_name(), test.name(),
                  fmt::format("{}", fmt::join(failing, ", ")).c_str(), size_);
      std::fflush(stdout);
    }
  }

 private:
  MPI_Comm comm_;
  int rank_;
  int size_;
};

// --gtest_shuffle picks a time-based seed per process unless told one; the ranks must shuffle
// identically or their collectives would not match, so rank 0's seed is used everywhere.
void agree_on_shuffle_seed(int rank) {
  if (!GTEST_FLAG_GET(shuffle)) return;
  int seed = GTEST_FLAG_GET(random_seed);
  if (seed == 0 && rank == 0) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    seed = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count() % 99999) + 1;
  }
  MPI_Bcast(&seed, 1, MPI_INT, 0, MPI_COMM_WORLD);
  GTEST_FLAG_SET(random_seed, seed);
}

int run(int argc, char** argv, const tandem::runtime::ProcessContext& process) {
  tandem::runtime::LogOptions log_options;
  const char* level = std::getenv("TANDEM_LOG_LEVEL");
  log_options.level = level != nullptr ? level : "warn";  // tests speak through gtest, not the log
  tandem::runtime::init_logging(process, log_options);

  ::testing::InitGoogleTest(&argc, argv);
  agree_on_shuffle_seed(process.rank);
  ::testing::AddGlobalTestEnvironment(new MpiTestEnv(process));  // gtest owns it

  MPI_Comm verdict_comm = MPI_COMM_NULL;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &verdict_comm) != MPI_SUCCESS) {
    TANDEM_THROW(kMpi, "MPI_Comm_dup of MPI_COMM_WORLD failed (verdict communicator of the test main)");
  }
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  ::testing::TestEventListener* printer = listeners.Release(listeners.default_result_printer());
  // gtest calls *End events in reverse order of registration: the reporter goes in before the
  // printer so that rank 0's "failed on rank(s)" line follows the test's own result line.
  listeners.Append(new RankVerdictReporter(verdict_comm, process.rank, process.world_size));
  if (process.rank == 0) {
    listeners.Append(printer);
  } else {
    delete printer;
    listeners.Append(new RankFailurePrinter(process.rank));
  }

  const bool failed_here = RUN_ALL_TESTS() != 0;

  const std::vector<int> failing =
      failing_ranks(verdict_comm, process.rank, process.world_size, failed_here, "collecting the final verdicts");
  int any_failed = failed_here ? 1 : 0;
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_Iallreduce(MPI_IN_PLACE, &any_failed, 1, MPI_INT, MPI_MAX, verdict_comm, &request);
  wait_politely(request, process.rank, "agreeing on the final verdict");
  if (process.rank == 0) {
    if (any_failed != 0) {
      std::printf("[  FAILED  ] tests failed on rank(s) %s of %d; every rank exits 1\n",
                  fmt::format("{}", fmt::join(failing, ", ")).c_str(), process.world_size);
    } else {
      std::printf("[  PASSED  ] all %d ranks passed\n", process.world_size);
    }
    std::fflush(stdout);
  }
  MPI_Comm_free(&verdict_comm);
  return any_failed != 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::set_terminate(&terminate_job);
  // Outside the try: an error must reach MPI_Abort with MPI still up. Letting the session finalise
  // MPI during unwinding would leave this rank waiting in MPI_Finalize for peers that wait for it.
  std::optional<tandem::runtime::MpiSession> session;
  try {
    session.emplace(&argc, &argv);
    return run(argc, argv, session->context());  // `session` finalises MPI on the way out
  } catch (const tandem::Error& error) {
    std::fprintf(stderr, "[rank %d] fatal: %s\n", world_rank_or_minus_one(), error.what());
    std::fflush(stderr);
    if (world_rank_or_minus_one() >= 0) tandem::runtime::MpiSession::abort_job(tandem::exit_code_for(error.kind()));
    return tandem::exit_code_for(error.kind());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "[rank %d] fatal: %s\n", world_rank_or_minus_one(), error.what());
    std::fflush(stderr);
    if (world_rank_or_minus_one() >= 0) tandem::runtime::MpiSession::abort_job(1);
    return 1;
  }
}
