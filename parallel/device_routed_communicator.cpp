// Routing by tensor placement (see device_routed_communicator.h).
#include "parallel/device_routed_communicator.h"

#include <string>
#include <utility>
#include <vector>

#include "runtime/error.h"

namespace tandem::parallel {
namespace {

class DeviceRoutedCommunicator final : public Communicator {
 public:
  DeviceRoutedCommunicator(CommunicatorPtr host, CommunicatorPtr device)
      : host_(std::move(host)), device_(std::move(device)) {
    TANDEM_CHECK_KIND(kInternal, host_->rank() == device_->rank() && host_->size() == device_->size(),
                      "communicator '{}': the {} backend is rank {} of {} but the {} backend rank {} of {}",
                      host_->name(), host_->backend(), host_->rank(), host_->size(), device_->backend(),
                      device_->rank(), device_->size());
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::string& name() const override { return host_->name(); }
  std::string backend() const override { return device_->backend() + "+" + host_->backend(); }

  WorkHandle all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions options) override {
    return route("all_reduce", {tensor}).all_reduce_async(std::move(tensor), op, options);
  }
  WorkHandle all_gather_async(at::Tensor output, at::Tensor input, OpOptions options) override {
    return route("all_gather", {output, input}).all_gather_async(std::move(output), std::move(input), options);
  }
  WorkHandle reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions options) override {
    return route("reduce_scatter", {output, input})
        .reduce_scatter_async(std::move(output), std::move(input), op, options);
  }
  WorkHandle broadcast_async(at::Tensor tensor, int root, OpOptions options) override {
    return route("broadcast", {tensor}).broadcast_async(std::move(tensor), root, options);
  }
  WorkHandle all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                              std::vector<int64_t> input_splits, OpOptions options) override {
    return route("all_to_all", {output, input})
        .all_to_all_async(std::move(output), std::move(input), std::move(output_splits), std::move(input_splits),
                          options);
  }
  WorkHandle send_async(at::Tensor tensor, int peer, int tag, OpOptions options) override {
    return route("send", {tensor}).send_async(std::move(tensor), peer, tag, options);
  }
  WorkHandle recv_async(at::Tensor tensor, int peer, int tag, OpOptions options) override {
    return route("recv", {tensor}).recv_async(std::move(tensor), peer, tag, options);
  }
  WorkHandle barrier_async() override { return host_->barrier_async(); }
  void abort(const std::string& reason) override {
    device_->abort(reason);
    host_->abort(reason);
  }

 private:
  // The backend for tensors all on the host or all off it; undefined tensors are left to the
  // backend's own checks (they name the argument).
  Communicator& route(const char* op, std::initializer_list<at::Tensor> tensors) const {
    int on_host = 0;
    int off_host = 0;
    std::vector<std::string> devices;
    for (const at::Tensor& t : tensors) {
      if (!t.defined()) continue;
      (t.device().is_cpu() ? on_host : off_host) += 1;
      devices.push_back(t.device().str());
    }
    TANDEM_CHECK_KIND(kCommunication, on_host == 0 || off_host == 0,
                      "{} on '{}' ({}): the tensors are on {}; pass them all on the host or all on the device", op,
                      name(), backend(), fmt::join(devices, " and "));
    return off_host > 0 ? *device_ : *host_;
  }

  CommunicatorPtr host_;
  CommunicatorPtr device_;
};

}  // namespace

CommunicatorPtr make_device_routed(CommunicatorPtr host_backend, CommunicatorPtr device_backend) {
  return std::make_shared<DeviceRoutedCommunicator>(std::move(host_backend), std::move(device_backend));
}

CommunicatorFactory device_routed_factory(CommunicatorFactory host_factory, CommunicatorFactory device_factory) {
  return [host_factory = std::move(host_factory),
          device_factory = std::move(device_factory)](GroupKind kind, MPI_Comm group_comm, const std::string& name) {
    CommunicatorPtr host = host_factory(kind, group_comm, name);
    return make_device_routed(std::move(host), device_factory(kind, group_comm, name));
  };
}

}  // namespace tandem::parallel
