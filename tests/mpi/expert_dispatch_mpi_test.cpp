// Expert dispatch and combine over all ranks of the job (ep = world, 2 or 4) with uneven,
// closed-form routing: rank r holds n_r = 2 + 3r tokens except the last rank, which holds none
// (a rank that sends nothing); token t of rank r goes to two experts f1(r, t), f2 = f1 + 3 (mod E)
// chosen among local experts 0 and 1 of each rank, so every rank's local expert 2 receives nothing.
// Each expert multiplies its rows by (global expert id + 1). Checked exactly (float64, integers):
// the layout's counts, the rows each expert receives and their order, the combined rows, the
// gradient through both all-to-alls, the asynchronous handles and the executor-driven backward.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <array>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "parallel/exchange_recorder.h"
#include "parallel/expert_dispatch.h"
#include "tests/common/mpi_test_env.h"

namespace tandem::parallel {
namespace {

using test::MpiTestEnv;

constexpr int64_t kLocalExperts = 3;
constexpr int64_t kWidth = 2;
const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);
const at::TensorOptions kI64 = at::TensorOptions().dtype(at::kLong);

int64_t num_tokens(int64_t rank, int64_t ep) { return rank == ep - 1 ? 0 : 2 + 3 * rank; }

// The two experts of token t on rank r (never local expert 2 of any rank).
std::array<int64_t, 2> experts_of(int64_t rank, int64_t t, int64_t ep) {
  const int64_t m = (rank + 2 * t) % (2 * ep);
  const int64_t first = (m / 2) * kLocalExperts + m % 2;
  return {first, (first + kLocalExperts) % (kLocalExperts * ep)};
}

// Token t of rank r: row [100 r + t, -(100 r + t)].
at::Tensor tokens_of(int64_t rank, int64_t ep) {
  const at::Tensor v = at::arange(num_tokens(rank, ep), kF64) + 100.0 * rank;
  return at::stack({v, -v}, 1);  // [n, 2]
}

struct Routed {
  at::Tensor token_index;                // [R] token of each permuted row
  at::Tensor expert;                     // [R] its expert
  std::vector<int64_t> rows_per_expert;  // [E]
};

// Rows grouped by expert (stable: token order inside an expert), as plan_dispatch does.
Routed route(int64_t rank, int64_t ep) {
  const int64_t n = num_tokens(rank, ep), e_total = kLocalExperts * ep;
  std::vector<int64_t> flat;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t e : experts_of(rank, t, ep)) flat.push_back(e);
  }
  const at::Tensor experts = at::tensor(flat, kI64);
  const at::Tensor order = at::argsort(experts, /*stable=*/true, 0, false);
  Routed r;
  r.token_index = at::floor_divide(order, 2);
  r.expert = experts.index_select(0, order);
  r.rows_per_expert.assign(e_total, 0);
  for (int64_t e : flat) ++r.rows_per_expert[e];
  return r;
}

// What local expert `local` of `rank` must receive: rows from source 0, 1, ... in each source's
// send order (its token order).
at::Tensor expected_rows(int64_t rank, int64_t local, int64_t ep) {
  const int64_t global = rank * kLocalExperts + local;
  std::vector<at::Tensor> rows;
  for (int64_t src = 0; src < ep; ++src) {
    const at::Tensor tokens = tokens_of(src, ep);
    for (int64_t t = 0; t < num_tokens(src, ep); ++t) {
      for (int64_t e : experts_of(src, t, ep)) {
        if (e == global) rows.push_back(tokens[t].unsqueeze(0));
      }
    }
  }
  return rows.empty() ? at::zeros({0, kWidth}, kF64) : at::cat(rows, 0);
}

// The experts' work: each block times (global expert id + 1).
at::Tensor run_experts(const at::Tensor& grouped, const DispatchLayout& layout, int64_t rank) {
  const at::Tensor scale = at::arange(kLocalExperts, kF64) + rank * kLocalExperts + 1.0;
  const at::Tensor counts = at::tensor(layout.rows_per_local_expert, kI64);
  return grouped * at::repeat_interleave(scale, counts, 0, grouped.size(0)).unsqueeze(1);
}

class ExpertDispatchTest : public ::testing::Test {
 protected:
  ExpertDispatchTest() : ep_(MpiTestEnv::get().make_communicator("ep")), rank_(ep_->rank()), size_(ep_->size()) {}
  CommunicatorPtr ep_;
  const int rank_;
  const int size_;
};

TEST_F(ExpertDispatchTest, UnevenRoutingRoundTripsWithClosedFormValuesAndGradients) {
  const Routed routed = route(rank_, size_);
  const at::Tensor x = tokens_of(rank_, size_).requires_grad_();
  const at::Tensor permuted = x.index_select(0, routed.token_index);  // [R, 2]

  const DispatchLayoutPtr layout = exchange_counts(routed.rows_per_expert, ep_, at::kCPU);
  for (int64_t src = 0; src < size_; ++src) {
    const Routed theirs = route(src, size_);
    for (int64_t e = 0; e < kLocalExperts; ++e) {
      EXPECT_EQ(layout->recv_counts[src * kLocalExperts + e], theirs.rows_per_expert[rank_ * kLocalExperts + e])
          << "rows from rank " << src << " for local expert " << e;
    }
  }
  EXPECT_EQ(layout->rows_per_local_expert[2], 0) << "local expert 2 receives nothing";
  EXPECT_EQ(layout->num_send_rows(), 2 * num_tokens(rank_, size_));

  const at::Tensor grouped = dispatch(permuted, layout, ep_);  // [R_recv, 2]
  int64_t offset = 0;
  for (int64_t e = 0; e < kLocalExperts; ++e) {
    const int64_t count = layout->rows_per_local_expert[e];
    const at::Tensor expected = expected_rows(rank_, e, size_);
    ASSERT_EQ(count, expected.size(0));
    EXPECT_TRUE(at::equal(grouped.narrow(0, offset, count).detach(), expected)) << "local expert " << e;
    offset += count;
  }

  const at::Tensor back = combine(run_experts(grouped, *layout, rank_), layout, ep_);  // [R, 2]
  const at::Tensor factor = (routed.expert + 1).to(at::kDouble).unsqueeze(1);          // [R, 1]
  EXPECT_TRUE(at::equal(back.detach(), permuted.detach() * factor));

  // d/dx of sum(back * w): each token gets sum over its two experts of (e + 1) * w.
  const at::Tensor w = at::arange(back.numel(), kF64).view(back.sizes()) + 1;
  (back * w).sum().backward();
  const at::Tensor expected_grad = at::zeros_like(x).index_add(0, routed.token_index, w * factor);  // [n, 2]
  if (x.size(0) > 0) {
    EXPECT_TRUE(at::equal(x.grad(), expected_grad));
  } else {
    EXPECT_TRUE(!x.grad().defined() || x.grad().numel() == 0);
  }
}

TEST_F(ExpertDispatchTest, AsyncHandlesAndExecutorDrivenBackwardGiveTheSameResults) {
  const Routed routed = route(rank_, size_);
  const at::Tensor x = tokens_of(rank_, size_);
  const at::Tensor permuted = x.index_select(0, routed.token_index);
  CountsHandle counts = start_count_exchange(routed.rows_per_expert, ep_, at::kCPU);
  const at::Tensor busy = at::matmul(at::ones({64, 64}, kF64), at::ones({64, 64}, kF64));  // work meanwhile
  const DispatchLayoutPtr layout = counts.wait();

  // Forward with detached boundaries, the way an executor splits the graph.
  DispatchHandle dispatching = start_dispatch(permuted, layout, ep_);
  EXPECT_EQ(busy.sum().item<double>(), 64.0 * 64 * 64);
  const at::Tensor grouped = dispatching.wait_detached();  // leaf
  const at::Tensor expert_out = run_experts(grouped, *layout, rank_);
  CombineHandle combining = start_combine(expert_out, layout, ep_);
  const at::Tensor back = combining.wait_detached();  // leaf
  const at::Tensor factor = (routed.expert + 1).to(at::kDouble).unsqueeze(1);
  EXPECT_TRUE(at::equal(back.detach(), permuted * factor));

  // Backward piece by piece: after-combine part, then the combine's backward transport in flight.
  (back * 3.0).sum().backward();
  TransportHandle to_experts = start_to_experts(back.grad(), layout, ep_);
  at::Tensor grad_expert_out = to_experts.wait();  // gradient w.r.t. expert_out
  torch::autograd::backward({expert_out}, {grad_expert_out});
  TransportHandle to_senders = start_to_senders(grouped.grad(), layout, ep_);
  const at::Tensor grad_permuted = to_senders.wait();
  EXPECT_TRUE(at::equal(grad_permuted, at::full_like(permuted, 3.0) * factor));
}

TEST_F(ExpertDispatchTest, ExpertCountsReduceToTheGlobalTotal) {
  const Routed routed = route(rank_, size_);
  const at::Tensor local = at::tensor(routed.rows_per_expert, kI64);
  at::Tensor expected = at::zeros_like(local);
  for (int64_t src = 0; src < size_; ++src) expected += at::tensor(route(src, size_).rows_per_expert, kI64);
  EXPECT_TRUE(at::equal(all_reduce_expert_counts(local, *ep_), expected));
}

// Stands in for the other half of a DualPipe pair: computes (sleeps) while the exchange is in flight.
class SleepingHook final : public OverlapHook {
 public:
  void on_in_flight() override { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }
};

TEST_F(ExpertDispatchTest, RecordedExchangesCarryLabelsPeerBytesAndTheTimeHandedToOverlap) {
  auto recorder = std::make_shared<ExchangeRecorder>();
  const CommunicatorPtr ep = make_recording_communicator(ep_, recorder);
  const Routed routed = route(rank_, size_);
  const at::Tensor x = tokens_of(rank_, size_).requires_grad_();
  const at::Tensor permuted = x.index_select(0, routed.token_index);

  // Off: nothing recorded, results untouched.
  const DispatchLayoutPtr layout = exchange_counts(routed.rows_per_expert, ep, at::kCPU);
  EXPECT_TRUE(recorder->take().empty());

  recorder->set_enabled(true);
  const auto hook = std::make_shared<SleepingHook>();
  const DispatchLayoutPtr again = exchange_counts(routed.rows_per_expert, ep, at::kCPU);
  DispatchHandle dispatching = start_dispatch(permuted, layout, ep, hook);
  yield_to_overlap(hook);
  const at::Tensor grouped = dispatching.wait();
  const at::Tensor back = combine(run_experts(grouped, *layout, rank_), layout, ep);
  back.sum().backward();  // the combine's backward moves rows to the experts, the dispatch's back
  recorder->set_enabled(false);
  const std::vector<ExchangeSpan> spans = recorder->take();

  std::vector<std::string> labels;
  for (const ExchangeSpan& s : spans) labels.push_back(s.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"counts", "dispatch", "combine", "dispatch", "combine"}));
  ASSERT_EQ(spans.size(), 5U);
  const int64_t row_bytes = kWidth * 8;
  const int64_t to_peers = layout->num_send_rows() - layout->send_splits[rank_];
  const int64_t from_peers = layout->num_recv_rows() - layout->recv_splits[rank_];
  EXPECT_EQ(spans[1].bytes_sent, to_peers * row_bytes);
  EXPECT_EQ(spans[1].bytes_received, from_peers * row_bytes);
  EXPECT_EQ(spans[2].bytes_sent, from_peers * row_bytes);  // combine: the reverse direction
  EXPECT_EQ(spans[2].bytes_received, to_peers * row_bytes);
  EXPECT_EQ(spans[0].bytes_sent, (size_ - 1) * kLocalExperts * 8);  // int64 counts per peer
  for (const ExchangeSpan& s : spans) {
    EXPECT_LE(s.issued_ms, s.posted_ms) << s.label;
    EXPECT_LE(s.posted_ms, s.wait_begin_ms) << s.label;
    EXPECT_LE(s.wait_begin_ms, s.end_ms) << s.label;
  }
  // The dispatch handed the rank to the hook between issue and wait; the others waited at once.
  EXPECT_GE(spans[1].wait_begin_ms - spans[1].posted_ms, 19.0);
  EXPECT_LT(spans[2].wait_begin_ms - spans[2].posted_ms, 19.0);

  const std::string json = exchange_trace_json(spans, rank_, 7);
  EXPECT_NE(json.find("\"format\": \"tandem-exchanges\", \"rank\": " + std::to_string(rank_) + ", \"step\": 7"),
            std::string::npos);
  EXPECT_NE(json.find("\"cat\": \"blocked\""), std::string::npos);
}

}  // namespace
}  // namespace tandem::parallel
