// Communicator: the one interface every collective and point-to-point transfer in tandem goes
// through, with two backends: MPI (CPU tensors; every test on the development machine) and
// NCCL (CUDA tensors). Every operation is asynchronous and returns a Work handle; the blocking
// forms are thin wrappers that wait. Contracts common to all operations:
//  - Collective ordering: every rank of the communicator issues the same collectives in the
//    same order (as in MPI and NCCL); p2p operations match by (peer, tag) in issue order.
//  - Tensors must be contiguous and on the backend's device; the Work handle keeps every tensor
//    it touches alive until it completes, so callers may drop their references.
//  - Streams (NCCL only): an operation runs on `options.stream` if given, else on the
//    communicator's own communication stream, after waiting for the work already queued on the
//    caller's current stream. Work::wait() makes the caller's current stream wait for the
//    operation (no host block); Work::synchronize() blocks the host. On CPU both block.
//  - Errors throw tandem::Error (kind kCommunication / kMpi / kNccl) naming the operation,
//    communicator, rank and host; a timed-out wait is an error too (no silent hang).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/cuda_stream.h"

namespace tandem::parallel {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

struct OpOptions {
  runtime::CudaStream stream = nullptr;  // where to run (NCCL); null = the communicator's comm stream
  // What the operation is for ("dispatch", "combine", ...), read by tracing decorators
  // (exchange_recorder.h); backends ignore it. A string literal: it is kept, not copied.
  const char* label = nullptr;
};

// Handle of an operation in flight. Not copyable; destroying an unfinished Work waits for it
// (an operation is never abandoned with its buffers still in use).
class Work {
 public:
  virtual ~Work() = default;
  // Returns once the result may be used by work issued after this call (see file comment).
  // Throws tandem::Error on failure or when the communicator's timeout expires.
  virtual void wait() = 0;
  // Blocks the host until the operation has finished on the device too.
  virtual void synchronize() { wait(); }
  // Non-blocking completion test; also drives progress for backends that need it.
  virtual bool is_completed() = 0;
};
using WorkHandle = std::unique_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;  // rank inside this communicator
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;  // axis name for messages: "tp", "dp", "world", ...
  virtual std::string backend() const = 0;      // "mpi" or "nccl"

  // In place over `tensor` (any dtype used in training: f32, f64, bf16, f16, i64, i32, u8).
  virtual WorkHandle all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions options = {}) = 0;
  // `output` is size() * input.numel() elements: rank i's input lands in slice i (dim 0).
  virtual WorkHandle all_gather_async(at::Tensor output, at::Tensor input, OpOptions options = {}) = 0;
  // `input` is size() * output.numel() elements; rank i gets the reduction of everyone's slice i.
  virtual WorkHandle reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions options = {}) = 0;
  virtual WorkHandle broadcast_async(at::Tensor tensor, int root, OpOptions options = {}) = 0;
  // Uneven all-to-all along dim 0: rank sends input rows [sum(input_splits[:j]), +input_splits[j])
  // to rank j and receives output_splits[j] rows from rank j, in rank order. Splits count rows
  // (dim-0 slices); zero-sized splits are allowed. input_splits of rank i, entry j equals
  // output_splits of rank j, entry i (the caller exchanges counts first when it does not know).
  virtual WorkHandle all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                                      std::vector<int64_t> input_splits, OpOptions options = {}) = 0;
  // A send's buffer belongs to the operation until its Work's wait(): on a GPU backend the data is
  // read on the communication stream, so writing it earlier on another stream races the send.
  virtual WorkHandle send_async(at::Tensor tensor, int peer, int tag = 0, OpOptions options = {}) = 0;
  virtual WorkHandle recv_async(at::Tensor tensor, int peer, int tag = 0, OpOptions options = {}) = 0;
  virtual WorkHandle barrier_async() = 0;

  // Blocking forms.
  void all_reduce(at::Tensor tensor, ReduceOp op = ReduceOp::kSum) { all_reduce_async(std::move(tensor), op)->wait(); }
  void all_gather(at::Tensor output, at::Tensor input) {
    all_gather_async(std::move(output), std::move(input))->wait();
  }
  void reduce_scatter(at::Tensor output, at::Tensor input, ReduceOp op = ReduceOp::kSum) {
    reduce_scatter_async(std::move(output), std::move(input), op)->wait();
  }
  void broadcast(at::Tensor tensor, int root) { broadcast_async(std::move(tensor), root)->wait(); }
  void all_to_all(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                  std::vector<int64_t> input_splits) {
    all_to_all_async(std::move(output), std::move(input), std::move(output_splits), std::move(input_splits))->wait();
  }
  void send(at::Tensor tensor, int peer, int tag = 0) { send_async(std::move(tensor), peer, tag)->wait(); }
  void recv(at::Tensor tensor, int peer, int tag = 0) { recv_async(std::move(tensor), peer, tag)->wait(); }
  void barrier() { barrier_async()->wait(); }

  // Marks the communicator failed and releases it without waiting for peers; later operations
  // throw. Used by the top-level handler before MPI_Abort and by the watchdog.
  virtual void abort(const std::string& reason) = 0;

 protected:
  Communicator() = default;
};

using CommunicatorPtr = std::shared_ptr<Communicator>;

}  // namespace tandem::parallel
