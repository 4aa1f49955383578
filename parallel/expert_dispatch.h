// Expert-parallel dispatch and combine: the all-to-alls that move MoE token rows to the ep rank
// holding their expert and the expert outputs back. With E experts over ep ranks, expert e lives
// on ep rank e / (E / ep) as local expert e % (E / ep). One MoE call, on every rank of `ep`:
//   1. permute the rows so that each expert's are contiguous, experts in global order; count them;
//   2. layout = start_count_exchange(rows_per_expert, ep, device).wait();
//   3. grouped = start_dispatch(rows, layout, ep).wait();   // [R_recv, C] by local expert
//   4. run each local expert on its block (layout->rows_per_local_expert);
//   5. back = start_combine(expert_out, layout, ep).wait(); // [R_send, C] in step 1's order
// start_* issue the collective and return at once; wait() completes it. Every rank of `ep` starts
// the same exchanges in the same order; one thread drives a communicator. Results are autograd
// outputs whose backward is the opposite transport (blocking, or calling an OverlapHook between
// its start and its wait). Any rank or expert may have zero rows.
// Why: docs/DESIGN.md#expert-dispatch-and-combine
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/overlap_hook.h"

namespace tandem::parallel {

// The plan of one exchange, the same object for dispatch, combine and their backward passes.
struct DispatchLayout {
  int64_t ep_size = 1;
  int64_t num_local_experts = 0;
  std::vector<int64_t> send_splits;            // [ep] rows this rank sends to each ep rank
  std::vector<int64_t> recv_splits;            // [ep] rows this rank receives from each ep rank
  std::vector<int64_t> recv_counts;            // [ep * E_l] rows from rank i for local expert e at i * E_l + e
  std::vector<int64_t> rows_per_local_expert;  // [E_l] sizes of the expert-grouped blocks
  at::Tensor expert_order;                     // [R_recv] int64: grouped row r is arrived row expert_order[r]
  at::Tensor arrival_order;                    // [R_recv] int64: the inverse permutation

  int64_t num_send_rows() const;
  int64_t num_recv_rows() const;
};
using DispatchLayoutPtr = std::shared_ptr<const DispatchLayout>;

// A collective in flight whose result is a plain tensor (no autograd graph).
class TransportHandle {
 public:
  TransportHandle() = default;
  TransportHandle(WorkHandle work, at::Tensor buffer, at::Tensor after_order);
  TransportHandle(TransportHandle&&) = default;
  TransportHandle& operator=(TransportHandle&&) = default;
  // Blocks until the collective is complete (Work::wait semantics) and returns its result.
  // Call once.
  at::Tensor wait();

 private:
  WorkHandle work_;
  at::Tensor buffer_;       // the all-to-all output
  at::Tensor after_order_;  // gather applied after arrival (undefined: none)
};

// Step 2: starts the all-to-all of counts. rows_per_expert [E] (E % ep == 0) are the rows this
// rank sends to each global expert. `device`: where the layout's index tensors live (the device
// of the token rows; also the device of the counts buffer, which must suit the backend).
class CountsHandle {
 public:
  CountsHandle(TransportHandle transport, int64_t ep_size, int64_t num_local_experts, std::vector<int64_t> send_counts,
               at::Device device);
  CountsHandle(CountsHandle&&) = default;
  DispatchLayoutPtr wait();  // blocks; call once

 private:
  TransportHandle transport_;
  int64_t ep_size_;
  int64_t num_local_experts_;
  std::vector<int64_t> send_counts_;
  at::Device device_;
};
CountsHandle start_count_exchange(const std::vector<int64_t>& rows_per_expert, const CommunicatorPtr& ep,
                                  at::Device device);
// The same, blocking. A null or size-1 `ep` needs no communication.
DispatchLayoutPtr exchange_counts(const std::vector<int64_t>& rows_per_expert, const CommunicatorPtr& ep,
                                  at::Device device);

// Plain transports (no autograd), the building blocks of dispatch, combine and their backward:
// to_experts: rows [R_send, ...] in send order -> [R_recv, ...] grouped by local expert;
// to_senders: [R_recv, ...] grouped by local expert -> [R_send, ...] back in send order.
TransportHandle start_to_experts(const at::Tensor& rows, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep);
TransportHandle start_to_senders(const at::Tensor& grouped, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep);

// Step 3 with autograd: rows [R_send, C] -> (wait) [R_recv, C] grouped by local expert.
class DispatchHandle {
 public:
  DispatchHandle(at::Tensor rows, TransportHandle transport, DispatchLayoutPtr layout, CommunicatorPtr ep,
                 OverlapHookPtr hook = nullptr);
  DispatchHandle(DispatchHandle&&) = default;
  // Blocks; the result's backward transports its gradient to the senders (blocking, in autograd).
  // Within a local expert the rows come by source rank, then in the order they were sent.
  at::Tensor wait();
  // Blocks; returns the result as a new leaf requiring grad, for an executor that moves the
  // gradient itself: start_to_senders(leaf.grad()), other work, wait, then
  // torch::autograd::backward({rows}, {moved gradient}).
  at::Tensor wait_detached();

 private:
  at::Tensor rows_;
  TransportHandle transport_;
  DispatchLayoutPtr layout_;
  CommunicatorPtr ep_;
  OverlapHookPtr hook_;
};
// `hook` (may be null): called by the backward transport between its start and its wait.
DispatchHandle start_dispatch(const at::Tensor& rows, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep,
                              const OverlapHookPtr& hook = nullptr);

// Step 5 with autograd: expert outputs [R_recv, C] grouped by local expert -> (wait) [R_send, C]
// in the order the rows were dispatched.
class CombineHandle {
 public:
  CombineHandle(at::Tensor grouped, TransportHandle transport, DispatchLayoutPtr layout, CommunicatorPtr ep,
                OverlapHookPtr hook = nullptr);
  CombineHandle(CombineHandle&&) = default;
  // As DispatchHandle's, in the other direction (the detached form moves its gradient with
  // start_to_experts).
  at::Tensor wait();
  at::Tensor wait_detached();

 private:
  at::Tensor grouped_;
  TransportHandle transport_;
  DispatchLayoutPtr layout_;
  CommunicatorPtr ep_;
  OverlapHookPtr hook_;
};
CombineHandle start_combine(const at::Tensor& grouped, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep,
                            const OverlapHookPtr& hook = nullptr);

// The place of an exchange where there is none (ep = 1): the identity, whose forward and backward
// both call `hook` (null: a plain identity), so an overlapped pair switches sides at the same
// points with and without expert parallelism.
at::Tensor exchange_point(const at::Tensor& rows, const OverlapHookPtr& hook);

// Blocking conveniences: start + wait.
at::Tensor dispatch(const at::Tensor& rows, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep);
at::Tensor combine(const at::Tensor& grouped, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep);

// Expert-load statistics for the auxiliary-loss-free bias update: each rank counts the rows it
// routed (model::Stage::expert_load); the global counts are the sum over every rank that routes
// tokens for the same layers, i.e. the dp*tp group of a pipeline stage (GroupKind::kDataTensor),
// or the world when every stage reduces its full [layers, E] table (rows of other stages are 0).
// Returns a new int64 tensor; blocking collective over `comm`.
at::Tensor all_reduce_expert_counts(const at::Tensor& counts, Communicator& comm);

}  // namespace tandem::parallel
