// Out-of-line pieces of tandem::Error: kept here so the throw sites stay small and cold.
#include "runtime/error.h"

namespace tandem {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kConfig: return "config error";
    case ErrorKind::kInput: return "input error";
    case ErrorKind::kRuntime: return "runtime error";
    case ErrorKind::kCommunication: return "communication error";
    case ErrorKind::kCuda: return "CUDA error";
    case ErrorKind::kNccl: return "NCCL error";
    case ErrorKind::kMpi: return "MPI error";
    case ErrorKind::kIo: return "I/O error";
    case ErrorKind::kInternal: return "internal error";
  }
  return "error";
}

int exit_code_for(ErrorKind kind) { return (kind == ErrorKind::kConfig || kind == ErrorKind::kInput) ? 2 : 1; }

Error::Error(ErrorKind kind, std::string message, const char* file, int line)
    : std::runtime_error(message), kind_(kind), message_(std::move(message)), file_(file), line_(line) {
  compose_what();
}

Error Error::with_location(int rank, std::string host) const {
  Error copy = *this;
  copy.rank_ = rank;
  copy.host_ = std::move(host);
  copy.compose_what();
  return copy;
}

void Error::compose_what() {
  std::string where = rank_ >= 0 ? fmt::format("[rank {} on {}] ", rank_, host_) : std::string();
  static_cast<std::runtime_error&>(*this) =
      std::runtime_error(fmt::format("{}{} at {}:{}: {}", where, error_kind_name(kind_), file_, line_, message_));
}

namespace detail {
void throw_error(ErrorKind kind, const char* file, int line, std::string message) {
  throw Error(kind, std::move(message), file, line);
}

void throw_check_failure(ErrorKind kind, const char* file, int line, const char* condition, std::string message) {
  throw Error(kind, fmt::format("check `{}` failed: {}", condition, message), file, line);
}
}  // namespace detail
}  // namespace tandem
