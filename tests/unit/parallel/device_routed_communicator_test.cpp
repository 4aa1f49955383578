// The device-routed communicator: every operation reaches the backend of its tensors' side (host
// tensors the host backend, device tensors the device backend; meta tensors stand in for CUDA
// here, the routing only asks "on the host or not"), in issue order; barrier goes to the host
// backend, abort to both; mixed placements and disagreeing backends are refused.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "parallel/device_routed_communicator.h"
#include "runtime/error.h"

namespace tandem::parallel {
namespace {

// Records which operations reached it; every Work is already complete.
class RecordingCommunicator final : public Communicator {
 public:
  RecordingCommunicator(std::string backend, int rank, int size)
      : backend_(std::move(backend)), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  std::string backend() const override { return backend_; }

  WorkHandle all_reduce_async(at::Tensor, ReduceOp, OpOptions) override { return record("all_reduce"); }
  WorkHandle all_gather_async(at::Tensor, at::Tensor, OpOptions) override { return record("all_gather"); }
  WorkHandle reduce_scatter_async(at::Tensor, at::Tensor, ReduceOp, OpOptions) override {
    return record("reduce_scatter");
  }
  WorkHandle broadcast_async(at::Tensor, int, OpOptions) override { return record("broadcast"); }
  WorkHandle all_to_all_async(at::Tensor, at::Tensor, std::vector<int64_t>, std::vector<int64_t>, OpOptions) override {
    return record("all_to_all");
  }
  WorkHandle send_async(at::Tensor, int, int, OpOptions) override { return record("send"); }
  WorkHandle recv_async(at::Tensor, int, int, OpOptions) override { return record("recv"); }
  WorkHandle barrier_async() override { return record("barrier"); }
  void abort(const std::string& reason) override { ops.push_back("abort: " + reason); }

  std::vector<std::string> ops;

 private:
  struct DoneWork final : Work {
    void wait() override {}
    bool is_completed() override { return true; }
  };
  WorkHandle record(const char* op) {
    ops.emplace_back(op);
    return std::make_unique<DoneWork>();
  }
  std::string backend_;
  std::string name_ = "dp";
  int rank_;
  int size_;
};

struct Routed {
  std::shared_ptr<RecordingCommunicator> host = std::make_shared<RecordingCommunicator>("mpi", 1, 2);
  std::shared_ptr<RecordingCommunicator> device = std::make_shared<RecordingCommunicator>("nccl", 1, 2);
  CommunicatorPtr comm = make_device_routed(host, device);
};

at::Tensor on_host() { return at::zeros({4}); }
at::Tensor on_device() { return at::empty({4}, at::TensorOptions().device(at::kMeta)); }

TEST(DeviceRoutedCommunicator, RoutesEachOperationByWhereItsTensorsLive) {
  Routed r;
  EXPECT_EQ(r.comm->backend(), "nccl+mpi");
  EXPECT_EQ(r.comm->rank(), 1);
  EXPECT_EQ(r.comm->size(), 2);
  EXPECT_EQ(r.comm->name(), "dp");
  r.comm->all_reduce(on_device());
  r.comm->all_reduce(on_host());
  r.comm->all_gather(on_device(), on_device());
  r.comm->reduce_scatter(on_host(), on_host());
  r.comm->broadcast(on_device(), 0);
  r.comm->all_to_all(on_device(), on_device(), {2, 2}, {2, 2});
  r.comm->send(on_host(), 0);
  r.comm->recv(on_device(), 0);
  r.comm->barrier();
  EXPECT_EQ(r.device->ops, (std::vector<std::string>{"all_reduce", "all_gather", "broadcast", "all_to_all", "recv"}));
  EXPECT_EQ(r.host->ops, (std::vector<std::string>{"all_reduce", "reduce_scatter", "send", "barrier"}));
  r.comm->abort("stop");
  EXPECT_EQ(r.device->ops.back(), "abort: stop");
  EXPECT_EQ(r.host->ops.back(), "abort: stop");
}

TEST(DeviceRoutedCommunicator, RefusesMixedPlacementsAndMismatchedBackends) {
  Routed r;
  try {
    r.comm->all_gather(on_device(), on_host());
    ADD_FAILURE() << "a mixed all_gather was accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kCommunication);
    EXPECT_NE(std::string(error.what()).find("all_gather on 'dp' (nccl+mpi): the tensors are on meta and cpu"),
              std::string::npos)
        << error.what();
  }
  EXPECT_TRUE(r.host->ops.empty() && r.device->ops.empty());
  EXPECT_THROW(make_device_routed(std::make_shared<RecordingCommunicator>("mpi", 0, 2),
                                  std::make_shared<RecordingCommunicator>("nccl", 1, 2)),
               Error);
}

}  // namespace
}  // namespace tandem::parallel
