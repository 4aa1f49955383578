// Argument checks and small helpers shared by the Communicator backends (MPI and NCCL), so that
// both accept and refuse the same calls with the same words. Each check returns the problem as
// text, empty when the arguments are fine; the backend throws it with the operation, the
// communicator and the rank in front (its own located tandem::Error).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "parallel/communicator.h"

namespace tandem::parallel::detail {

const char* reduce_op_name(ReduceOp op);
bool byte_ranges_overlap(const at::Tensor& a, const at::Tensor& b);
std::string host_name();

// Defined, on the backend's device (`on_device`, else `device_expectation` says what is taken),
// contiguous. `role` names the argument ("tensor", "output", ...).
std::string tensor_problem(const at::Tensor& tensor, const char* role,
                           const std::function<bool(const at::Tensor&)>& on_device,
                           std::string_view device_expectation);
std::string dtype_mismatch(const at::Tensor& output, const at::Tensor& input);
// `peer` is a rank of a communicator of `size` ranks.
std::string peer_problem(int peer, int size);
// The uneven all-to-all contract of communicator.h: row shapes, one split per rank, splits >= 0
// and summing to the rows of their tensor, no overlap.
std::string all_to_all_problem(const at::Tensor& output, const at::Tensor& input,
                               const std::vector<int64_t>& output_splits, const std::vector<int64_t>& input_splits,
                               int size);

}  // namespace tandem::parallel::detail
