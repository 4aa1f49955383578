// Values shared by the communicator tests of every backend (MPI in tests/mpi, NCCL in tests/gpu):
// the dtypes training communicates and small exact integers that every one of them holds.
#pragma once

#include <ATen/ATen.h>
#include <spdlog/fmt/fmt.h>

#include <array>
#include <string>

namespace tandem::test {

// Every dtype training code communicates.
inline constexpr std::array<at::ScalarType, 7> kDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf,
                                                          at::kLong,  at::kInt,    at::kByte};
inline constexpr std::array<at::ScalarType, 4> kFloatingDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

// 0, 1, ..., n-1 as doubles (exact; converted to each dtype by the tests).
inline at::Tensor indices(int64_t n) { return at::arange(n, at::TensorOptions().dtype(at::kDouble)); }

// "[1, 2.5, 3]": a tensor's values on one line, for failure messages (any device).
inline std::string values_of(const at::Tensor& tensor) {
  const at::Tensor flat = tensor.to(at::kCPU).to(at::kDouble).flatten().contiguous();
  const double* data = flat.data_ptr<double>();
  return fmt::format("[{}]", fmt::join(data, data + flat.numel(), ", "));
}

}  // namespace tandem::test
