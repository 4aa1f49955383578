// CommunicatorBase (see detail/communicator_base.h).
#include "parallel/detail/communicator_base.h"

#include <unistd.h>

#include "runtime/log.h"

namespace tandem::parallel::detail {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

bool byte_ranges_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto* a_begin = static_cast<const char*>(a.data_ptr());
  const auto* b_begin = static_cast<const char*>(b.data_ptr());
  return a_begin < b_begin + b.nbytes() && b_begin < a_begin + a.nbytes();
}

namespace {

std::string host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

std::string tensor_problem(const at::Tensor& tensor, const char* role,
                           const std::function<bool(const at::Tensor&)>& on_device,
                           std::string_view device_expectation) {
  if (!tensor.defined()) return fmt::format("`{}` is an undefined tensor", role);
  if (!on_device(tensor)) {
    return fmt::format("`{}` is a {} tensor on {}; {}", role, c10::str(tensor.layout()), tensor.device().str(),
                       device_expectation);
  }
  if (!tensor.is_contiguous()) {
    return fmt::format(
        "`{}` is not contiguous (sizes [{}], strides [{}]); pass a contiguous tensor (for an in-place operation on a "
        "view, run it on view.contiguous() and copy the result back)",
        role, fmt::join(tensor.sizes(), ", "), fmt::join(tensor.strides(), ", "));
  }
  return {};
}

std::string dtype_mismatch(const at::Tensor& output, const at::Tensor& input) {
  if (output.scalar_type() == input.scalar_type()) return {};
  return fmt::format("`output` is {} but `input` is {}; both must have the same dtype",
                     c10::toString(output.scalar_type()), c10::toString(input.scalar_type()));
}

std::string peer_problem(int peer, int size) {
  if (peer >= 0 && peer < size) return {};
  return fmt::format("peer {} is not a rank of this communicator (expected 0..{})", peer, size - 1);
}

std::string all_to_all_problem(const at::Tensor& output, const at::Tensor& input,
                               const std::vector<int64_t>& output_splits, const std::vector<int64_t>& input_splits,
                               int size) {
  if (input.dim() < 1 || output.dim() < 1) {
    return fmt::format("splits count rows of dim 0, but `input` has {} dims and `output` {}", input.dim(),
                       output.dim());
  }
  if (input.sizes().slice(1) != output.sizes().slice(1)) {
    return fmt::format("rows differ in shape: `input` is [{}] and `output` is [{}] (all dims but the first must match)",
                       fmt::join(input.sizes(), ", "), fmt::join(output.sizes(), ", "));
  }
  const auto splits_problem = [&](const std::vector<int64_t>& splits, const char* role, int64_t rows) -> std::string {
    if (static_cast<int64_t>(splits.size()) != size) {
      return fmt::format("{} has {} entries, expected one per rank ({})", role, splits.size(), size);
    }
    int64_t total = 0;
    for (size_t j = 0; j < splits.size(); ++j) {
      if (splits[j] < 0) return fmt::format("{}[{}] is {}; splits must be >= 0", role, j, splits[j]);
      total += splits[j];
    }
    if (total != rows) return fmt::format("{} sum to {} rows, but the tensor has {} rows (dim 0)", role, total, rows);
    return {};
  };
  if (std::string problem = splits_problem(input_splits, "input_splits", input.size(0)); !problem.empty()) {
    return problem;
  }
  if (std::string problem = splits_problem(output_splits, "output_splits", output.size(0)); !problem.empty()) {
    return problem;
  }
  if (byte_ranges_overlap(output, input)) return "`output` and `input` overlap";
  return {};
}

}  // namespace

CommunicatorBase::CommunicatorBase(std::string name, std::chrono::milliseconds timeout)
    : name_(std::move(name)), timeout_(timeout), host_(host_name()) {
  TANDEM_CHECK(timeout.count() > 0, "communicator '{}': timeout must be positive, got {} ms", name_, timeout.count());
}

void CommunicatorBase::set_identity(int rank, int size, int world_rank, std::string prefix, std::string suffix) {
  rank_ = rank;
  size_ = size;
  world_rank_ = world_rank;
  where_prefix_ = std::move(prefix);
  where_suffix_ = std::move(suffix);
}

std::string CommunicatorBase::describe(std::string_view op) const {
  return fmt::format("{} on '{}' ({}rank {} of {}{})", op, name_, where_prefix_, rank_, size_, where_suffix_);
}

Error CommunicatorBase::located_error(ErrorKind kind, const char* file, int line, std::string message) const {
  return Error(kind, std::move(message), file, line).with_location(world_rank_, host_);
}

std::string CommunicatorBase::failure_reason() const {
  std::lock_guard<std::mutex> lock(failure_mutex_);
  return failure_reason_;
}

bool CommunicatorBase::mark_failed(ErrorKind kind, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(failure_mutex_);
    if (failure_reason_.empty()) {
      failure_reason_ = reason.empty() ? std::string("aborted") : reason;
      failure_kind_ = kind;
    }
  }
  if (failed_.exchange(true, std::memory_order_acq_rel)) return false;
  TANDEM_LOG_WARN("comm", "{} communicator '{}' (rank {} of {}) aborted: {}", backend(), name_, rank_, size_, reason);
  return true;
}

void CommunicatorBase::throw_failure(std::string_view op, const char* file, int line) const {
  std::lock_guard<std::mutex> lock(failure_mutex_);
  throw located_error(failure_kind_, file, line,
                      fmt::format("{}: the communicator was aborted ({}); no further operations can run on it",
                                  describe(op), failure_reason_));
}

void CommunicatorBase::check_usable(std::string_view op) const {
  if (failed()) [[unlikely]]
    throw_failure(op, __FILE__, __LINE__);
}

void CommunicatorBase::check_tensor(std::string_view op, const at::Tensor& tensor, const char* role,
                                    const std::function<bool(const at::Tensor&)>& on_device,
                                    std::string_view expectation) const {
  const std::string problem = tensor_problem(tensor, role, on_device, expectation);
  TANDEM_COMM_CHECK(*this, problem.empty(), "{}: {}", describe(op), problem);
}

void CommunicatorBase::check_same_dtype(std::string_view op, const at::Tensor& output, const at::Tensor& input) const {
  const std::string problem = dtype_mismatch(output, input);
  TANDEM_COMM_CHECK(*this, problem.empty(), "{}: {}", describe(op), problem);
}

void CommunicatorBase::check_peer(std::string_view op, int peer) const {
  const std::string problem = peer_problem(peer, size_);
  TANDEM_COMM_CHECK(*this, problem.empty(), "{}: {}", describe(op), problem);
}

void CommunicatorBase::check_all_to_all(std::string_view op, const at::Tensor& output, const at::Tensor& input,
                                        const std::vector<int64_t>& output_splits,
                                        const std::vector<int64_t>& input_splits) const {
  const std::string problem = all_to_all_problem(output, input, output_splits, input_splits, size_);
  TANDEM_COMM_CHECK(*this, problem.empty(), "{}: {}", describe(op), problem);
}

}  // namespace tandem::parallel::detail
