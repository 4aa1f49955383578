// tandem::Error and the check macros: the one way library code reports a failure.
// Every error carries a kind (which decides the exit code: bad input 2, failure 1), a message
// that says what went wrong and what to do, and the file:line of the throw site. Rank and host
// are filled in by whoever knows them (communicators, the top-level handler), so this header
// stays free of process state. All macros funnel into one cold, non-inlined reporter.
#pragma once

#include <spdlog/fmt/fmt.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace tandem {

enum class ErrorKind {
  kConfig,         // a job file or command-line value is wrong: exit 2
  kInput,          // data, checkpoint or other user-provided input is wrong: exit 2
  kRuntime,        // something failed while running: exit 1
  kCommunication,  // a collective or p2p operation failed or timed out: exit 1
  kCuda,           // a CUDA runtime call failed: exit 1
  kNccl,           // an NCCL call failed: exit 1
  kMpi,            // an MPI call failed: exit 1
  kIo,             // a file could not be read or written: exit 1
  kInternal,       // an invariant of tandem itself broke (a bug): exit 1
};

std::string_view error_kind_name(ErrorKind kind);

// Exit code the process should end with for an error of this kind (DESIGN.md section 7).
int exit_code_for(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message, const char* file, int line);

  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  const char* file() const { return file_; }
  int line() const { return line_; }
  int rank() const { return rank_; }  // -1 when the thrower did not know it
  const std::string& host() const { return host_; }

  // Returns a copy that names the rank and host it happened on (used by communicators and the
  // top-level handler). what() then reads "[rank 3 on node7] file:line: message".
  Error with_location(int rank, std::string host) const;

 private:
  void compose_what();

  ErrorKind kind_;
  std::string message_;
  const char* file_;
  int line_;
  int rank_ = -1;
  std::string host_;
};

namespace detail {
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void throw_error(ErrorKind kind, const char* file, int line,
                                                              std::string message);
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void throw_check_failure(ErrorKind kind, const char* file, int line,
                                                                      const char* condition, std::string message);
}  // namespace detail
}  // namespace tandem

// Throws tandem::Error of the given kind with a formatted message.
#define TANDEM_THROW(kind, ...) \
  ::tandem::detail::throw_error(::tandem::ErrorKind::kind, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__))

// Invariant checks. TANDEM_CHECK is for conditions that only a bug can break; the _CONFIG and
// _INPUT variants are for what a user controls (they exit 2 and must say what to change).
#define TANDEM_CHECK(cond, ...)                                                                        \
  do {                                                                                                 \
    if (!(cond)) [[unlikely]]                                                                          \
      ::tandem::detail::throw_check_failure(::tandem::ErrorKind::kInternal, __FILE__, __LINE__, #cond, \
                                            ::fmt::format(__VA_ARGS__));                               \
  } while (0)
#define TANDEM_CHECK_KIND(kind, cond, ...)                                                                      \
  do {                                                                                                          \
    if (!(cond)) [[unlikely]]                                                                                   \
      ::tandem::detail::throw_error(::tandem::ErrorKind::kind, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)
#define TANDEM_CHECK_CONFIG(cond, ...) TANDEM_CHECK_KIND(kConfig, cond, __VA_ARGS__)
#define TANDEM_CHECK_INPUT(cond, ...) TANDEM_CHECK_KIND(kInput, cond, __VA_ARGS__)
