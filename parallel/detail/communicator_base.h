// CommunicatorBase: what the MPI and NCCL backends of Communicator share, so that both accept and
// refuse the same calls with the same words: the identity (name, rank, size, world rank, host),
// the timeout, the failure state (the first reason wins; every later operation throws it) and
// the argument checks. Every error it throws is a tandem::Error located on this rank and host,
// naming the operation and the communicator ("all_reduce(sum) on 'dp' (rank 1 of 2): ...").
// Internal to parallel/. Thread-safety: the failure state may be set from any thread (watchdogs,
// abort()); everything else belongs to the one thread that issues operations.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/error.h"

namespace tandem::parallel::detail {

const char* reduce_op_name(ReduceOp op);
bool byte_ranges_overlap(const at::Tensor& a, const at::Tensor& b);

class CommunicatorBase : public Communicator {
 public:
  int rank() const final { return rank_; }
  int size() const final { return size_; }
  const std::string& name() const final { return name_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string failure_reason() const;
  // "all_reduce(sum) on 'dp' (rank 1 of 2)" (plus the backend's details): the subject of every
  // message about an operation.
  std::string describe(std::string_view op) const;
  // An Error that also names the world rank and host it happened on.
  Error located_error(ErrorKind kind, const char* file, int line, std::string message) const;
  // The error every use of a failed communicator throws (of the kind it failed with).
  [[noreturn]] void throw_failure(std::string_view op, const char* file, int line) const;

 protected:
  // Throws kInternal unless `timeout` is positive.
  CommunicatorBase(std::string name, std::chrono::milliseconds timeout);
  // The backend's place, once its constructor knows it. describe() shows
  // "(<prefix>rank R of S<suffix>)", e.g. prefix "nccl, " and suffix ", cuda:0".
  void set_identity(int rank, int size, int world_rank, std::string prefix = {}, std::string suffix = {});
  // Records `reason` (of `kind`) as the failure unless one is recorded already; returns true for
  // the call that marked the communicator failed, which then releases what its backend must (and
  // logs a warning). Any thread.
  bool mark_failed(ErrorKind kind, const std::string& reason);

  // Each check throws kCommunication naming `op` when its arguments are wrong.
  void check_usable(std::string_view op) const;
  // Defined, on this backend's device (`on_device`; `expectation` says what is taken), contiguous.
  // `role` names the argument ("tensor", "output", ...).
  void check_tensor(std::string_view op, const at::Tensor& tensor, const char* role,
                    const std::function<bool(const at::Tensor&)>& on_device, std::string_view expectation) const;
  void check_same_dtype(std::string_view op, const at::Tensor& output, const at::Tensor& input) const;
  // `peer` is a rank of this communicator.
  void check_peer(std::string_view op, int peer) const;
  // The uneven all-to-all contract of communicator.h: row shapes, one split per rank, splits >= 0
  // and summing to the rows of their tensor, no overlap.
  void check_all_to_all(std::string_view op, const at::Tensor& output, const at::Tensor& input,
                        const std::vector<int64_t>& output_splits, const std::vector<int64_t>& input_splits) const;

 private:
  std::string name_;
  std::chrono::milliseconds timeout_;
  std::string host_;
  int rank_ = 0;
  int size_ = 0;
  int world_rank_ = -1;
  std::string where_prefix_;
  std::string where_suffix_;

  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mutex_;
  ErrorKind failure_kind_ = ErrorKind::kCommunication;
  std::string failure_reason_;
};

}  // namespace tandem::parallel::detail

// Throws tandem::Error of `kind` located on communicator `comm`'s rank and host.
#define TANDEM_COMM_THROW(comm, kind, ...) \
  throw(comm).located_error(::tandem::ErrorKind::kind, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
// Throws kCommunication, located on `comm`, unless `cond` holds.
#define TANDEM_COMM_CHECK(comm, cond, ...)                  \
  do {                                                      \
    if (!(cond)) [[unlikely]]                               \
      TANDEM_COMM_THROW(comm, kCommunication, __VA_ARGS__); \
  } while (0)
