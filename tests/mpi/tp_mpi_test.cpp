// Tensor parallelism over all ranks of the job (tp = world, 2 or 4): every mapping of
// parallel/tp_mappings.h forward and backward against closed forms on rank-encoded float64
// inputs (small integers: exact, so results must be equal, not close); the vocab-parallel
// embedding and cross-entropy, and column/row-parallel linears (with and without sequence
// parallelism, with and without the B/W split) against the unsharded computation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "model/detail/layers.h"
#include "parallel/tp_mappings.h"
#include "parallel/vocab_parallel.h"
#include "tests/common/mpi_test_env.h"

namespace tandem::parallel {
namespace {

using test::MpiTestEnv;

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, kF64);
}

double rel_diff(const at::Tensor& got, const at::Tensor& expected) {
  const double scale = std::max(expected.abs().max().item<double>(), 1e-30);
  return (got - expected).abs().max().item<double>() / scale;
}

void expect_equal(const at::Tensor& got, const at::Tensor& expected, const std::string& what) {
  ASSERT_EQ(got.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(at::equal(got, expected)) << what << "\n got " << got << "\n expected " << expected;
}

class TpTest : public ::testing::Test {
 protected:
  TpTest() : tp_(MpiTestEnv::get().make_communicator("tp")), rank_(tp_->rank()), size_(tp_->size()) {}
  // 1 + 2 + ... + tp: the sum of the rank-encoded factors (rank + 1).
  double rank_sum() const { return size_ * (size_ + 1) / 2.0; }
  CommunicatorPtr tp_;
  const int rank_;
  const int size_;
};

// [2, 2*tp, 3] with 2*tp along `dim` (others fixed sizes), values 0, 1, 2, ...
at::Tensor full_tensor(int64_t dim, int64_t tp) {
  std::vector<int64_t> shape{2, 3, 3};
  shape[dim] = 2 * tp;
  const int64_t n = shape[0] * shape[1] * shape[2];
  return at::arange(n, kF64).view(shape);
}

TEST_F(TpTest, CopyToTpIsIdentityForwardAndAllReduceBackward) {
  const at::Tensor x = at::arange(6, kF64).view({2, 3}).requires_grad_();
  const at::Tensor y = copy_to_tp(x, tp_);
  expect_equal(y.detach(), x.detach(), "forward");
  y.backward(at::full({2, 3}, rank_ + 1.0, kF64));
  expect_equal(x.grad(), at::full({2, 3}, rank_sum(), kF64), "backward: sum of (rank + 1)");
}

TEST_F(TpTest, ReduceFromTpIsAllReduceForwardAndIdentityBackward) {
  const at::Tensor base = at::arange(6, kF64).view({2, 3});
  const at::Tensor x = (base * (rank_ + 1)).requires_grad_();
  const at::Tensor y = reduce_from_tp(x, tp_);
  expect_equal(y.detach(), base * rank_sum(), "forward");
  const at::Tensor g = base + 10 * rank_;
  y.backward(g);
  expect_equal(x.grad(), g, "backward");
}

TEST_F(TpTest, SequenceMappingsForwardAndBackwardInEveryDimension) {
  for (int64_t dim = 0; dim < 3; ++dim) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const at::Tensor full = full_tensor(dim, size_);
    const at::Tensor mine = full.narrow(dim, 2 * rank_, 2);
    // The slice of rank i filled with value (i + 1): what all-gathering (rank + 1) * ones gives.
    std::vector<at::Tensor> blocks;
    for (int i = 0; i < size_; ++i) blocks.push_back(at::full_like(mine, i + 1.0));
    const at::Tensor rank_blocks = at::cat(blocks, dim);

    {  // scatter: keep my slice; backward all-gathers the slices' gradients
      const at::Tensor x = full.clone().requires_grad_();
      const at::Tensor y = scatter_to_sequence(x, tp_, dim);
      expect_equal(y.detach(), mine, "scatter forward");
      y.backward(at::full_like(mine, rank_ + 1.0));
      expect_equal(x.grad(), rank_blocks, "scatter backward");
    }
    {  // gather: all-gather; backward reduce-scatters
      const at::Tensor x = mine.clone().requires_grad_();
      const at::Tensor y = gather_from_sequence(x, tp_, dim);
      expect_equal(y.detach(), full, "gather forward");
      y.backward(full * (rank_ + 1));
      expect_equal(x.grad(), mine * rank_sum(), "gather backward");
    }
    {  // reduce-scatter: sum then my slice; backward all-gathers
      const at::Tensor x = (full * (rank_ + 1)).requires_grad_();
      const at::Tensor y = reduce_scatter_to_sequence(x, tp_, dim);
      expect_equal(y.detach(), mine * rank_sum(), "reduce-scatter forward");
      y.backward(at::full_like(mine, rank_ + 1.0));
      expect_equal(x.grad(), rank_blocks, "reduce-scatter backward");
    }
    {  // gather to replicated: all-gather; backward keeps my slice of the (replicated) gradient
      const at::Tensor x = mine.clone().requires_grad_();
      const at::Tensor y = gather_to_replicated(x, tp_, dim);
      expect_equal(y.detach(), full, "gather-to-replicated forward");
      y.backward(full * 2);
      expect_equal(x.grad(), mine * 2, "gather-to-replicated backward");
    }
  }
}

TEST_F(TpTest, SequenceMappingsRejectIndivisibleLengths) {
  const at::Tensor x = at::zeros({2, 2 * size_ + 1}, kF64);
  EXPECT_THROW(scatter_to_sequence(x, tp_, 1), Error);
  EXPECT_THROW(reduce_scatter_to_sequence(x, tp_, 1), Error);  // fails before communicating
}

TEST_F(TpTest, VocabParallelEmbeddingMatchesPlainLookup) {
  const int64_t vocab = 8 * size_, shard = 8, b = 2, t = 2 * size_;
  const at::Tensor weight = randn({vocab, 5}, 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor ids = at::randint(vocab, {b, t}, gen, at::TensorOptions().dtype(at::kLong));
  const at::Tensor probe = randn({b, t, 5}, 3);
  const at::Tensor full_w = weight.clone().requires_grad_();
  const at::Tensor ref = at::embedding(full_w, ids);
  (ref * probe).sum().backward();
  for (bool sp : {false, true}) {
    SCOPED_TRACE(sp ? "sequence parallel" : "replicated");
    const at::Tensor w = weight.narrow(0, rank_ * shard, shard).clone().requires_grad_();
    const at::Tensor y = vocab_parallel_embedding(ids, w, rank_ * shard, tp_, sp);
    const at::Tensor expected = sp ? ref.narrow(1, rank_ * 2, 2) : ref;
    EXPECT_LT(rel_diff(y.detach(), expected.detach()), 1e-15);
    (y * (sp ? probe.narrow(1, rank_ * 2, 2) : probe)).sum().backward();
    // Under replication every rank back-propagates the same full gradient: compare it directly;
    // under sequence parallelism the reduce-scatter's all-gather backward makes it whole again.
    EXPECT_LT(rel_diff(w.grad(), full_w.grad().narrow(0, rank_ * shard, shard)), 1e-15);
  }
}

TEST_F(TpTest, VocabParallelCrossEntropyMatchesPlain) {
  const int64_t n = 7, shard = 6, vocab = shard * size_;
  const at::Tensor logits = randn({n, vocab}, 4) * 3;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor target = at::randint(vocab, {n}, gen, at::TensorOptions().dtype(at::kLong));
  const at::Tensor row_weight = randn({n}, 6);
  const at::Tensor full = logits.clone().requires_grad_();
  const at::Tensor ref = at::cross_entropy_loss(full, target, {}, at::Reduction::None);
  (ref * row_weight).sum().backward();
  const at::Tensor mine = logits.narrow(1, rank_ * shard, shard).clone().requires_grad_();
  const at::Tensor loss = vocab_parallel_cross_entropy(mine, target, rank_ * shard, tp_);
  const double loss_err = rel_diff(loss.detach(), ref.detach());
  (loss * row_weight).sum().backward();
  const double grad_err = rel_diff(mine.grad(), full.grad().narrow(1, rank_ * shard, shard));
  EXPECT_LT(loss_err, 1e-14);
  EXPECT_LT(grad_err, 1e-14);
  if (rank_ == 0) std::printf("[vocab-parallel CE] tp%d: loss rel %.2e, grad rel %.2e\n", size_, loss_err, grad_err);
}

// y = row(column(x, W1), W2): the Megatron MLP shape, against x W1^T W2^T.
TEST_F(TpTest, ColumnAndRowParallelLinearsMatchTheUnshardedProduct) {
  const int64_t b = 2, t = 2 * size_, c = 6, width = 4 * size_, local = 4;
  const at::Tensor x_full = randn({b, t, c}, 7);
  const at::Tensor w1 = randn({width, c}, 8);
  const at::Tensor w2 = randn({c, width}, 9);
  const at::Tensor probe = randn({b, t, c}, 10);
  const at::Tensor rx = x_full.clone().requires_grad_(), rw1 = w1.clone().requires_grad_(),
                   rw2 = w2.clone().requires_grad_();
  const at::Tensor ref = at::matmul(at::matmul(rx, rw1.t()), rw2.t());
  (ref * probe).sum().backward();
  for (bool sp : {false, true}) {
    for (bool defer : {false, true}) {
      SCOPED_TRACE(std::string(sp ? "sequence parallel" : "replicated") + (defer ? ", W deferred" : ", BW"));
      model::detail::ForwardContext ctx;
      ctx.tp = tp_;
      ctx.sequence_parallel = sp;
      ctx.queue = std::make_shared<model::WeightGradQueue>();
      const at::Tensor x = (sp ? x_full.narrow(1, 2 * rank_, 2) : x_full).clone().requires_grad_();
      const at::Tensor s1 = w1.narrow(0, rank_ * local, local).clone().requires_grad_();  // column shard
      const at::Tensor s2 = w2.narrow(1, rank_ * local, local).clone().requires_grad_();  // row shard
      const at::Tensor y =
          model::detail::row_parallel_linear(model::detail::column_parallel_linear(x, s1, ctx), s2, ctx);
      const at::Tensor expected = sp ? ref.narrow(1, 2 * rank_, 2) : ref;
      EXPECT_LT(rel_diff(y.detach(), expected.detach()), 1e-14);
      ctx.queue->set_deferring(defer);
      (y * (sp ? probe.narrow(1, 2 * rank_, 2) : probe)).sum().backward();
      if (defer) {
        EXPECT_FALSE(s1.grad().defined());
        EXPECT_EQ(ctx.queue->num_tasks(), 2u);
        ctx.queue->run_all();
      }
      EXPECT_LT(rel_diff(x.grad(), sp ? rx.grad().narrow(1, 2 * rank_, 2) : rx.grad()), 1e-14);
      EXPECT_LT(rel_diff(s1.grad(), rw1.grad().narrow(0, rank_ * local, local)), 1e-14);
      EXPECT_LT(rel_diff(s2.grad(), rw2.grad().narrow(1, rank_ * local, local)), 1e-14);
    }
  }
}

TEST(EvenRowRange, CoversEveryRowOnce) {
  for (int64_t total : {0, 1, 7, 8, 30}) {
    int64_t next = 0;
    for (int64_t r = 0; r < 4; ++r) {
      const RowRange range = even_row_range(total, 4, r);
      EXPECT_EQ(range.begin, next);
      EXPECT_LE(range.count, total / 4 + 1);
      next += range.count;
    }
    EXPECT_EQ(next, total);
  }
}

}  // namespace
}  // namespace tandem::parallel
