// Expert-parallel token dispatch and combine: the all-to-alls that move MoE token rows from the
// rank that routed them to the rank holding the chosen expert, and the expert outputs back.
// Routed experts are split evenly over the `ep` group: with E experts and ep ranks, expert e lives
// on ep rank e / (E / ep) as local expert e % (E / ep).
//
// One MoE call, on every rank of the ep group:
//   1. the caller permutes its token rows so that rows of one expert are contiguous, experts in
//      global order (model/routing.cpp's plan_dispatch), and knows rows_per_expert [E];
//   2. start_count_exchange -> wait: an all-to-all of the per-expert counts gives the layout
//      (who sends how many rows to whom, and how received rows regroup per local expert);
//   3. start_dispatch -> wait: the uneven all-to-all of the rows, then one gather that puts the
//      received rows in local-expert order (within an expert: by source rank, then as sent);
//   4. the caller runs each local expert on its contiguous block;
//   5. start_combine -> wait: one gather back to arrival order, the reverse all-to-all, and the
//      rows are back on their sender in the order of step 1.
// Permutations are index_select on whole tensors (no per-token loops); ranks may send or receive
// nothing and experts may receive no rows (zero-sized splits).
//
// Overlap: every start_* issues its collective and returns a handle at once; wait() completes it.
// A DualPipe executor starts a dispatch or combine, computes another micro-batch's chunk, then
// waits. Collective ordering: all ranks of `ep` must start the same exchanges in the same order;
// at most one thread drives a given communicator.
//
// Gradients: the tensors returned by DispatchHandle::wait and CombineHandle::wait are autograd
// outputs. Backward of a dispatch is a combine-direction transport of the gradient and backward of
// a combine a dispatch-direction transport; inside plain autograd they block (start + wait). An
// executor that wants those backward all-to-alls in flight too splits the graph at the exchange:
// it takes the forward result with wait_detached() (a fresh leaf requiring grad), runs the backward
// of the part after it (which leaves .grad on that leaf), calls start_to_senders (for a dispatch)
// or start_to_experts (for a combine) on that gradient, does other work, waits, and continues with
// torch::autograd::backward({input_of_the_exchange}, {transported_gradient}).
// An executor that overlaps inside plain autograd instead (schedule/executor/pair_runner.h) passes an
// OverlapHook to start_dispatch / start_combine: the backward transport then calls it between its
// start and its wait, so the other micro-batch's work runs while the gradient is on the wire.
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
  at::Tensor wait();
  // Blocks; returns the result as a new leaf requiring grad (executor-driven backward, see top).
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
