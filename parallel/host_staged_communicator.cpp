// Host staging (see host_staged_communicator.h). Each operation copies its device inputs into
// host tensors, runs on the wrapped communicator, and returns a Work whose wait() finishes the
// host operation and then copies the host outputs into the caller's device tensors.
#include "parallel/host_staged_communicator.h"

#include <ATen/ATen.h>

#include <utility>

namespace tandem::parallel {
namespace {

bool on_host(const at::Tensor& t) { return t.device().is_cpu(); }

at::Tensor host_copy(const at::Tensor& t) { return on_host(t) ? t : t.to(at::kCPU).contiguous(); }
at::Tensor host_buffer(const at::Tensor& t) {
  return on_host(t) ? t : at::empty(t.sizes(), t.options().device(at::kCPU));
}

// Finishes the host operation, then copies each staged output back to its device tensor.
class StagedWork final : public Work {
 public:
  StagedWork(WorkHandle inner, std::vector<std::pair<at::Tensor, at::Tensor>> copy_back)
      : inner_(std::move(inner)), copy_back_(std::move(copy_back)) {}
  ~StagedWork() override {
    if (!done_ && inner_) inner_->wait();  // never abandon buffers in use (see Work)
  }
  void wait() override {
    if (done_) return;
    inner_->wait();
    for (auto& [device_tensor, host] : copy_back_) device_tensor.copy_(host);
    done_ = true;
  }
  bool is_completed() override { return done_ || inner_->is_completed(); }

 private:
  WorkHandle inner_;
  std::vector<std::pair<at::Tensor, at::Tensor>> copy_back_;  // (device destination, host source)
  bool done_ = false;
};

class HostStagedCommunicator final : public Communicator {
 public:
  explicit HostStagedCommunicator(CommunicatorPtr inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  std::string backend() const override { return inner_->backend() + "+host-staging"; }

  WorkHandle all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions) override {
    const at::Tensor host = host_copy(tensor);
    return wrap(inner_->all_reduce_async(host, op), {{tensor, host}});
  }
  WorkHandle all_gather_async(at::Tensor output, at::Tensor input, OpOptions) override {
    const at::Tensor host_out = host_buffer(output);
    return wrap(inner_->all_gather_async(host_out, host_copy(input)), {{output, host_out}});
  }
  WorkHandle reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions) override {
    const at::Tensor host_out = host_buffer(output);
    return wrap(inner_->reduce_scatter_async(host_out, host_copy(input), op), {{output, host_out}});
  }
  WorkHandle broadcast_async(at::Tensor tensor, int root, OpOptions) override {
    const at::Tensor host = host_copy(tensor);
    return wrap(inner_->broadcast_async(host, root), {{tensor, host}});
  }
  WorkHandle all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                              std::vector<int64_t> input_splits, OpOptions) override {
    const at::Tensor host_out = host_buffer(output);
    return wrap(inner_->all_to_all_async(host_out, host_copy(input), std::move(output_splits), std::move(input_splits)),
                {{output, host_out}});
  }
  WorkHandle send_async(at::Tensor tensor, int peer, int tag, OpOptions) override {
    return wrap(inner_->send_async(host_copy(tensor), peer, tag), {});
  }
  WorkHandle recv_async(at::Tensor tensor, int peer, int tag, OpOptions) override {
    const at::Tensor host = host_buffer(tensor);
    return wrap(inner_->recv_async(host, peer, tag), {{tensor, host}});
  }
  WorkHandle barrier_async() override { return inner_->barrier_async(); }
  void abort(const std::string& reason) override { inner_->abort(reason); }

 private:
  static WorkHandle wrap(WorkHandle inner, std::vector<std::pair<at::Tensor, at::Tensor>> copy_back) {
    // Host outputs of host tensors are the tensors themselves: nothing to copy back.
    std::erase_if(copy_back, [](const auto& pair) { return pair.first.is_same(pair.second); });
    if (copy_back.empty()) return inner;
    return std::make_unique<StagedWork>(std::move(inner), std::move(copy_back));
  }

  CommunicatorPtr inner_;
};

}  // namespace

CommunicatorPtr make_host_staged(CommunicatorPtr host_backend) {
  return std::make_shared<HostStagedCommunicator>(std::move(host_backend));
}

CommunicatorFactory host_staged_factory(CommunicatorFactory factory) {
  return [factory = std::move(factory)](GroupKind kind, MPI_Comm group_comm, const std::string& name) {
    return make_host_staged(factory(kind, group_comm, name));
  };
}

}  // namespace tandem::parallel
