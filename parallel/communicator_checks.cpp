// See communicator_checks.h.
#include "parallel/communicator_checks.h"

#include <unistd.h>

#include "runtime/error.h"

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

}  // namespace tandem::parallel::detail
