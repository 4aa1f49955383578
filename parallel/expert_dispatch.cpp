// Expert dispatch/combine (expert_dispatch.h): count exchange, layout arithmetic on the counts
// ([ep * E_l] small vectors; the row permutation itself is built with whole-tensor ops), the two
// transport directions, and autograd functions that hand their backward to the opposite one.
#include "parallel/expert_dispatch.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <numeric>

#include "runtime/error.h"

namespace tandem::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool trivial(const CommunicatorPtr& ep) { return !ep || ep->size() == 1; }

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong));
}

// The expert-grouped order of arrived rows. Arrival order is blocks (source i, local expert e),
// i-major; grouped order is the same blocks e-major. Block sizes c[i][e], arrival starts s[i][e].
at::Tensor grouping_order(const std::vector<int64_t>& recv_counts, int64_t ep, int64_t local_experts) {
  const at::Tensor c = to_tensor(recv_counts).view({ep, local_experts});  // [ep, E_l]
  const at::Tensor arrival_start = (at::cumsum(c.flatten(), 0) - c.flatten()).view({ep, local_experts});
  const at::Tensor sizes = c.t().flatten();               // [E_l * ep] e-major
  const at::Tensor starts = arrival_start.t().flatten();  // [E_l * ep]
  const at::Tensor grouped_start = at::cumsum(sizes, 0) - sizes;
  const int64_t total = sizes.sum().item<int64_t>();
  return at::arange(total, at::TensorOptions().dtype(at::kLong)) +
         at::repeat_interleave(starts - grouped_start, sizes, /*dim=*/0, /*output_size=*/total);  // [R_recv]
}

struct LayoutCapsule : torch::CustomClassHolder {
  LayoutCapsule(DispatchLayoutPtr l, CommunicatorPtr c, at::Tensor r, OverlapHookPtr h)
      : layout(std::move(l)), comm(std::move(c)), result(std::move(r)), hook(std::move(h)) {}
  DispatchLayoutPtr layout;
  CommunicatorPtr comm;
  at::Tensor result;    // the forward's transported tensor (handed over, then released)
  OverlapHookPtr hook;  // called between the backward transport's start and wait (may be null)
};

c10::IValue capsule(DispatchLayoutPtr layout, CommunicatorPtr comm, at::Tensor result, OverlapHookPtr hook) {
  return c10::IValue::make_capsule(
      c10::make_intrusive<LayoutCapsule>(std::move(layout), std::move(comm), std::move(result), std::move(hook)));
}

c10::intrusive_ptr<LayoutCapsule> unpack(const c10::IValue& value) {
  return c10::static_intrusive_pointer_cast<LayoutCapsule>(value.toCapsule());
}

// Output: the rows already transported to the experts; backward: gradient back to the senders.
struct DispatchFunction : torch::autograd::Function<DispatchFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, c10::IValue state) {
    auto s = unpack(state);
    ctx->saved_data["state"] = capsule(s->layout, s->comm, at::Tensor(), s->hook);
    return std::exchange(s->result, at::Tensor());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = unpack(ctx->saved_data["state"]);
    TransportHandle transport = start_to_senders(grads[0], s->layout, s->comm);
    yield_to_overlap(s->hook);
    return {transport.wait(), at::Tensor()};
  }
};

// Output: expert rows already transported back to the senders; backward: gradient to the experts.
struct CombineFunction : torch::autograd::Function<CombineFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grouped, c10::IValue state) {
    auto s = unpack(state);
    ctx->saved_data["state"] = capsule(s->layout, s->comm, at::Tensor(), s->hook);
    return std::exchange(s->result, at::Tensor());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = unpack(ctx->saved_data["state"]);
    TransportHandle transport = start_to_experts(grads[0], s->layout, s->comm);
    yield_to_overlap(s->hook);
    return {transport.wait(), at::Tensor()};
  }
};

// Identity whose backward calls the hook (exchange_point calls it for the forward).
struct ExchangePointFunction : torch::autograd::Function<ExchangePointFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, c10::IValue state) {
    ctx->saved_data["state"] = state;
    return rows.view_as(rows);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    yield_to_overlap(unpack(ctx->saved_data["state"])->hook);
    return {grads[0], at::Tensor()};
  }
};

at::Tensor new_leaf(at::Tensor t) { return t.detach().requires_grad_(true); }

}  // namespace

int64_t DispatchLayout::num_send_rows() const { return sum(send_splits); }
int64_t DispatchLayout::num_recv_rows() const { return sum(recv_splits); }

// --- transports -----------------------------------------------------------------------------

TransportHandle::TransportHandle(WorkHandle work, at::Tensor buffer, at::Tensor after_order)
    : work_(std::move(work)), buffer_(std::move(buffer)), after_order_(std::move(after_order)) {}

at::Tensor TransportHandle::wait() {
  TANDEM_CHECK(buffer_.defined(), "a transport handle was waited twice (or never started)");
  if (work_) work_->wait();
  work_.reset();
  at::Tensor out = std::exchange(buffer_, at::Tensor());
  return after_order_.defined() ? out.index_select(0, after_order_) : out;
}

namespace {

// rows [R_in, ...] -> all-to-all with the given splits -> [R_out, ...].
TransportHandle start_all_to_all(const at::Tensor& input, const std::vector<int64_t>& out_splits,
                                 const std::vector<int64_t>& in_splits, const CommunicatorPtr& ep,
                                 at::Tensor after_order, const char* label) {
  TANDEM_CHECK(input.size(0) == sum(in_splits), "exchange of {} rows with splits summing to {}", input.size(0),
               sum(in_splits));
  std::vector<int64_t> shape = input.sizes().vec();
  shape[0] = sum(out_splits);
  if (trivial(ep)) return TransportHandle(nullptr, input, std::move(after_order));
  at::Tensor send = input.contiguous();
  at::Tensor recv = at::empty(shape, send.options());
  OpOptions options;
  options.label = label;  // names the exchange in traced steps (exchange_recorder.h)
  WorkHandle work = ep->all_to_all_async(recv, send, out_splits, in_splits, options);
  return TransportHandle(std::move(work), recv, std::move(after_order));
}

}  // namespace

TransportHandle start_to_experts(const at::Tensor& rows, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep) {
  TANDEM_CHECK(rows.dim() >= 1 && rows.size(0) == layout->num_send_rows(), "dispatching {} rows, the layout sends {}",
               rows.dim() >= 1 ? rows.size(0) : -1, layout->num_send_rows());
  return start_all_to_all(rows.detach(), layout->recv_splits, layout->send_splits, ep, layout->expert_order,
                          "dispatch");
}

TransportHandle start_to_senders(const at::Tensor& grouped, const DispatchLayoutPtr& layout,
                                 const CommunicatorPtr& ep) {
  TANDEM_CHECK(grouped.dim() >= 1 && grouped.size(0) == layout->num_recv_rows(),
               "combining {} rows, the layout received {}", grouped.dim() >= 1 ? grouped.size(0) : -1,
               layout->num_recv_rows());
  const at::Tensor arrival = grouped.detach().index_select(0, layout->arrival_order);  // [R_recv, ...]
  return start_all_to_all(arrival, layout->send_splits, layout->recv_splits, ep, at::Tensor(), "combine");
}

// --- counts ---------------------------------------------------------------------------------

CountsHandle::CountsHandle(TransportHandle transport, int64_t ep_size, int64_t num_local_experts,
                           std::vector<int64_t> send_counts, at::Device device)
    : transport_(std::move(transport)),
      ep_size_(ep_size),
      num_local_experts_(num_local_experts),
      send_counts_(std::move(send_counts)),
      device_(device) {}

DispatchLayoutPtr CountsHandle::wait() {
  const at::Tensor received = transport_.wait().cpu().contiguous();  // [ep * E_l]
  auto layout = std::make_shared<DispatchLayout>();
  layout->ep_size = ep_size_;
  layout->num_local_experts = num_local_experts_;
  const int64_t* r = received.data_ptr<int64_t>();
  layout->recv_counts.assign(r, r + received.numel());
  layout->send_splits.assign(ep_size_, 0);
  layout->recv_splits.assign(ep_size_, 0);
  layout->rows_per_local_expert.assign(num_local_experts_, 0);
  for (int64_t i = 0; i < ep_size_; ++i) {
    for (int64_t e = 0; e < num_local_experts_; ++e) {
      layout->send_splits[i] += send_counts_[i * num_local_experts_ + e];
      layout->recv_splits[i] += layout->recv_counts[i * num_local_experts_ + e];
      layout->rows_per_local_expert[e] += layout->recv_counts[i * num_local_experts_ + e];
    }
  }
  const at::Tensor order = grouping_order(layout->recv_counts, ep_size_, num_local_experts_);
  layout->arrival_order = at::empty_like(order).scatter_(0, order, at::arange(order.numel(), order.options()));
  layout->expert_order = order.to(device_);
  layout->arrival_order = layout->arrival_order.to(device_);
  return layout;
}

CountsHandle start_count_exchange(const std::vector<int64_t>& rows_per_expert, const CommunicatorPtr& ep,
                                  at::Device device) {
  const int64_t ep_size = ep ? ep->size() : 1;
  const auto num_experts = static_cast<int64_t>(rows_per_expert.size());
  TANDEM_CHECK(num_experts > 0 && num_experts % ep_size == 0, "{} experts cannot be split over {} '{}' ranks",
               num_experts, ep_size, ep ? ep->name() : "ep");
  const int64_t local = num_experts / ep_size;
  const at::Tensor send = to_tensor(rows_per_expert).to(device);  // [E], experts of rank j contiguous
  std::vector<int64_t> splits(ep_size, local);
  return CountsHandle(start_all_to_all(send, splits, splits, ep, at::Tensor(), "counts"), ep_size, local,
                      rows_per_expert, device);
}

DispatchLayoutPtr exchange_counts(const std::vector<int64_t>& rows_per_expert, const CommunicatorPtr& ep,
                                  at::Device device) {
  return start_count_exchange(rows_per_expert, ep, device).wait();
}

// --- dispatch / combine ---------------------------------------------------------------------

DispatchHandle::DispatchHandle(at::Tensor rows, TransportHandle transport, DispatchLayoutPtr layout, CommunicatorPtr ep,
                               OverlapHookPtr hook)
    : rows_(std::move(rows)),
      transport_(std::move(transport)),
      layout_(std::move(layout)),
      ep_(std::move(ep)),
      hook_(std::move(hook)) {}

at::Tensor DispatchHandle::wait() {
  at::Tensor result = transport_.wait();
  if (!rows_.requires_grad()) return result;
  return DispatchFunction::apply(rows_, capsule(layout_, ep_, std::move(result), hook_));
}

at::Tensor DispatchHandle::wait_detached() { return new_leaf(transport_.wait()); }

DispatchHandle start_dispatch(const at::Tensor& rows, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep,
                              const OverlapHookPtr& hook) {
  return DispatchHandle(rows, start_to_experts(rows, layout, ep), layout, ep, hook);
}

CombineHandle::CombineHandle(at::Tensor grouped, TransportHandle transport, DispatchLayoutPtr layout,
                             CommunicatorPtr ep, OverlapHookPtr hook)
    : grouped_(std::move(grouped)),
      transport_(std::move(transport)),
      layout_(std::move(layout)),
      ep_(std::move(ep)),
      hook_(std::move(hook)) {}

at::Tensor CombineHandle::wait() {
  at::Tensor result = transport_.wait();
  if (!grouped_.requires_grad()) return result;
  return CombineFunction::apply(grouped_, capsule(layout_, ep_, std::move(result), hook_));
}

at::Tensor CombineHandle::wait_detached() { return new_leaf(transport_.wait()); }

CombineHandle start_combine(const at::Tensor& grouped, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep,
                            const OverlapHookPtr& hook) {
  return CombineHandle(grouped, start_to_senders(grouped, layout, ep), layout, ep, hook);
}

at::Tensor exchange_point(const at::Tensor& rows, const OverlapHookPtr& hook) {
  if (!hook) return rows;
  hook->on_in_flight();
  if (!rows.requires_grad()) return rows;
  return ExchangePointFunction::apply(rows, capsule(nullptr, nullptr, at::Tensor(), hook));
}

at::Tensor dispatch(const at::Tensor& rows, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep) {
  return start_dispatch(rows, layout, ep).wait();
}

at::Tensor combine(const at::Tensor& grouped, const DispatchLayoutPtr& layout, const CommunicatorPtr& ep) {
  return start_combine(grouped, layout, ep).wait();
}

at::Tensor all_reduce_expert_counts(const at::Tensor& counts, Communicator& comm) {
  at::Tensor out = counts.to(at::kLong).contiguous().clone();
  comm.all_reduce(out, ReduceOp::kSum);
  return out;
}

}  // namespace tandem::parallel
