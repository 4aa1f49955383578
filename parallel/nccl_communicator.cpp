// NCCL backend of Communicator (contract in nccl_communicator.h and communicator.h). Each
// operation validates its arguments, orders its stream after the caller's, enqueues the NCCL
// call(s), records a completion event, registers it with the watchdog and returns an NcclWork.
// Everything CUDA-side is asynchronous; the only host blocks are synchronize() and barrier().
#include "parallel/nccl_communicator.h"

#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/accumulate.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "parallel/detail/communicator_base.h"
#include "runtime/cuda_check.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/mpi_check.h"

namespace tandem::parallel {

bool nccl_backend_available() { return true; }

namespace {

using detail::byte_ranges_overlap;
using detail::reduce_op_name;
using Clock = std::chrono::steady_clock;

// synchronize() pacing: yield while completion is likely imminent, then sleep briefly.
constexpr auto kSpinPhase = std::chrono::milliseconds(2);
constexpr auto kPollSleep = std::chrono::microseconds(50);
// How often the watchdog looks at events and NCCL's asynchronous error (bounded by timeout / 4).
constexpr auto kWatchdogPeriod = std::chrono::milliseconds(100);

std::optional<ncclDataType_t> nccl_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    case at::kBool: return ncclUint8;  // 0/1 bytes: max = or, min = and
    default: return std::nullopt;
  }
}

// A CUDA event shared by a Work and the watchdog (whichever lets go last destroys it).
class CudaEvent {
 public:
  CudaEvent() { TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~CudaEvent() { cudaEventDestroy(event_); }  // safe while pending: released once it fires
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};
using EventPtr = std::shared_ptr<CudaEvent>;

// What the watchdog knows about an operation in flight.
struct Watched {
  EventPtr done;  // null while the issuing thread is still inside the NCCL call
  std::string what;
  Clock::time_point issued;
};

// A send to oneself waiting for its matching recv: a private copy of the data and the event
// after which the copy is complete.
struct SelfMessage {
  at::Tensor copy;
  EventPtr ready;
  int tag;
};

class NcclCommunicator;

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclCommunicator> comm, std::string what, std::vector<at::Tensor> tensors, EventPtr done,
           bool host_blocking)
      : comm_(std::move(comm)),
        what_(std::move(what)),
        tensors_(std::move(tensors)),
        done_(std::move(done)),
        host_blocking_(host_blocking) {}
  ~NcclWork() override;
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

  void wait() override;
  void synchronize() override;
  bool is_completed() override;

 private:
  bool event_done() const;  // one query; throws on a CUDA error

  std::shared_ptr<NcclCommunicator> comm_;
  std::string what_;
  std::vector<at::Tensor> tensors_;  // alive until the Work goes (the allocator knows the streams)
  EventPtr done_;
  bool host_blocking_;
  bool waited_ = false;
};

class NcclCommunicator final : public detail::CommunicatorBase, public std::enable_shared_from_this<NcclCommunicator> {
 public:
  NcclCommunicator(MPI_Comm group, std::string name, std::chrono::milliseconds timeout);
  ~NcclCommunicator() override;

  std::string backend() const override { return "nccl"; }

  WorkHandle all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions options) override;
  WorkHandle all_gather_async(at::Tensor output, at::Tensor input, OpOptions options) override;
  WorkHandle reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions options) override;
  WorkHandle broadcast_async(at::Tensor tensor, int root, OpOptions options) override;
  WorkHandle all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                              std::vector<int64_t> input_splits, OpOptions options) override;
  WorkHandle send_async(at::Tensor tensor, int peer, int tag, OpOptions options) override;
  WorkHandle recv_async(at::Tensor tensor, int peer, int tag, OpOptions options) override;
  WorkHandle barrier_async() override;
  void abort(const std::string& reason) override { fail(ErrorKind::kCommunication, reason); }

  // --- used by NcclWork ---
  int device() const { return device_; }
  // Marks the communicator failed with `reason` and aborts the NCCL communicator (once).
  void fail(ErrorKind kind, const std::string& reason);

 private:
  void check_device_tensor(std::string_view op, const at::Tensor& tensor, const char* role) const;
  void check_peer_and_tag(std::string_view op, int peer, int tag) const;
  ncclDataType_t wire_type(std::string_view op, at::ScalarType dtype) const;
  ncclRedOp_t reduction(std::string_view op, at::ScalarType dtype, ReduceOp reduce) const;
  // Picks the stream, orders it after the caller's, runs `enqueue(stream)`, records the
  // completion event and hands out the Work (see the file comment of the header).
  template <typename Enqueue>
  WorkHandle run(const std::string& what, std::vector<at::Tensor> tensors, OpOptions options, Enqueue&& enqueue,
                 bool host_blocking = false);
  void watchdog_loop();

  int device_ = -1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t caller_ready_ = nullptr;  // reused: a stream wait captures the latest record only
  std::deque<SelfMessage> self_messages_;

  // Held around every use of comm_ off the issuing thread (watchdog queries, the abort), so the
  // watchdog never touches a handle that ncclCommAbort has just freed.
  std::mutex handle_mutex_;
  std::mutex watch_mutex_;
  std::condition_variable watch_wake_;
  std::list<Watched> watched_;
  bool stop_watchdog_ = false;
  std::thread watchdog_;
};

// ---------------------------------------------------------------------------------------------
// Construction, teardown, failure

NcclCommunicator::NcclCommunicator(MPI_Comm group, std::string name, std::chrono::milliseconds timeout)
    : CommunicatorBase(std::move(name), timeout) {
  const std::string no_gpu = runtime::gpu_unavailable_reason();
  TANDEM_CHECK_KIND(kCuda, no_gpu.empty(), "cannot build the NCCL communicator '{}': {}", this->name(), no_gpu);
  int rank = 0;
  int size = 0;
  int world_rank = -1;
  TANDEM_MPI_CHECK(MPI_Comm_rank(group, &rank));
  TANDEM_MPI_CHECK(MPI_Comm_size(group, &size));
  TANDEM_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  TANDEM_CUDA_CHECK(cudaGetDevice(&device_));
  set_identity(rank, size, world_rank, "nccl, ", fmt::format(", cuda:{}", device_));

  ncclUniqueId id{};
  if (rank == 0) TANDEM_NCCL_CHECK(ncclGetUniqueId(&id), nullptr);
  TANDEM_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, group));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 1;
  config.commName = this->name().c_str();  // NCCL's own logs name the axis
  TANDEM_NCCL_CHECK(ncclCommInitRankConfig(&comm_, size, id, rank, &config), nullptr);
  try {
    int least = 0;
    int greatest = 0;
    TANDEM_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    // High priority: communication kernels get SMs ahead of the compute they overlap with.
    TANDEM_CUDA_CHECK(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
    TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&caller_ready_, cudaEventDisableTiming));
  } catch (...) {
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
    ncclCommDestroy(comm_);
    throw;
  }
  watchdog_ = std::thread([this] { watchdog_loop(); });
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    stop_watchdog_ = true;
  }
  watch_wake_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  cudaSetDevice(device_);
  // Works hold the communicator, so nothing of ours is pending here that a caller still waits
  // for; destroying (not aborting) lets NCCL finish what is queued.
  if (!failed()) ncclCommDestroy(comm_);
  if (caller_ready_ != nullptr) cudaEventDestroy(caller_ready_);
  if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
}

void NcclCommunicator::fail(ErrorKind kind, const std::string& reason) {
  if (!mark_failed(kind, reason)) return;
  // Kernels blocked on a dead peer return; the handle is gone afterwards (failed() guards it).
  std::lock_guard<std::mutex> lock(handle_mutex_);
  ncclCommAbort(comm_);
}

void NcclCommunicator::watchdog_loop() {
  cudaSetDevice(device_);  // event queries must not create a context on device 0
  const auto period =
      std::min<std::chrono::milliseconds>(kWatchdogPeriod, std::max(timeout() / 4, std::chrono::milliseconds(1)));
  std::unique_lock<std::mutex> lock(watch_mutex_);
  while (!stop_watchdog_) {
    watch_wake_.wait_for(lock, period);
    if (stop_watchdog_ || failed()) continue;
    std::optional<std::pair<ErrorKind, std::string>> problem;
    for (auto it = watched_.begin(); it != watched_.end();) {
      // An entry without an event is still inside its NCCL call: only its age matters.
      const cudaError_t status = it->done ? cudaEventQuery(it->done->get()) : cudaErrorNotReady;
      if (status == cudaSuccess) {
        it = watched_.erase(it);
        continue;
      }
      if (status != cudaErrorNotReady && !problem) {
        problem.emplace(ErrorKind::kCuda, fmt::format("{}: CUDA reported {} ({})", it->what, cudaGetErrorString(status),
                                                      cudaGetErrorName(status)));
      }
      const auto age = Clock::now() - it->issued;
      if (age > timeout() && !problem) {
        problem.emplace(ErrorKind::kCommunication,
                        fmt::format("{} issued {:.1f} s ago did not complete within the {:g} s timeout (a peer rank "
                                    "may have died, issued a different collective, or stopped issuing)",
                                    it->what, std::chrono::duration<double>(age).count(),
                                    std::chrono::duration<double>(timeout()).count()));
      }
      ++it;
    }
    {
      std::lock_guard<std::mutex> handle_lock(handle_mutex_);
      if (failed()) continue;
      ncclResult_t async = ncclSuccess;
      if (!problem && ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
          async != ncclInProgress) {
        const char* last = ncclGetLastError(comm_);
        problem.emplace(ErrorKind::kNccl,
                        fmt::format("asynchronous NCCL error: {} (last error: {})", ncclGetErrorString(async),
                                    (last != nullptr && *last != 0) ? last : "none"));
      } else if (problem) {
        const char* last = ncclGetLastError(comm_);
        if (last != nullptr && *last != 0) problem->second += fmt::format(" (NCCL last error: {})", last);
      }
    }
    if (problem) {
      // The list stays as it is: an issuer may still hold an iterator into it.
      lock.unlock();  // the abort may take a while; issuers must not block on the list meanwhile
      fail(problem->first, problem->second);
      lock.lock();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Argument checks

void NcclCommunicator::check_device_tensor(std::string_view op, const at::Tensor& tensor, const char* role) const {
  check_tensor(
      op, tensor, role,
      [this](const at::Tensor& t) { return t.is_cuda() && t.get_device() == device_ && t.layout() == at::kStrided; },
      fmt::format("this NCCL communicator takes dense tensors on cuda:{} (CPU tensors go through the MPI backend)",
                  device_));
}

void NcclCommunicator::check_peer_and_tag(std::string_view op, int peer, int tag) const {
  check_peer(op, peer);
  TANDEM_COMM_CHECK(*this, tag >= 0, "{}: tag {} is negative", describe(op), tag);
}

ncclDataType_t NcclCommunicator::wire_type(std::string_view op, at::ScalarType dtype) const {
  const std::optional<ncclDataType_t> type = nccl_dtype(dtype);
  TANDEM_COMM_CHECK(*this, type.has_value(),
                    "{}: dtype {} cannot travel through NCCL (float32, float64, bfloat16, float16, int64, int32, "
                    "uint8, int8 and bool can)",
                    describe(op), c10::toString(dtype));
  return *type;
}

ncclRedOp_t NcclCommunicator::reduction(std::string_view op, at::ScalarType dtype, ReduceOp reduce) const {
  wire_type(op, dtype);
  if (dtype == at::kBool) {
    TANDEM_COMM_CHECK(*this, reduce == ReduceOp::kMax || reduce == ReduceOp::kMin,
                      "{}: bool tensors reduce only with max (or) and min (and), not {}", describe(op),
                      reduce_op_name(reduce));
  }
  switch (reduce) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kAvg:
      TANDEM_COMM_CHECK(*this, at::isFloatingType(dtype),
                        "{}: avg of {} would truncate; reduce with sum and divide in floating point", describe(op),
                        c10::toString(dtype));
      return ncclAvg;
  }
  return ncclSum;
}

// ---------------------------------------------------------------------------------------------
// Issuing

template <typename Enqueue>
WorkHandle NcclCommunicator::run(const std::string& what, std::vector<at::Tensor> tensors, OpOptions options,
                                 Enqueue&& enqueue, bool host_blocking) {
  check_usable(what);
  TANDEM_CUDA_CHECK(cudaSetDevice(device_));
  const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
  const cudaStream_t stream = options.stream != nullptr ? options.stream : comm_stream_;
  if (options.stream == nullptr && stream != caller) {
    TANDEM_CUDA_CHECK(cudaEventRecord(caller_ready_, caller));
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(stream, caller_ready_, 0));
  }
  if (stream != caller) {
    // The tensors were allocated on the caller's stream; tell the caching allocator that `stream`
    // uses them too, so their blocks are not handed out again before the transfer is done.
    const c10::cuda::CUDAStream used_on =
        c10::cuda::getStreamFromExternal(stream, static_cast<c10::DeviceIndex>(device_));
    for (const at::Tensor& tensor : tensors) {
      if (tensor.defined() && tensor.nbytes() > 0)
        c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), used_on);
    }
  }
  // Watched from before the NCCL call: a call can block the host (connecting to a peer that
  // never comes), and the watchdog must be able to abort it.
  auto done = std::make_shared<CudaEvent>();
  std::list<Watched>::iterator entry;
  {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    entry = watched_.insert(watched_.end(), Watched{nullptr, what, Clock::now()});
  }
  try {
    enqueue(stream);
    TANDEM_CUDA_CHECK(cudaEventRecord(done->get(), stream));
  } catch (const Error& error) {
    {
      std::lock_guard<std::mutex> lock(watch_mutex_);
      watched_.erase(entry);
    }
    if (failed()) throw_failure(what, __FILE__, __LINE__);  // the watchdog aborted a blocked call
    throw located_error(error.kind(), error.file(), error.line(),
                        fmt::format("{}: {}", describe(what), error.message()));
  }
  {
    std::lock_guard<std::mutex> lock(watch_mutex_);
    entry->done = done;
  }
  return std::make_unique<NcclWork>(shared_from_this(), what, std::move(tensors), std::move(done), host_blocking);
}

WorkHandle NcclCommunicator::all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions options) {
  const std::string what = fmt::format("all_reduce({})", reduce_op_name(op));
  check_device_tensor(what, tensor, "tensor");
  const ncclRedOp_t nccl_op = reduction(what, tensor.scalar_type(), op);
  const ncclDataType_t type = wire_type(what, tensor.scalar_type());
  return run(what, {tensor}, options, [&](cudaStream_t stream) {
    TANDEM_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, nccl_op, comm_, stream),
                      comm_);
  });
}

WorkHandle NcclCommunicator::all_gather_async(at::Tensor output, at::Tensor input, OpOptions options) {
  const std::string what = "all_gather";
  check_device_tensor(what, output, "output");
  check_device_tensor(what, input, "input");
  check_same_dtype(what, output, input);
  TANDEM_COMM_CHECK(*this, output.numel() == size() * input.numel(),
                    "{}: `output` has {} elements, expected size() * input.numel() = {} * {} = {}", describe(what),
                    output.numel(), size(), input.numel(), size() * input.numel());
  // An input that is exactly this rank's slice of the output is the in-place form (NCCL takes it
  // as is); any other overlap would be a race.
  const void* own_slice = static_cast<const char*>(output.data_ptr()) + rank() * input.nbytes();
  const bool in_place = input.nbytes() > 0 && input.data_ptr() == own_slice;
  TANDEM_COMM_CHECK(*this, in_place || !byte_ranges_overlap(output, input),
                    "{}: `input` overlaps `output` other than as this rank's slice {} of it", describe(what), rank());
  const ncclDataType_t type = wire_type(what, input.scalar_type());
  return run(what, {output, input}, options, [&](cudaStream_t stream) {
    TANDEM_NCCL_CHECK(ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(), type, comm_, stream), comm_);
  });
}

WorkHandle NcclCommunicator::reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions options) {
  const std::string what = fmt::format("reduce_scatter({})", reduce_op_name(op));
  check_device_tensor(what, output, "output");
  check_device_tensor(what, input, "input");
  check_same_dtype(what, output, input);
  TANDEM_COMM_CHECK(*this, input.numel() == size() * output.numel(),
                    "{}: `input` has {} elements, expected size() * output.numel() = {} * {} = {}", describe(what),
                    input.numel(), size(), output.numel(), size() * output.numel());
  TANDEM_COMM_CHECK(*this, !byte_ranges_overlap(output, input), "{}: `output` and `input` overlap", describe(what));
  const ncclRedOp_t nccl_op = reduction(what, input.scalar_type(), op);
  const ncclDataType_t type = wire_type(what, input.scalar_type());
  return run(what, {output, input}, options, [&](cudaStream_t stream) {
    TANDEM_NCCL_CHECK(
        ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), type, nccl_op, comm_, stream), comm_);
  });
}

WorkHandle NcclCommunicator::broadcast_async(at::Tensor tensor, int root, OpOptions options) {
  const std::string what = fmt::format("broadcast from rank {}", root);
  check_device_tensor(what, tensor, "tensor");
  TANDEM_COMM_CHECK(*this, root >= 0 && root < size(),
                    "{}: root {} is not a rank of this communicator (expected 0..{})", describe(what), root,
                    size() - 1);
  const ncclDataType_t type = wire_type(what, tensor.scalar_type());
  return run(what, {tensor}, options, [&](cudaStream_t stream) {
    TANDEM_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, root, comm_, stream),
                      comm_);
  });
}

WorkHandle NcclCommunicator::all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                                              std::vector<int64_t> input_splits, OpOptions options) {
  const std::string what = "all_to_all";
  check_device_tensor(what, output, "output");
  check_device_tensor(what, input, "input");
  check_same_dtype(what, output, input);
  check_all_to_all(what, output, input, output_splits, input_splits);
  TANDEM_COMM_CHECK(*this, input_splits[rank()] == output_splits[rank()],
                    "{}: rank {} sends itself {} rows but expects {} (input_splits[{}] must equal "
                    "output_splits[{}])",
                    describe(what), rank(), input_splits[rank()], output_splits[rank()], rank(), rank());
  const ncclDataType_t type = wire_type(what, input.scalar_type());
  const int64_t row_count = c10::multiply_integers(input.sizes().slice(1));  // elements per row
  const int64_t row_bytes = row_count * static_cast<int64_t>(input.element_size());
  return run(what, {output, input}, options, [&](cudaStream_t stream) {
    auto* send = static_cast<char*>(input.data_ptr());
    auto* recv = static_cast<char*>(output.data_ptr());
    // The own block is a device copy; the others are one NCCL group of sends and receives, so
    // every pair's transfers progress together whatever order the ranks list them in.
    int64_t send_offset = 0;
    int64_t recv_offset = 0;
    TANDEM_NCCL_CHECK(ncclGroupStart(), comm_);
    for (int peer = 0; peer < size(); ++peer) {
      const int64_t send_rows = input_splits[peer];
      const int64_t recv_rows = output_splits[peer];
      if (peer == rank()) {
        if (send_rows > 0) {
          TANDEM_CUDA_CHECK(cudaMemcpyAsync(recv + recv_offset * row_bytes, send + send_offset * row_bytes,
                                            send_rows * row_bytes, cudaMemcpyDeviceToDevice, stream));
        }
      } else {
        if (send_rows > 0) {
          TANDEM_NCCL_CHECK(ncclSend(send + send_offset * row_bytes, send_rows * row_count, type, peer, comm_, stream),
                            comm_);
        }
        if (recv_rows > 0) {
          TANDEM_NCCL_CHECK(ncclRecv(recv + recv_offset * row_bytes, recv_rows * row_count, type, peer, comm_, stream),
                            comm_);
        }
      }
      send_offset += send_rows;
      recv_offset += recv_rows;
    }
    TANDEM_NCCL_CHECK(ncclGroupEnd(), comm_);
  });
}

WorkHandle NcclCommunicator::send_async(at::Tensor tensor, int peer, int tag, OpOptions options) {
  const std::string what = fmt::format("send to rank {} (tag {})", peer, tag);
  check_device_tensor(what, tensor, "tensor");
  check_peer_and_tag(what, peer, tag);
  const ncclDataType_t type = wire_type(what, tensor.scalar_type());
  if (peer != rank()) {
    return run(what, {tensor}, options, [&](cudaStream_t stream) {
      TANDEM_NCCL_CHECK(ncclSend(tensor.data_ptr(), tensor.numel(), type, peer, comm_, stream), comm_);
    });
  }
  // To oneself: snapshot the data now (a send's contract), hand it to the matching recv.
  at::Tensor copy = at::empty_like(tensor);
  WorkHandle work = run(what, {tensor, copy}, options, [&](cudaStream_t stream) {
    TANDEM_CUDA_CHECK(
        cudaMemcpyAsync(copy.data_ptr(), tensor.data_ptr(), tensor.nbytes(), cudaMemcpyDeviceToDevice, stream));
  });
  auto ready = std::make_shared<CudaEvent>();
  const cudaStream_t stream = options.stream != nullptr ? options.stream : comm_stream_;
  TANDEM_CUDA_CHECK(cudaEventRecord(ready->get(), stream));
  self_messages_.push_back(SelfMessage{copy, std::move(ready), tag});
  return work;
}

WorkHandle NcclCommunicator::recv_async(at::Tensor tensor, int peer, int tag, OpOptions options) {
  const std::string what = fmt::format("recv from rank {} (tag {})", peer, tag);
  check_device_tensor(what, tensor, "tensor");
  check_peer_and_tag(what, peer, tag);
  const ncclDataType_t type = wire_type(what, tensor.scalar_type());
  if (peer != rank()) {
    return run(what, {tensor}, options, [&](cudaStream_t stream) {
      TANDEM_NCCL_CHECK(ncclRecv(tensor.data_ptr(), tensor.numel(), type, peer, comm_, stream), comm_);
    });
  }
  TANDEM_COMM_CHECK(*this, !self_messages_.empty(),
                    "{}: no send to self was issued before this recv (NCCL matches in issue order, so the send "
                    "must come first)",
                    describe(what));
  SelfMessage message = std::move(self_messages_.front());
  self_messages_.pop_front();
  TANDEM_COMM_CHECK(*this, message.tag == tag, "{}: the next send to self has tag {}, not {}", describe(what),
                    message.tag, tag);
  TANDEM_COMM_CHECK(*this,
                    message.copy.nbytes() == tensor.nbytes() && message.copy.scalar_type() == tensor.scalar_type(),
                    "{}: received {} elements of {}, expected {} of {} (the send had another size or dtype)",
                    describe(what), message.copy.numel(), c10::toString(message.copy.scalar_type()), tensor.numel(),
                    c10::toString(tensor.scalar_type()));
  return run(what, {tensor, message.copy}, options, [&](cudaStream_t stream) {
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(stream, message.ready->get(), 0));
    TANDEM_CUDA_CHECK(
        cudaMemcpyAsync(tensor.data_ptr(), message.copy.data_ptr(), tensor.nbytes(), cudaMemcpyDeviceToDevice, stream));
  });
}

WorkHandle NcclCommunicator::barrier_async() {
  const std::string what = "barrier";
  // A one-element all-reduce on the comm stream, and a host block in wait(): a barrier orders
  // hosts, not just streams.
  at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, device_));
  return run(
      what, {token}, {},
      [&](cudaStream_t stream) {
        TANDEM_NCCL_CHECK(ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclInt32, ncclSum, comm_, stream),
                          comm_);
      },
      /*host_blocking=*/true);
}

// ---------------------------------------------------------------------------------------------
// NcclWork

bool NcclWork::event_done() const {
  const cudaError_t status = cudaEventQuery(done_->get());
  if (status == cudaSuccess) return true;
  if (status == cudaErrorNotReady) return false;
  TANDEM_CUDA_CHECK(status);
  return false;
}

void NcclWork::wait() {
  waited_ = true;
  if (comm_->failed() && !event_done()) comm_->throw_failure(what_, __FILE__, __LINE__);
  TANDEM_CUDA_CHECK(cudaSetDevice(comm_->device()));
  const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(comm_->device())).stream();
  TANDEM_CUDA_CHECK(cudaStreamWaitEvent(caller, done_->get(), 0));
  if (host_blocking_) synchronize();
}

void NcclWork::synchronize() {
  waited_ = true;
  const auto begin = Clock::now();
  while (!event_done()) {
    if (comm_->failed()) comm_->throw_failure(what_, __FILE__, __LINE__);
    const auto waited = Clock::now() - begin;
    if (waited >= comm_->timeout()) {
      const double seconds = std::chrono::duration<double>(comm_->timeout()).count();
      comm_->fail(ErrorKind::kCommunication, fmt::format("{} timed out after {:g} s", what_, seconds));
      throw comm_->located_error(ErrorKind::kCommunication, __FILE__, __LINE__,
                                 fmt::format("{} did not complete within {:g} s: a peer rank may have died or issued "
                                             "a different collective",
                                             comm_->describe(what_), seconds));
    }
    if (waited < kSpinPhase) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(kPollSleep);
    }
  }
  if (comm_->failed()) comm_->throw_failure(what_, __FILE__, __LINE__);
}

bool NcclWork::is_completed() {
  if (event_done()) return true;
  if (comm_->failed()) comm_->throw_failure(what_, __FILE__, __LINE__);
  return false;
}

NcclWork::~NcclWork() {
  if (waited_ || comm_->failed()) return;
  try {
    wait();  // a stream wait: later work on the caller's stream stays ordered after this one
  } catch (const std::exception& error) {
    try {
      TANDEM_LOG_ERROR("comm", "an unfinished NCCL operation was dropped and could not be waited for: {}",
                       error.what());
    } catch (...) {  // a destructor must not throw, not even from logging
    }
  }
}

}  // namespace

CommunicatorPtr make_nccl_communicator(MPI_Comm comm, std::string name, std::chrono::milliseconds timeout) {
  return std::make_shared<NcclCommunicator>(comm, std::move(name), timeout);
}

CommunicatorFactory nccl_communicator_factory(std::chrono::milliseconds timeout) {
  return [timeout](GroupKind, MPI_Comm group_comm, const std::string& name) {
    return make_nccl_communicator(group_comm, name, timeout);
  };
}

}  // namespace tandem::parallel
