// The NCCL communicator on device tensors, on however many ranks the job has (one GPU per rank):
// 1 rank from ctest directly, 2 ranks through nccl_mpi_gpu_test.sh when two GPUs are visible.
// Inputs are rank-encoded small integers (< 256) so that every dtype, bf16 and uint8 included,
// holds every value and partial sum exactly: results are compared for equality with closed forms.
// Also covered: uneven all-to-all with zero splits, send/recv (to oneself on one rank), caller
// streams, stream ordering after the caller's work, argument errors, abort, and (2 ranks) a
// watchdog timeout. Every test skips with the reason when no GPU is usable.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "parallel/nccl_communicator.h"
#include "runtime/device.h"
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

// One NCCL world communicator for the whole executable (building one costs a bootstrap), built
// by the first test that asks (after the shared main started MPI) and released by this
// environment's TearDown, before MPI and the CUDA runtime shut down.
class NcclWorld : public ::testing::Environment {
 public:
  static NcclWorld& get() {
    if (!instance_->built_) instance_->build();
    return *instance_;
  }
  static NcclWorld* make_instance() { return instance_ = new NcclWorld(); }  // gtest owns it
  void TearDown() override { comm_.reset(); }
  const std::string& skip_reason() const { return skip_reason_; }
  Communicator& comm() const { return *comm_; }
  int device() const { return device_; }

 private:
  static inline NcclWorld* instance_ = nullptr;  // written once, before main runs
  void build() {
    built_ = true;
    skip_reason_ = runtime::gpu_unavailable_reason();
    if (!skip_reason_.empty()) return;
    const auto& process = MpiTestEnv::get().process();
    if (runtime::cuda_device_count() < process.local_size) {
      skip_reason_ = fmt::format("{} ranks on this host but only {} GPU(s): NCCL needs one GPU per rank",
                                 process.local_size, runtime::cuda_device_count());
      return;
    }
    device_ = runtime::select_device_for_local_rank(process.local_rank);
    comm_ = make_nccl_communicator(MPI_COMM_WORLD, "world", MpiTestEnv::kCommTimeout);
  }
  bool built_ = false;
  std::string skip_reason_;
  int device_ = -1;
  CommunicatorPtr comm_;
};
[[maybe_unused]] const ::testing::Environment* const kNcclWorldEnvironment =
    ::testing::AddGlobalTestEnvironment(NcclWorld::make_instance());

class NcclCommunicatorGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NcclWorld::get().skip_reason().empty()) GTEST_SKIP() << NcclWorld::get().skip_reason();
    comm_ = &NcclWorld::get().comm();
    rank_ = comm_->rank();
    size_ = comm_->size();
    device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(NcclWorld::get().device()));
  }
  // Small exact integers held as doubles -> a new tensor of `dtype` on this rank's GPU.
  at::Tensor on_gpu(const at::Tensor& values, at::ScalarType dtype) const {
    return values.to(dtype).to(device_, /*non_blocking=*/false, /*copy=*/true);
  }
  void expect_equal(const at::Tensor& got, const at::Tensor& expected_values, const std::string& what) const {
    const at::Tensor expected = expected_values.to(got.scalar_type());
    const at::Tensor host = got.to(at::kCPU);  // synchronises with the caller's stream
    EXPECT_TRUE(host.sizes() == expected.sizes() && at::equal(host, expected))
        << what << " (rank " << rank_ << " of " << size_ << ")\n  got:      " << values_of(host)
        << "\n  expected: " << values_of(expected);
  }

  Communicator* comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  at::Device device_{at::kCUDA};
};

void expect_error(const std::function<void()>& call, std::vector<std::string> needles, ErrorKind kind) {
  try {
    call();
    ADD_FAILURE() << "expected a tandem::Error mentioning '" << needles.front() << "', but the call succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), kind) << error.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(std::string_view(error.what()).find(needle), std::string_view::npos)
          << "'" << needle << "' missing from: " << error.what();
    }
  }
}

TEST_F(NcclCommunicatorGpuTest, DescribesItself) {
  EXPECT_EQ(comm_->backend(), "nccl");
  EXPECT_EQ(comm_->name(), "world");
  EXPECT_EQ(comm_->size(), MpiTestEnv::get().world_size());
  EXPECT_EQ(comm_->rank(), MpiTestEnv::get().rank());
}

TEST_F(NcclCommunicatorGpuTest, AllReduceSumMaxMinEveryDtype) {
  const at::Tensor i = indices(9);
  const at::Tensor pattern = i.remainder(5) + 1;
  const at::Tensor scale = i.remainder(3) + 1;
  const at::Tensor mine = ((i + rank_).remainder(size_) + 1) * scale;  // every rank holds the max somewhere
  for (at::ScalarType dtype : kDtypes) {
    at::Tensor sum = on_gpu(pattern * (rank_ + 1), dtype);
    at::Tensor maximum = on_gpu(mine, dtype);
    at::Tensor minimum = on_gpu(mine, dtype);
    auto sum_work = comm_->all_reduce_async(sum, ReduceOp::kSum);
    auto max_work = comm_->all_reduce_async(maximum, ReduceOp::kMax);
    auto min_work = comm_->all_reduce_async(minimum, ReduceOp::kMin);
    min_work->wait();  // out of order on purpose: each Work stands alone
    sum_work->wait();
    max_work->wait();
    expect_equal(sum, pattern * (size_ * (size_ + 1) / 2), fmt::format("sum {}", c10::toString(dtype)));
    expect_equal(maximum, scale * size_, fmt::format("max {}", c10::toString(dtype)));
    expect_equal(minimum, scale, fmt::format("min {}", c10::toString(dtype)));
  }
}

TEST_F(NcclCommunicatorGpuTest, AllReduceAvgFloatingDtypes) {
  const at::Tensor pattern = indices(7).remainder(5) + 1;
  for (at::ScalarType dtype : kFloatingDtypes) {
    at::Tensor tensor = on_gpu(pattern * (rank_ + 1), dtype);
    comm_->all_reduce(tensor, ReduceOp::kAvg);
    expect_equal(tensor, pattern * ((size_ + 1) / 2.0), c10::toString(dtype));  // multiples of 0.5: exact
  }
}

TEST_F(NcclCommunicatorGpuTest, AllGatherAndReduceScatterEveryDtype) {
  for (at::ScalarType dtype : kDtypes) {
    // all_gather: rank r contributes [2, 3] of r * 10 + i; slice j of the output is rank j's.
    const at::Tensor i = indices(6).view({2, 3});
    at::Tensor gathered = at::full({size_ * 2, 3}, 255, at::TensorOptions().dtype(dtype).device(device_));
    comm_->all_gather(gathered, on_gpu(i + rank_ * 10, dtype));
    std::vector<at::Tensor> slices;
    for (int j = 0; j < size_; ++j) slices.push_back(i + j * 10);
    expect_equal(gathered, at::cat(slices), fmt::format("all_gather {}", c10::toString(dtype)));

    // reduce_scatter: element (j, k) of rank r's input is r + j + k % 3; rank j gets
    // sum over r = size * (size - 1) / 2 + size * (j + k % 3).
    const at::Tensor k = indices(4).remainder(3);
    std::vector<at::Tensor> blocks;
    for (int j = 0; j < size_; ++j) blocks.push_back(k + rank_ + j);
    at::Tensor scattered = at::zeros({4}, at::TensorOptions().dtype(dtype).device(device_));
    comm_->reduce_scatter(scattered, on_gpu(at::cat(blocks), dtype), ReduceOp::kSum);
    expect_equal(scattered, (k + rank_) * size_ + size_ * (size_ - 1) / 2,
                 fmt::format("reduce_scatter {}", c10::toString(dtype)));
  }
}

TEST_F(NcclCommunicatorGpuTest, BroadcastFromLastRank) {
  const int root = size_ - 1;
  for (at::ScalarType dtype : kDtypes) {
    at::Tensor tensor = on_gpu(rank_ == root ? indices(5) + 3 : at::zeros({5}, at::kDouble), dtype);
    comm_->broadcast(tensor, root);
    expect_equal(tensor, indices(5) + 3, c10::toString(dtype));
  }
}

TEST_F(NcclCommunicatorGpuTest, UnevenAllToAllWithZeroSplits) {
  // Rank s sends (s + d) % 3 rows of width 2 to rank d; row q, column c of that block holds
  // s * 60 + d * 20 + q * 2 + c (< 256 for up to 3 ranks).
  const auto rows = [](int src, int dst) { return static_cast<int64_t>((src + dst) % 3); };
  const auto block = [&](int src, int dst) {
    return indices(rows(src, dst) * 2).view({rows(src, dst), 2}) + (src * 60 + dst * 20);
  };
  std::vector<int64_t> input_splits, output_splits;
  std::vector<at::Tensor> sent, expected;
  for (int peer = 0; peer < size_; ++peer) {
    input_splits.push_back(rows(rank_, peer));
    output_splits.push_back(rows(peer, rank_));
    sent.push_back(block(rank_, peer));
    expected.push_back(block(peer, rank_));
  }
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kLong, at::kByte}) {
    const at::Tensor input = on_gpu(at::cat(sent), dtype);
    at::Tensor output = at::full({at::cat(expected).size(0), 2}, 7, at::TensorOptions().dtype(dtype).device(device_));
    comm_->all_to_all(output, input, output_splits, input_splits);
    expect_equal(output, at::cat(expected), fmt::format("all_to_all {}", c10::toString(dtype)));
  }
}

TEST_F(NcclCommunicatorGpuTest, SendRecvAroundTheRing) {
  // To the next rank, from the previous (oneself on one rank). Even ranks send first and odd
  // ranks receive first: NCCL matches p2p in issue order and a lone send blocks its stream.
  const int next = (rank_ + 1) % size_;
  const int previous = (rank_ + size_ - 1) % size_;
  for (at::ScalarType dtype : kDtypes) {
    at::Tensor outgoing = on_gpu(indices(6) + rank_ * 7, dtype);
    at::Tensor incoming = at::zeros({6}, at::TensorOptions().dtype(dtype).device(device_));
    if (rank_ % 2 == 0 || size_ == 1) {
      auto send = comm_->send_async(outgoing, next, /*tag=*/3);
      // The buffer is the send's until wait() (which orders the caller's stream after it; it does
      // not block the host, so the peer's recv can still match). Overwriting it then must not
      // change what a send to oneself delivers: that message is a snapshot taken by the send.
      send->wait();
      outgoing.fill_(99);
      comm_->recv(incoming, previous, 3);
    } else {
      comm_->recv(incoming, previous, 3);
      comm_->send(outgoing, next, 3);
    }
    if (size_ > 1) {
      expect_equal(incoming, indices(6) + previous * 7, c10::toString(dtype));
    } else {
      // To oneself the data was snapshot by the send, before the overwrite.
      expect_equal(incoming, indices(6), c10::toString(dtype));
    }
  }
}

TEST_F(NcclCommunicatorGpuTest, OrderedAfterCallerWorkAndOnCallerStreams) {
  // The comm stream waits for what the caller queued: a chain of kernels producing the input.
  at::Tensor tensor = at::ones({1 << 20}, at::TensorOptions().dtype(at::kFloat).device(device_));
  for (int step = 0; step < 20; ++step) tensor = tensor * 1.0f + 0.0f;
  tensor.mul_(static_cast<float>(rank_ + 1));
  auto work = comm_->all_reduce_async(tensor, ReduceOp::kSum);
  work->wait();  // the caller's stream now waits for the reduction
  EXPECT_EQ(tensor.sum().item<double>(), static_cast<double>(size_ * (size_ + 1) / 2) * (1 << 20));

  // On a stream the caller chose: the caller orders it and synchronize() blocks the host.
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, device_.index());
  at::Tensor values = on_gpu(indices(5) + rank_, at::kFloat);
  at::cuda::getCurrentCUDAStream(device_.index()).synchronize();
  auto side_work = comm_->all_reduce_async(values, ReduceOp::kMax, OpOptions{side.stream()});
  side_work->synchronize();
  EXPECT_TRUE(side_work->is_completed());
  expect_equal(values, indices(5) + (size_ - 1), "max on a caller stream");

  comm_->barrier();
}

TEST_F(NcclCommunicatorGpuTest, RejectsWhatNcclCannotDo) {
  const at::Tensor host = at::zeros({4});
  expect_error([&] { comm_->all_reduce(host); }, {"all_reduce(sum)", "on 'world'", "cuda:"}, ErrorKind::kCommunication);
  const at::Tensor ints = at::zeros({4}, at::TensorOptions().dtype(at::kInt).device(device_));
  expect_error([&] { comm_->all_reduce(ints, ReduceOp::kAvg); }, {"avg of Int would truncate"},
               ErrorKind::kCommunication);
  const at::Tensor strided = at::zeros({4, 4}, at::TensorOptions().device(device_)).t();
  expect_error([&] { comm_->broadcast(strided, 0); }, {"not contiguous"}, ErrorKind::kCommunication);
  const at::Tensor wrong = at::zeros({size_ * 4 + 1}, at::TensorOptions().device(device_));
  expect_error([&] { comm_->all_gather(wrong, at::zeros({4}, wrong.options())); }, {"expected size() * input.numel()"},
               ErrorKind::kCommunication);
  expect_error([&] { comm_->send(at::zeros({1}, wrong.options()), size_); }, {"peer", "is not a rank"},
               ErrorKind::kCommunication);
}

TEST_F(NcclCommunicatorGpuTest, AbortFailsLaterOperations) {
  CommunicatorPtr own = make_nccl_communicator(MPI_COMM_WORLD, "doomed", MpiTestEnv::kCommTimeout);
  at::Tensor tensor = at::ones({3}, at::TensorOptions().device(device_));
  own->all_reduce(tensor);
  expect_equal(tensor, at::full({3}, static_cast<double>(size_)), "before the abort");
  own->abort("the test pulled the plug");
  expect_error([&] { own->all_reduce(tensor); }, {"on 'doomed'", "aborted", "the test pulled the plug"},
               ErrorKind::kCommunication);
}

TEST_F(NcclCommunicatorGpuTest, WatchdogTurnsAHangIntoAnError) {
  if (size_ < 2) GTEST_SKIP() << "needs a peer that never answers (2 ranks)";
  CommunicatorPtr own = make_nccl_communicator(MPI_COMM_WORLD, "hang", std::chrono::seconds(3));
  at::Tensor tensor = at::ones({3}, at::TensorOptions().device(device_));
  if (rank_ == 0) {
    // Rank 1 never sends: the watchdog aborts after 3 s, and the recv (if NCCL blocked the host
    // while connecting) or its synchronize() reports it.
    expect_error(
        [&] {
          auto work = own->recv_async(tensor, 1);
          work->synchronize();
        },
        {"recv from rank 1", "on 'hang'"}, ErrorKind::kCommunication);
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    own->abort("the peer's test is over");
  }
  MpiTestEnv::get().world().barrier();
}

}  // namespace
}  // namespace tandem::parallel
