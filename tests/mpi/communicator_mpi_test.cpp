// The MPI communicator on 2, 3 and 4 ranks: every collective and point-to-point operation over
// every dtype, with rank-encoded inputs and closed-form expected outputs. Values are small integers
// (< 256) so that every dtype, bf16 and uint8 included, holds them and every partial sum exactly:
// any difference is a bug, not rounding. Also covered: uneven all-to-all (zero splits, a rank that
// sends nothing, one that receives nothing), several operations in flight waited out of order,
// argument validation, abort, and a timeout turning into an error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <array>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "runtime/error.h"
#include "tests/common/communicator_test_values.h"
#include "tests/common/mpi_test_env.h"

namespace tandem::parallel {
namespace {

using test::indices;
using test::kDtypes;
using test::kFloatingDtypes;
using test::MpiTestEnv;
using test::values_of;

// Operations that only move data also take bool.
constexpr std::array<at::ScalarType, 8> kMovableDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf,
                                                          at::kLong,  at::kInt,    at::kByte,     at::kBool};

// Small exact integers held as doubles -> a new `dtype` tensor (never an alias of `values`, even
// for double: several in-place operations may be in flight on the results). Bool takes the
// parity, so that both values occur.
at::Tensor as_dtype(const at::Tensor& values, at::ScalarType dtype) {
  if (dtype == at::kBool) return values.remainder(2).ne(0);
  return values.to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

void expect_tensor_eq(const at::Tensor& got, const at::Tensor& expected, const std::string& what) {
  EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << what;
  EXPECT_EQ(got.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(got.sizes() == expected.sizes() && at::equal(got, expected))
      << what << "\n  got:      " << values_of(got) << "\n  expected: " << values_of(expected);
}

// Runs `call`, expecting a tandem::Error of `kind` whose what() contains every one of `needles`.
void expect_error(const std::function<void()>& call, std::vector<std::string> needles,
                  ErrorKind kind = ErrorKind::kCommunication) {
  try {
    call();
    ADD_FAILURE() << "expected a tandem::Error mentioning '" << needles.front() << "', but the call succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), kind) << error.what();
    EXPECT_EQ(error.rank(), MpiTestEnv::get().rank()) << "errors must name the world rank: " << error.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(std::string_view(error.what()).find(needle), std::string_view::npos)
          << "'" << needle << "' missing from: " << error.what();
    }
  }
}

class CommunicatorMpiTest : public ::testing::Test {
 protected:
  MpiTestEnv& env_ = MpiTestEnv::get();
  Communicator& comm_ = env_.world();
  const int rank_ = comm_.rank();
  const int size_ = comm_.size();
  // "(rank R of S)": how every error names the rank.
  const std::string where_ = fmt::format("(rank {} of {})", rank_, size_);
};

TEST_F(CommunicatorMpiTest, DescribesItself) {
  EXPECT_EQ(comm_.rank(), env_.rank());
  EXPECT_EQ(comm_.size(), env_.world_size());
  EXPECT_EQ(comm_.name(), "world");
  EXPECT_EQ(comm_.backend(), "mpi");
}

// --- all_reduce ------------------------------------------------------------------------------

TEST_F(CommunicatorMpiTest, AllReduceSumEveryDtype) {
  // rank r holds (r + 1) * (i % 5 + 1); the sum is (i % 5 + 1) * size * (size + 1) / 2.
  const at::Tensor pattern = indices(7).remainder(5) + 1;
  for (at::ScalarType dtype : kDtypes) {
    at::Tensor tensor = as_dtype(pattern * (rank_ + 1), dtype);
    comm_.all_reduce(tensor, ReduceOp::kSum);
    expect_tensor_eq(tensor, as_dtype(pattern * (size_ * (size_ + 1) / 2), dtype), c10::toString(dtype));
  }
}

TEST_F(CommunicatorMpiTest, AllReduceAvgFloatingDtypes) {
  const at::Tensor pattern = indices(7).remainder(5) + 1;
  for (at::ScalarType dtype : kFloatingDtypes) {
    at::Tensor tensor = as_dtype(pattern * (rank_ + 1), dtype);
    comm_.all_reduce(tensor, ReduceOp::kAvg);
    // mean of (r + 1) over ranks = (size + 1) / 2: a multiple of 0.5, exact everywhere.
    expect_tensor_eq(tensor, as_dtype(pattern * ((size_ + 1) / 2.0), dtype), c10::toString(dtype));
  }
}

TEST_F(CommunicatorMpiTest, AllReduceMaxMinEveryDtype) {
  // rank r holds ((r + i) % size + 1) * (i % 3 + 1): every rank holds the maximum somewhere.
  const at::Tensor i = indices(9);
  const at::Tensor scale = i.remainder(3) + 1;
  const at::Tensor mine = ((i + rank_).remainder(size_) + 1) * scale;
  for (at::ScalarType dtype : kDtypes) {
    at::Tensor maximum = as_dtype(mine, dtype);
    at::Tensor minimum = as_dtype(mine, dtype);
    auto max_work = comm_.all_reduce_async(maximum, ReduceOp::kMax);
    auto min_work = comm_.all_reduce_async(minimum, ReduceOp::kMin);
    max_work->wait();
    min_work->wait();
    expect_tensor_eq(maximum, as_dtype(scale * size_, dtype), fmt::format("max {}", c10::toString(dtype)));
    expect_tensor_eq(minimum, as_dtype(scale, dtype), fmt::format("min {}", c10::toString(dtype)));
  }
}

TEST_F(CommunicatorMpiTest, AllReduceKeepsIntegerWidthAndSign) {
  // Values beyond 32 bits for int64 and negative ones for int32: catches a narrowed MPI type.
  const int64_t big = int64_t{1} << 40;
  at::Tensor wide = at::full({3}, (rank_ + 1) * big, at::kLong);
  comm_.all_reduce(wide, ReduceOp::kSum);
  EXPECT_TRUE(at::equal(wide, at::full({3}, big * size_ * (size_ + 1) / 2, at::kLong))) << values_of(wide);

  at::Tensor negative = at::full({3}, -100000 * (rank_ + 1), at::kInt);
  at::Tensor lowest = negative.clone();
  comm_.all_reduce(negative, ReduceOp::kSum);
  comm_.all_reduce(lowest, ReduceOp::kMin);
  EXPECT_TRUE(at::equal(negative, at::full({3}, -100000 * size_ * (size_ + 1) / 2, at::kInt))) << values_of(negative);
  EXPECT_TRUE(at::equal(lowest, at::full({3}, -100000 * size_, at::kInt))) << values_of(lowest);

  at::Tensor bytes = at::full({3}, 200 + rank_, at::kByte);  // above 127: catches a signed char
  comm_.all_reduce(bytes, ReduceOp::kMax);
  EXPECT_TRUE(at::equal(bytes, at::full({3}, 200 + size_ - 1, at::kByte))) << values_of(bytes);
}

TEST_F(CommunicatorMpiTest, AllReduceBoolMaxIsOrMinIsAnd) {
  // Element i on rank r is bit r of i: max = any bit set, min = all bits set.
  const int64_t n = int64_t{1} << size_;
  const at::Tensor i = at::arange(n, at::kLong);
  const at::Tensor mine = i.bitwise_and(int64_t{1} << rank_).ne(0);
  at::Tensor any = mine.clone();
  at::Tensor all = mine.clone();
  comm_.all_reduce(any, ReduceOp::kMax);
  comm_.all_reduce(all, ReduceOp::kMin);
  expect_tensor_eq(any, i.ne(0), "bool max");
  expect_tensor_eq(all, i.eq(n - 1), "bool min");
}

TEST_F(CommunicatorMpiTest, AllReduceOfNothingIsFine) {
  for (at::ScalarType dtype : kDtypes) {
    at::Tensor empty = at::empty({0}, dtype);
    comm_.all_reduce(empty, ReduceOp::kSum);
    EXPECT_EQ(empty.numel(), 0);
  }
}

// --- all_gather ------------------------------------------------------------------------------

TEST_F(CommunicatorMpiTest, AllGatherEveryDtype) {
  // rank r contributes a [2, 3] block of r * 16 + i; the output stacks the blocks in rank order.
  const at::Tensor block = indices(6).reshape({2, 3});
  std::vector<at::Tensor> blocks;
  for (int r = 0; r < size_; ++r) blocks.push_back(block + r * 16);
  const at::Tensor expected = at::cat(blocks, 0);  // [size * 2, 3]
  for (at::ScalarType dtype : kMovableDtypes) {
    at::Tensor output = at::zeros({size_ * 2, 3}, dtype);
    comm_.all_gather(output, as_dtype(block + rank_ * 16, dtype));
    expect_tensor_eq(output, as_dtype(expected, dtype), c10::toString(dtype));
  }
}

TEST_F(CommunicatorMpiTest, AllGatherInPlaceFromOwnSlice) {
  // The input may be this rank's own slice of the output (the in-place form).
  at::Tensor output = at::full({size_ * 4}, -1.0, at::kFloat);
  at::Tensor own = output.narrow(0, rank_ * 4, 4);
  own.copy_(indices(4) + rank_ * 10);
  comm_.all_gather(output, own);
  expect_tensor_eq(output, (indices(4 * size_).remainder(4) + indices(4 * size_).div(4, "floor") * 10).to(at::kFloat),
                   "in-place all_gather");
}

// --- reduce_scatter --------------------------------------------------------------------------

TEST_F(CommunicatorMpiTest, ReduceScatterEveryDtypeAndOp) {
  // input: [size * 3]; rank r holds ((r + i) % size + 1) * (i % 4 + 1) at element i; rank r gets
  // the reduction of elements [3r, 3r + 3).
  constexpr int64_t kChunk = 3;
  const at::Tensor i = indices(kChunk * size_);
  const at::Tensor scale = i.remainder(4) + 1;
  const at::Tensor mine = ((i + rank_).remainder(size_) + 1) * scale;
  const auto own_chunk = [&](const at::Tensor& full) { return full.narrow(0, rank_ * kChunk, kChunk); };
  const double sum_of_factors = size_ * (size_ + 1) / 2.0;  // sum over r of ((r + i) % size + 1)
  for (at::ScalarType dtype : kDtypes) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      const bool floating = at::isFloatingType(dtype);
      if (op == ReduceOp::kAvg && !floating) continue;
      at::Tensor output = at::zeros({kChunk}, dtype);
      comm_.reduce_scatter(output, as_dtype(mine, dtype), op);
      at::Tensor expected;
      switch (op) {
        case ReduceOp::kSum: expected = own_chunk(scale * sum_of_factors); break;
        case ReduceOp::kAvg: expected = own_chunk(scale * (sum_of_factors / size_)); break;
        case ReduceOp::kMax: expected = own_chunk(scale * size_); break;
        case ReduceOp::kMin: expected = own_chunk(scale); break;
      }
      expect_tensor_eq(output, as_dtype(expected, dtype),
                       fmt::format("{} op {}", c10::toString(dtype), static_cast<int>(op)));
    }
  }
}

// --- broadcast -------------------------------------------------------------------------------

TEST_F(CommunicatorMpiTest, BroadcastFromEveryRootEveryDtype) {
  for (int root = 0; root < size_; ++root) {
    const at::Tensor sent = indices(5) + root * 7 + 1;
    for (at::ScalarType dtype : kMovableDtypes) {
      at::Tensor tensor = rank_ == root ? as_dtype(sent, dtype) : at::zeros({5}, dtype);
      comm_.broadcast(tensor, root);
      expect_tensor_eq(tensor, as_dtype(sent, dtype), fmt::format("root {} {}", root, c10::toString(dtype)));
    }
  }
}

TEST_F(CommunicatorMpiTest, MovesOtherDtypesAsBytes) {
  // Dtypes without an MPI type of their own still travel (as bytes) through data-moving ops.
  at::Tensor complex = rank_ == 0 ? at::complex(indices(4).to(at::kFloat), -indices(4).to(at::kFloat))
                                  : at::zeros({4}, at::kComplexFloat);
  comm_.broadcast(complex, 0);
  EXPECT_TRUE(at::equal(complex, at::complex(indices(4).to(at::kFloat), -indices(4).to(at::kFloat))))
      << values_of(at::view_as_real(complex));
}

// --- all_to_all ------------------------------------------------------------------------------

// Rows rank `src` sends to rank `dst`: rank 0 sends nothing, the last rank receives nothing, and
// the rest follow a pattern with zeros in it.
int64_t rows_between(int src, int dst, int size) {
  if (src == 0 || dst == size - 1) return 0;
  return (src + 2 * dst) % 3;
}

// The [rows, 2] block `src` sends to `dst`: element (k, c) = src * 64 + dst * 16 + k * 2 + c.
at::Tensor block_between(int src, int dst, int size) {
  const int64_t rows = rows_between(src, dst, size);
  return indices(rows * 2).reshape({rows, 2}) + (src * 64 + dst * 16);
}

TEST_F(CommunicatorMpiTest, AllToAllUnevenEveryDtype) {
  std::vector<int64_t> input_splits;
  std::vector<int64_t> output_splits;
  std::vector<at::Tensor> sent;
  std::vector<at::Tensor> received;
  for (int peer = 0; peer < size_; ++peer) {
    input_splits.push_back(rows_between(rank_, peer, size_));
    output_splits.push_back(rows_between(peer, rank_, size_));
    sent.push_back(block_between(rank_, peer, size_));
    received.push_back(block_between(peer, rank_, size_));
  }
  const at::Tensor input = at::cat(sent, 0);
  const at::Tensor expected = at::cat(received, 0);
  if (rank_ == 0) {
    EXPECT_EQ(input.size(0), 0) << "rank 0 is meant to send nothing";
  }
  if (rank_ == size_ - 1) {
    EXPECT_EQ(expected.size(0), 0) << "the last rank is meant to receive nothing";
  }
  for (at::ScalarType dtype : kMovableDtypes) {
    at::Tensor output = at::full({expected.size(0), 2}, 7, dtype);
    comm_.all_to_all(output, as_dtype(input, dtype), output_splits, input_splits);
    expect_tensor_eq(output, as_dtype(expected, dtype), c10::toString(dtype));
  }
}

TEST_F(CommunicatorMpiTest, AllToAllManyRowsOfHigherRank) {
  // Pseudo-random split sizes (zeros included) and [rows, 3, 5] rows: the counts are rows, not
  // elements. Element (k, a, b) from src to dst = src * 1e6 + dst * 1e4 + k * 100 + a * 10 + b,
  // exact in float32.
  const auto rows = [](int src, int dst) -> int64_t { return (src * 7 + dst * 13 + 3) % 11 * ((src + dst) % 4 != 1); };
  const auto block = [&](int src, int dst) {
    const int64_t k = rows(src, dst);
    const at::Tensor index = indices(k * 15).reshape({k, 3, 5});
    const at::Tensor row = index.div(15, "floor");
    const at::Tensor a = index.remainder(15).div(5, "floor");
    const at::Tensor b = index.remainder(5);
    return (row * 100 + a * 10 + b + (src * 1e6 + dst * 1e4)).to(at::kFloat);
  };
  std::vector<int64_t> input_splits, output_splits;
  std::vector<at::Tensor> sent, received;
  for (int peer = 0; peer < size_; ++peer) {
    input_splits.push_back(rows(rank_, peer));
    output_splits.push_back(rows(peer, rank_));
    sent.push_back(block(rank_, peer));
    received.push_back(block(peer, rank_));
  }
  const at::Tensor expected = at::cat(received, 0);
  at::Tensor output = at::empty_like(expected);
  auto work = comm_.all_to_all_async(output, at::cat(sent, 0), output_splits, input_splits);
  work->wait();
  expect_tensor_eq(output, expected, "all_to_all [rows, 3, 5]");
}

// --- send / recv -----------------------------------------------------------------------------

TEST_F(CommunicatorMpiTest, SendRecvRingEveryDtype) {
  const int next = (rank_ + 1) % size_;
  const int prev = (rank_ + size_ - 1) % size_;
  for (at::ScalarType dtype : kMovableDtypes) {
    at::Tensor received = at::zeros({6}, dtype);
    auto recv = comm_.recv_async(received, prev, /*tag=*/3);
    auto send = comm_.send_async(as_dtype(indices(6) + rank_ * 10 + 1, dtype), next, /*tag=*/3);
    send->wait();
    recv->wait();
    expect_tensor_eq(received, as_dtype(indices(6) + prev * 10 + 1, dtype), c10::toString(dtype));
  }
}

TEST_F(CommunicatorMpiTest, RecvMatchesByTagNotOrder) {
  const int next = (rank_ + 1) % size_;
  const int prev = (rank_ + size_ - 1) % size_;
  at::Tensor first = at::zeros({2}, at::kLong);
  at::Tensor second = at::zeros({2}, at::kLong);
  // Receives posted in the opposite order of the sends: tags decide which lands where.
  auto recv_second = comm_.recv_async(second, prev, /*tag=*/2);
  auto recv_first = comm_.recv_async(first, prev, /*tag=*/1);
  auto send_first = comm_.send_async(at::full({2}, rank_ * 100 + 1, at::kLong), next, 1);
  auto send_second = comm_.send_async(at::full({2}, rank_ * 100 + 2, at::kLong), next, 2);
  recv_first->wait();
  recv_second->wait();
  send_second->wait();
  send_first->wait();
  EXPECT_TRUE(at::equal(first, at::full({2}, prev * 100 + 1, at::kLong))) << values_of(first);
  EXPECT_TRUE(at::equal(second, at::full({2}, prev * 100 + 2, at::kLong))) << values_of(second);
}

TEST_F(CommunicatorMpiTest, SendToSelf) {
  at::Tensor received = at::zeros({3}, at::kFloat);
  auto recv = comm_.recv_async(received, rank_, 5);
  comm_.send(at::full({3}, rank_ + 0.5, at::kFloat), rank_, 5);
  recv->wait();
  EXPECT_TRUE(at::equal(received, at::full({3}, rank_ + 0.5, at::kFloat))) << values_of(received);
}

TEST_F(CommunicatorMpiTest, RecvOfTheWrongSizeIsAnError) {
  // Rank 0 sends 3 elements to rank 1 twice: once into a 5-element tensor (too short a message),
  // once into a 2-element one (truncation). Ranks beyond 1 only take part in the barriers.
  if (rank_ == 0) {
    comm_.send(at::ones({3}), 1, 11);
    comm_.send(at::ones({3}), 1, 12);
  } else if (rank_ == 1) {
    expect_error([&] { comm_.recv(at::zeros({5}), 0, 11); },
                 {"recv from rank 0 (tag 11) on 'world'", where_, "received 3 elements, expected 5"});
    expect_error([&] { comm_.recv(at::zeros({2}), 0, 12); },
                 {"recv from rank 0 (tag 12) on 'world'", "larger than the receive tensor"}, ErrorKind::kMpi);
  }
  comm_.barrier();
}

// --- barrier, asynchrony, lifetime -----------------------------------------------------------

TEST_F(CommunicatorMpiTest, BarrierAndPolling) {
  for (int round = 0; round < 3; ++round) comm_.barrier();
  auto work = comm_.barrier_async();
  while (!work->is_completed()) std::this_thread::yield();
  EXPECT_TRUE(work->is_completed());
  work->wait();  // waiting on a completed operation is a no-op
  work->synchronize();
}

TEST_F(CommunicatorMpiTest, ManyOperationsInFlightWaitedOutOfOrder) {
  // Issued in one order on every rank (as the contract requires), completed in the reverse one.
  at::Tensor summed = at::full({4}, rank_ + 1.0, at::kFloat);
  at::Tensor gathered = at::zeros({size_}, at::kLong);
  const at::Tensor mine = at::full({1}, rank_ * 3, at::kLong);
  at::Tensor broadcast = at::full({2}, rank_ == size_ - 1 ? 42.0 : 0.0, at::kDouble);
  at::Tensor scattered = at::zeros({2}, at::kBFloat16);
  at::Tensor maximum = at::full({3}, rank_, at::kInt);
  at::Tensor received = at::zeros({1}, at::kHalf);

  std::vector<WorkHandle> works;
  works.push_back(comm_.all_reduce_async(summed, ReduceOp::kSum));
  works.push_back(comm_.all_gather_async(gathered, mine));
  works.push_back(comm_.recv_async(received, (rank_ + size_ - 1) % size_, 9));
  works.push_back(comm_.broadcast_async(broadcast, size_ - 1));
  works.push_back(comm_.reduce_scatter_async(scattered, at::ones({2 * size_}, at::kBFloat16), ReduceOp::kAvg));
  works.push_back(comm_.barrier_async());
  works.push_back(comm_.all_reduce_async(maximum, ReduceOp::kMax));
  works.push_back(comm_.send_async(at::full({1}, rank_ + 0.25, at::kHalf), (rank_ + 1) % size_, 9));
  for (auto work = works.rbegin(); work != works.rend(); ++work) (*work)->wait();

  EXPECT_TRUE(at::equal(summed, at::full({4}, size_ * (size_ + 1) / 2.0, at::kFloat))) << values_of(summed);
  EXPECT_TRUE(at::equal(gathered, at::arange(size_, at::kLong) * 3)) << values_of(gathered);
  EXPECT_TRUE(at::equal(broadcast, at::full({2}, 42.0, at::kDouble))) << values_of(broadcast);
  EXPECT_TRUE(at::equal(scattered, at::ones({2}, at::kBFloat16))) << values_of(scattered);
  EXPECT_TRUE(at::equal(maximum, at::full({3}, size_ - 1, at::kInt))) << values_of(maximum);
  EXPECT_TRUE(at::equal(received, at::full({1}, (rank_ + size_ - 1) % size_ + 0.25, at::kHalf))) << values_of(received);
}

TEST_F(CommunicatorMpiTest, DroppedWorkFinishesIncludingAverage) {
  // Destroying an unfinished Work waits for it, post-processing (the avg division) included; the
  // Work also keeps the tensor alive after the caller lets go of it.
  at::Tensor tensor = at::full({5}, rank_ * 2.0, at::kFloat);
  comm_.all_reduce_async(tensor, ReduceOp::kAvg).reset();
  EXPECT_TRUE(at::equal(tensor, at::full({5}, size_ - 1.0, at::kFloat))) << values_of(tensor);

  at::Tensor gathered = at::zeros({size_}, at::kInt);
  { auto work = comm_.all_gather_async(gathered, at::full({1}, rank_, at::kInt)); }
  EXPECT_TRUE(at::equal(gathered, at::arange(size_, at::kInt))) << values_of(gathered);
}

TEST_F(CommunicatorMpiTest, SubCommunicatorsAreIndependent) {
  // Even and odd ranks form two communicators; each sums its own members' ranks.
  MPI_Comm parity_comm = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, rank_ % 2, rank_, &parity_comm), MPI_SUCCESS);
  CommunicatorPtr parity = env_.make_communicator("parity", parity_comm);
  MPI_Comm_free(&parity_comm);  // the communicator holds its own duplicate
  int expected_sum = 0;
  int expected_size = 0;
  for (int r = rank_ % 2; r < size_; r += 2) {
    expected_sum += r;
    ++expected_size;
  }
  EXPECT_EQ(parity->size(), expected_size);
  EXPECT_EQ(parity->rank(), rank_ / 2);
  EXPECT_EQ(parity->name(), "parity");
  at::Tensor tensor = at::full({2}, rank_, at::kLong);
  parity->all_reduce(tensor);
  EXPECT_TRUE(at::equal(tensor, at::full({2}, expected_sum, at::kLong))) << values_of(tensor);
}

// --- argument validation ---------------------------------------------------------------------

TEST_F(CommunicatorMpiTest, RejectsBadArgumentsWithClearErrors) {
  // Every check fires before anything is sent, on every rank alike: no collective is issued.
  const at::Tensor good = at::zeros({3});
  const std::string on_world = fmt::format("on 'world' {}", where_);
  expect_error(
      [&] {
        comm_.all_reduce(at::zeros({4, 3}).t());
      },
      {"all_reduce(sum) " + on_world, "`tensor` is not contiguous", "sizes [3, 4], strides [1, 3]"});
  expect_error([&] { comm_.all_reduce(at::Tensor()); }, {"all_reduce(sum)", "undefined tensor"});
  expect_error([&] { comm_.broadcast(at::empty({3}, at::TensorOptions().device(at::kMeta)), 0); },
               {"broadcast from rank 0 " + on_world, "`tensor` is a Strided tensor on meta",
                "the MPI backend takes dense CPU tensors"});
  expect_error([&] { comm_.all_reduce(at::zeros({3}, at::kLong), ReduceOp::kAvg); },
               {"all_reduce(avg) " + on_world, "avg is not defined for integer dtype Long"});
  expect_error([&] { comm_.all_reduce(at::zeros({3}, at::kByte), ReduceOp::kAvg); }, {"avg is not defined"});
  expect_error([&] { comm_.all_reduce(at::zeros({3}, at::kBool), ReduceOp::kSum); },
               {"bool tensors reduce with max (logical or) or min (logical and) only"});
  expect_error([&] { comm_.all_reduce(at::zeros({3}, at::kComplexFloat)); }, {"dtype ComplexFloat cannot be reduced"});

  expect_error(
      [&] { comm_.all_gather(at::zeros({3 * size_ + 1}), good); },
      {"all_gather " + on_world, fmt::format("`output` has {} elements, expected size() * input.numel() = {} * 3 = {}",
                                             3 * size_ + 1, size_, 3 * size_)});
  expect_error([&] { comm_.all_gather(at::zeros({3 * size_}, at::kDouble), good); },
               {"`output` is Double but `input` is Float"});
  at::Tensor overlapping = at::zeros({3 * size_ + 1});
  expect_error([&] { comm_.all_gather(overlapping.narrow(0, 0, 3 * size_), overlapping.narrow(0, 1, 3)); },
               {"`input` overlaps `output`"});

  expect_error([&] { comm_.reduce_scatter(good, at::zeros({3 * size_ - 1})); },
               {"reduce_scatter(sum) " + on_world,
                fmt::format("`input` has {} elements, expected size() * output.numel() = {} * 3 = {}", 3 * size_ - 1,
                            size_, 3 * size_)});
  expect_error([&] { comm_.broadcast(good, size_); },
               {fmt::format("broadcast from rank {} {}", size_, on_world),
                fmt::format("root {} is not a rank of this communicator (expected 0..{})", size_, size_ - 1)});

  const std::vector<int64_t> one_row_each(size_, 1);
  const at::Tensor rows = at::zeros({size_, 2});
  expect_error(
      [&] { comm_.all_to_all(rows.clone(), rows, {1}, one_row_each); },
      {"all_to_all " + on_world, fmt::format("output_splits has 1 entries, expected one per rank ({})", size_)});
  std::vector<int64_t> too_many = one_row_each;
  too_many[0] = 2;
  expect_error([&] { comm_.all_to_all(rows.clone(), rows, one_row_each, too_many); },
               {fmt::format("input_splits sum to {} rows, but the tensor has {} rows", size_ + 1, size_)});
  std::vector<int64_t> negative = one_row_each;
  negative[0] = -1;
  expect_error([&] { comm_.all_to_all(rows.clone(), rows, negative, one_row_each); },
               {"output_splits[0] is -1; splits must be >= 0"});
  expect_error(
      [&] {
        comm_.all_to_all(at::zeros({size_, 3}), rows, one_row_each, one_row_each);
      },
      {"rows differ in shape"});
  expect_error([&] { comm_.all_to_all(at::zeros({}), at::zeros({}), one_row_each, one_row_each); },
               {"splits count rows of dim 0"});

  expect_error([&] { comm_.send(good, size_); },
               {fmt::format("send to rank {} (tag 0) {}", size_, on_world), "is not a rank of this communicator"});
  expect_error([&] { comm_.recv(good, -1); }, {"recv from rank -1", "is not a rank of this communicator"});
  expect_error([&] { comm_.send(good, 0, -4); }, {"tag -4 is outside the range MPI allows"});
}

// --- failure: abort and timeout --------------------------------------------------------------

TEST_F(CommunicatorMpiTest, AbortedCommunicatorRefusesOperations) {
  CommunicatorPtr doomed = env_.make_communicator("doomed");
  doomed->abort("the test aborted it");
  expect_error([&] { doomed->all_reduce(at::ones({2})); },
               {"all_reduce(sum) on 'doomed'", "was aborted (the test aborted it)"});
  expect_error([&] { doomed->barrier(); }, {"barrier on 'doomed'", "aborted"});
  doomed->abort("a second abort is harmless");
}

TEST_F(CommunicatorMpiTest, AbortWakesAPendingWait) {
  // Rank 0 waits for a message that rank 1 holds back; another thread (a watchdog) aborts rank 0's
  // communicator and the wait ends with the reason. Rank 1 sends afterwards so nothing is left
  // pending at MPI_Finalize.
  CommunicatorPtr pending = env_.make_communicator("pending");
  if (rank_ == 0) {
    at::Tensor never = at::zeros({2});
    auto work = pending->recv_async(never, 1, 7);
    std::thread watchdog([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      pending->abort("watchdog gave up");
    });
    const auto begin = std::chrono::steady_clock::now();
    expect_error([&] { work->wait(); }, {"recv from rank 1 (tag 7) on 'pending' (rank 0 of", "watchdog gave up"});
    watchdog.join();
    EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
    expect_error([&] { work->wait(); }, {"watchdog gave up"});  // a failed Work stays failed
    work.reset();                                               // dropping it after the abort must not wait
  }
  comm_.barrier();
  if (rank_ == 1) pending->send(at::ones({2}), 0, 7);
  comm_.barrier();
}

TEST_F(CommunicatorMpiTest, TimeoutBecomesAnErrorNotAHang) {
  // Rank 0 enters an all-reduce the others join only later: with a 300 ms timeout rank 0's wait
  // fails with the message that tells an operator what happened, and the communicator is marked
  // failed. The others then join, and the operation rank 0 gave up on completes in the background
  // while rank 0 waits at the world barrier.
  // Only rank 0 gets the short timeout: the others must not give up while rank 0 catches up.
  const std::chrono::milliseconds timeout = rank_ == 0 ? std::chrono::milliseconds(300) : MpiTestEnv::kCommTimeout;
  CommunicatorPtr slow = env_.make_communicator("slow", MPI_COMM_WORLD, timeout);
  at::Tensor tensor = at::ones({3});
  if (rank_ == 0) {
    const auto begin = std::chrono::steady_clock::now();
    expect_error([&] { slow->all_reduce(tensor); },
                 {"all_reduce(sum) on 'slow' (rank 0 of", "did not complete within 0.3 s",
                  "a peer rank may have died or issued a different collective"});
    EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
    expect_error([&] { slow->barrier(); }, {"barrier on 'slow'", "was aborted", "timed out"});
    comm_.barrier();
  } else {
    comm_.barrier();
    slow->all_reduce(tensor);
    EXPECT_TRUE(at::equal(tensor, at::full({3}, static_cast<float>(size_)))) << values_of(tensor);
  }
  comm_.barrier();
}

}  // namespace
}  // namespace tandem::parallel
