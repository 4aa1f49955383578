// MPI backend of Communicator (contract in mpi_communicator.h and communicator.h, reasons in
// docs/DESIGN.md#mpi-backend).
// Each operation validates its arguments, issues one MPI non-blocking call, and hands back an
// MpiWork that owns everything MPI may still touch (tensors, all-to-all count arrays) plus the
// post-processing to run on completion (avg division, received-size check). A Work that has to be
// given up on while MPI may still write into its buffers (timeout, abort) leaks them on purpose:
// freeing memory that a transfer in flight writes into is worse than a leak in a dying process.
#include "parallel/mpi_communicator.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <climits>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "parallel/detail/communicator_base.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/mpi_check.h"

namespace tandem::parallel {
namespace {

using detail::byte_ranges_overlap;
using detail::reduce_op_name;

using Clock = std::chrono::steady_clock;

// Wait-loop pacing (docs/DESIGN.md#mpi-backend): yield while an answer is likely imminent, then
// sleep so that oversubscribed ranks leave the core to the peers they are waiting for.
constexpr auto kSpinPhase = std::chrono::milliseconds(2);
constexpr auto kPollSleep = std::chrono::microseconds(50);

constexpr const char* kCollectiveHint = "a peer rank may have died or issued a different collective";

// Element-wise combiners for the 2-byte float types, which MPI has no built-in operators for.
// Each pairwise step is computed in float and rounded once, as LibTorch's own bf16/f16 add does.
struct Sum {
  float operator()(float a, float b) const { return a + b; }
};
struct Max {
  float operator()(float a, float b) const { return a > b ? a : b; }
};
struct Min {
  float operator()(float a, float b) const { return a < b ? a : b; }
};

// MPI_User_function: inout[i] = in[i] (op) inout[i]. Stateless, so a plain function pointer.
template <typename T, typename Combine>
void combine_2byte(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  const Combine combine;
  for (int i = 0; i < *len; ++i) b[i] = T(combine(static_cast<float>(a[i]), static_cast<float>(b[i])));
}

// Everything MPI may read or write until an operation completes. Kept as one heap object so that
// an operation that must be given up on can be leaked whole (see the file comment).
struct InFlight {
  std::vector<at::Tensor> tensors;
  std::vector<int> counts;  // all-to-all: send counts, send displs, recv counts, recv displs
};

// How a dtype travels: an MPI datatype and how many of it make one tensor element.
struct WireType {
  MPI_Datatype type;
  int64_t units_per_element;
};

class MpiCommunicator;

using Finisher = std::function<void(const MPI_Status&)>;

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<MpiCommunicator> comm, std::string op, std::string hint, std::unique_ptr<InFlight> buffers,
          MPI_Request request, Finisher finish)
      : comm_(std::move(comm)),
        op_(std::move(op)),
        hint_(std::move(hint)),
        buffers_(std::move(buffers)),
        finish_(std::move(finish)),
        request_(request) {}
  ~MpiWork() override;
  MpiWork(const MpiWork&) = delete;
  MpiWork& operator=(const MpiWork&) = delete;

  void wait() override;
  bool is_completed() override;

 private:
  enum class State { kPending, kDone, kFailed, kAbandoned };

  bool poll();  // one MPI_Test; true once complete (post-processing done); throws on failure
  void wait_for(std::chrono::milliseconds limit);
  [[noreturn]] void give_up(const Error& error);  // abandons the in-flight operation and throws
  [[noreturn]] void rethrow_failure() const { std::rethrow_exception(error_); }

  std::shared_ptr<MpiCommunicator> comm_;
  std::string op_;    // "all_reduce(sum)", "send to rank 1 (tag 0)", ...
  std::string hint_;  // what a timeout most likely means for this kind of operation
  std::unique_ptr<InFlight> buffers_;
  Finisher finish_;
  MPI_Request request_;
  State state_ = State::kPending;
  std::exception_ptr error_;
};

class MpiCommunicator final : public detail::CommunicatorBase, public std::enable_shared_from_this<MpiCommunicator> {
 public:
  MpiCommunicator(MPI_Comm parent, std::string name, std::chrono::milliseconds timeout);
  ~MpiCommunicator() override;

  std::string backend() const override { return "mpi"; }

  WorkHandle all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions options) override;
  WorkHandle all_gather_async(at::Tensor output, at::Tensor input, OpOptions options) override;
  WorkHandle reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions options) override;
  WorkHandle broadcast_async(at::Tensor tensor, int root, OpOptions options) override;
  WorkHandle all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                              std::vector<int64_t> input_splits, OpOptions options) override;
  WorkHandle send_async(at::Tensor tensor, int peer, int tag, OpOptions options) override;
  WorkHandle recv_async(at::Tensor tensor, int peer, int tag, OpOptions options) override;
  WorkHandle barrier_async() override;
  void abort(const std::string& reason) override;

  // --- used by MpiWork ---
  Error mpi_error(int code, const char* call, std::string_view op, const char* file, int line) const;

 private:
  void check_cpu_tensor(std::string_view op, const at::Tensor& tensor, const char* role) const;
  void check_peer_and_tag(std::string_view op, int peer, int tag) const;
  int checked_count(std::string_view op, const char* what, int64_t count) const;
  WireType wire_type(at::ScalarType dtype) const;
  MPI_Op reduction(std::string_view op, at::ScalarType dtype, ReduceOp reduce) const;
  WorkHandle start(std::string op, std::string hint, std::unique_ptr<InFlight> buffers, MPI_Request request,
                   Finisher finish = {});
  // Post-processing of ReduceOp::kAvg: MPI summed, this divides by the number of ranks.
  Finisher average_finisher(ReduceOp op, const at::Tensor& result) const;
  void free_mpi_objects() noexcept;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int tag_ub_ = 32767;  // the smallest upper bound MPI guarantees; replaced by the real one
  // 2-byte contiguous datatype carrying bf16/f16 elements, and the sum/max/min operators over it.
  MPI_Datatype half_type_ = MPI_DATATYPE_NULL;
  std::array<MPI_Op, 3> bf16_ops_{MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
  std::array<MPI_Op, 3> f16_ops_{MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
};

// Like TANDEM_MPI_CHECK, but the message names the operation and the communicator.
#define TANDEM_COMM_MPI_CHECK(comm, call, call_name, op)                         \
  do {                                                                           \
    const int tandem_comm_rc_ = (call);                                          \
    if (tandem_comm_rc_ != MPI_SUCCESS) [[unlikely]]                             \
      throw(comm).mpi_error(tandem_comm_rc_, call_name, op, __FILE__, __LINE__); \
  } while (0)

// ---------------------------------------------------------------------------------------------
// MpiCommunicator: construction and teardown

MpiCommunicator::MpiCommunicator(MPI_Comm parent, std::string name, std::chrono::milliseconds timeout)
    : CommunicatorBase(std::move(name), timeout) {
  try {
    TANDEM_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    TANDEM_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    int rank = 0;
    int size = 0;
    int world_rank = -1;
    TANDEM_MPI_CHECK(MPI_Comm_rank(comm_, &rank));
    TANDEM_MPI_CHECK(MPI_Comm_size(comm_, &size));
    TANDEM_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
    set_identity(rank, size, world_rank);
    int* tag_ub = nullptr;
    int has_tag_ub = 0;
    TANDEM_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &has_tag_ub));
    if (has_tag_ub && tag_ub != nullptr) tag_ub_ = *tag_ub;

    TANDEM_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &half_type_));
    TANDEM_MPI_CHECK(MPI_Type_commit(&half_type_));
    TANDEM_MPI_CHECK(MPI_Op_create(&combine_2byte<c10::BFloat16, Sum>, /*commute=*/1, &bf16_ops_[0]));
    TANDEM_MPI_CHECK(MPI_Op_create(&combine_2byte<c10::BFloat16, Max>, 1, &bf16_ops_[1]));
    TANDEM_MPI_CHECK(MPI_Op_create(&combine_2byte<c10::BFloat16, Min>, 1, &bf16_ops_[2]));
    TANDEM_MPI_CHECK(MPI_Op_create(&combine_2byte<c10::Half, Sum>, 1, &f16_ops_[0]));
    TANDEM_MPI_CHECK(MPI_Op_create(&combine_2byte<c10::Half, Max>, 1, &f16_ops_[1]));
    TANDEM_MPI_CHECK(MPI_Op_create(&combine_2byte<c10::Half, Min>, 1, &f16_ops_[2]));
  } catch (...) {
    free_mpi_objects();
    throw;
  }
}

MpiCommunicator::~MpiCommunicator() {
  // After MPI_Finalize no MPI object may be touched; they went away with MPI.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) free_mpi_objects();
}

void MpiCommunicator::free_mpi_objects() noexcept {
  for (auto* ops : {&bf16_ops_, &f16_ops_}) {
    for (MPI_Op& op : *ops) {
      if (op != MPI_OP_NULL) MPI_Op_free(&op);
    }
  }
  if (half_type_ != MPI_DATATYPE_NULL) MPI_Type_free(&half_type_);
  // Local in practice and safe with operations still pending (MPI defers the deallocation), so
  // this never waits for peers, even after an abort.
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

// ---------------------------------------------------------------------------------------------
// MpiCommunicator: failure state and argument checks

void MpiCommunicator::abort(const std::string& reason) { mark_failed(ErrorKind::kCommunication, reason); }

Error MpiCommunicator::mpi_error(int code, const char* call, std::string_view op, const char* file, int line) const {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  int error_class = 0;
  MPI_Error_class(code, &error_class);
  std::string advice;
  if (error_class == MPI_ERR_TRUNCATE) advice = " (the incoming message is larger than the receive tensor)";
  return located_error(ErrorKind::kMpi, file, line,
                       fmt::format("{}: {} failed with code {}: {}{}", describe(op), call, code,
                                   std::string(text, static_cast<size_t>(length)), advice));
}

void MpiCommunicator::check_cpu_tensor(std::string_view op, const at::Tensor& tensor, const char* role) const {
  check_tensor(
      op, tensor, role, [](const at::Tensor& t) { return t.device().is_cpu() && t.layout() == at::kStrided; },
      "the MPI backend takes dense CPU tensors (CUDA tensors go through the NCCL backend)");
}

void MpiCommunicator::check_peer_and_tag(std::string_view op, int peer, int tag) const {
  check_peer(op, peer);
  TANDEM_COMM_CHECK(*this, tag >= 0 && tag <= tag_ub_, "{}: tag {} is outside the range MPI allows here (0..{})",
                    describe(op), tag, tag_ub_);
}

int MpiCommunicator::checked_count(std::string_view op, const char* what, int64_t count) const {
  TANDEM_COMM_CHECK(*this, count <= INT_MAX,
                    "{}: {} is {} MPI elements, more than the {} one MPI call can address; split the transfer",
                    describe(op), what, count, INT_MAX);
  return static_cast<int>(count);
}

WireType MpiCommunicator::wire_type(at::ScalarType dtype) const {
  switch (dtype) {
    case at::kFloat: return {MPI_FLOAT, 1};
    case at::kDouble: return {MPI_DOUBLE, 1};
    case at::kBFloat16:
    case at::kHalf: return {half_type_, 1};
    case at::kLong: return {MPI_INT64_T, 1};
    case at::kInt: return {MPI_INT32_T, 1};
    case at::kShort: return {MPI_INT16_T, 1};
    case at::kChar: return {MPI_INT8_T, 1};
    case at::kByte: return {MPI_UINT8_T, 1};
    case at::kBool: return {MPI_C_BOOL, 1};
    default:
      // Anything else can still be moved, byte for byte; reductions refuse it (see reduction()).
      return {MPI_BYTE, static_cast<int64_t>(c10::elementSize(dtype))};
  }
}

MPI_Op MpiCommunicator::reduction(std::string_view op, at::ScalarType dtype, ReduceOp reduce) const {
  const bool is_avg = reduce == ReduceOp::kAvg;
  // Index into the 2-byte operator tables; avg is a sum followed by a division.
  const size_t half_index = reduce == ReduceOp::kMax ? 1 : reduce == ReduceOp::kMin ? 2 : 0;
  switch (dtype) {
    case at::kFloat:
    case at::kDouble: return reduce == ReduceOp::kMax ? MPI_MAX : reduce == ReduceOp::kMin ? MPI_MIN : MPI_SUM;
    case at::kBFloat16: return bf16_ops_[half_index];
    case at::kHalf: return f16_ops_[half_index];
    case at::kLong:
    case at::kInt:
    case at::kShort:
    case at::kChar:
    case at::kByte:
      TANDEM_COMM_CHECK(*this, !is_avg,
                        "{}: avg is not defined for integer dtype {} (an integer mean would truncate); "
                        "reduce with sum and divide in a floating type",
                        describe(op), c10::toString(dtype));
      return reduce == ReduceOp::kMax ? MPI_MAX : reduce == ReduceOp::kMin ? MPI_MIN : MPI_SUM;
    case at::kBool:
      TANDEM_COMM_CHECK(*this, reduce == ReduceOp::kMax || reduce == ReduceOp::kMin,
                        "{}: bool tensors reduce with max (logical or) or min (logical and) only", describe(op));
      return reduce == ReduceOp::kMax ? MPI_LOR : MPI_LAND;
    default:
      TANDEM_COMM_THROW(*this, kCommunication,
                        "{}: dtype {} cannot be reduced by the MPI backend (supported: float32, float64, bfloat16, "
                        "float16, int64, int32, int16, int8, uint8, bool)",
                        describe(op), c10::toString(dtype));
  }
}

Finisher MpiCommunicator::average_finisher(ReduceOp op, const at::Tensor& result) const {
  if (op != ReduceOp::kAvg) return {};
  return [result, ranks = size()](const MPI_Status&) { result.div_(ranks); };
}

WorkHandle MpiCommunicator::start(std::string op, std::string hint, std::unique_ptr<InFlight> buffers,
                                  MPI_Request request, Finisher finish) {
  return std::make_unique<MpiWork>(shared_from_this(), std::move(op), std::move(hint), std::move(buffers), request,
                                   std::move(finish));
}

// ---------------------------------------------------------------------------------------------
// MpiCommunicator: operations. Each: validate, pin the buffers, issue, wrap in a Work.

WorkHandle MpiCommunicator::all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions /*options*/) {
  const std::string what = fmt::format("all_reduce({})", reduce_op_name(op));
  check_usable(what);
  check_cpu_tensor(what, tensor, "tensor");
  const MPI_Op mpi_op = reduction(what, tensor.scalar_type(), op);
  const WireType wire = wire_type(tensor.scalar_type());
  const int count = checked_count(what, "`tensor`", tensor.numel());
  auto buffers = std::make_unique<InFlight>(InFlight{{tensor}, {}});
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this,
                        MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count, wire.type, mpi_op, comm_, &request),
                        "MPI_Iallreduce", what);
  return start(what, kCollectiveHint, std::move(buffers), request, average_finisher(op, tensor));
}

WorkHandle MpiCommunicator::all_gather_async(at::Tensor output, at::Tensor input, OpOptions /*options*/) {
  const std::string what = "all_gather";
  check_usable(what);
  check_cpu_tensor(what, output, "output");
  check_cpu_tensor(what, input, "input");
  check_same_dtype(what, output, input);
  TANDEM_COMM_CHECK(*this, output.numel() == size() * input.numel(),
                    "{}: `output` has {} elements, expected size() * input.numel() = {} * {} = {}", describe(what),
                    output.numel(), size(), input.numel(), size() * input.numel());
  const WireType wire = wire_type(input.scalar_type());
  const int count = checked_count(what, "`input`", input.numel() * wire.units_per_element);
  // An input that is exactly this rank's slice of the output is the in-place form (MPI_IN_PLACE);
  // any other overlap would be a race inside MPI.
  const void* own_slice = static_cast<const char*>(output.data_ptr()) + rank() * input.nbytes();
  const bool in_place = input.nbytes() > 0 && input.data_ptr() == own_slice;
  TANDEM_COMM_CHECK(*this, in_place || !byte_ranges_overlap(output, input),
                    "{}: `input` overlaps `output` other than as this rank's slice {} of it", describe(what), rank());
  auto buffers = std::make_unique<InFlight>(InFlight{{output, input}, {}});
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this,
                        MPI_Iallgather(in_place ? MPI_IN_PLACE : input.data_ptr(), count, wire.type, output.data_ptr(),
                                       count, wire.type, comm_, &request),
                        "MPI_Iallgather", what);
  return start(what, kCollectiveHint, std::move(buffers), request);
}

WorkHandle MpiCommunicator::reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op,
                                                 OpOptions /*options*/) {
  const std::string what = fmt::format("reduce_scatter({})", reduce_op_name(op));
  check_usable(what);
  check_cpu_tensor(what, output, "output");
  check_cpu_tensor(what, input, "input");
  check_same_dtype(what, output, input);
  TANDEM_COMM_CHECK(*this, input.numel() == size() * output.numel(),
                    "{}: `input` has {} elements, expected size() * output.numel() = {} * {} = {}", describe(what),
                    input.numel(), size(), output.numel(), size() * output.numel());
  TANDEM_COMM_CHECK(*this, !byte_ranges_overlap(output, input), "{}: `output` and `input` overlap", describe(what));
  const MPI_Op mpi_op = reduction(what, input.scalar_type(), op);
  const WireType wire = wire_type(input.scalar_type());
  const int count = checked_count(what, "`output`", output.numel());
  checked_count(what, "`input`", input.numel());
  auto buffers = std::make_unique<InFlight>(InFlight{{output, input}, {}});
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(
      *this, MPI_Ireduce_scatter_block(input.data_ptr(), output.data_ptr(), count, wire.type, mpi_op, comm_, &request),
      "MPI_Ireduce_scatter_block", what);
  return start(what, kCollectiveHint, std::move(buffers), request, average_finisher(op, output));
}

WorkHandle MpiCommunicator::broadcast_async(at::Tensor tensor, int root, OpOptions /*options*/) {
  const std::string what = fmt::format("broadcast from rank {}", root);
  check_usable(what);
  check_cpu_tensor(what, tensor, "tensor");
  TANDEM_COMM_CHECK(*this, root >= 0 && root < size(),
                    "{}: root {} is not a rank of this communicator (expected 0..{})", describe(what), root,
                    size() - 1);
  const WireType wire = wire_type(tensor.scalar_type());
  const int count = checked_count(what, "`tensor`", tensor.numel() * wire.units_per_element);
  auto buffers = std::make_unique<InFlight>(InFlight{{tensor}, {}});
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this, MPI_Ibcast(tensor.data_ptr(), count, wire.type, root, comm_, &request), "MPI_Ibcast",
                        what);
  return start(what, kCollectiveHint, std::move(buffers), request);
}

WorkHandle MpiCommunicator::all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                                             std::vector<int64_t> input_splits, OpOptions /*options*/) {
  const std::string what = "all_to_all";
  check_usable(what);
  check_cpu_tensor(what, output, "output");
  check_cpu_tensor(what, input, "input");
  check_same_dtype(what, output, input);
  check_all_to_all(what, output, input, output_splits, input_splits);

  const WireType wire = wire_type(input.scalar_type());
  int64_t row_units = wire.units_per_element;
  for (int64_t extent : input.sizes().slice(1)) row_units *= extent;
  auto buffers = std::make_unique<InFlight>(InFlight{{output, input}, std::vector<int>(4 * size())});
  int* send_counts = buffers->counts.data();
  int* send_displs = send_counts + size();
  int* recv_counts = send_counts + 2 * size();
  int* recv_displs = send_counts + 3 * size();
  int64_t send_offset = 0;
  int64_t recv_offset = 0;
  for (int j = 0; j < size(); ++j) {
    send_counts[j] = checked_count(what, "a send count", input_splits[j] * row_units);
    send_displs[j] = checked_count(what, "a send displacement", send_offset);
    recv_counts[j] = checked_count(what, "a receive count", output_splits[j] * row_units);
    recv_displs[j] = checked_count(what, "a receive displacement", recv_offset);
    send_offset += input_splits[j] * row_units;
    recv_offset += output_splits[j] * row_units;
  }
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this,
                        MPI_Ialltoallv(input.data_ptr(), send_counts, send_displs, wire.type, output.data_ptr(),
                                       recv_counts, recv_displs, wire.type, comm_, &request),
                        "MPI_Ialltoallv", what);
  return start(what,
               "a peer rank may have died, issued a different collective, or passed splits that do not match "
               "this rank's (input_splits[j] of rank i must equal output_splits[i] of rank j)",
               std::move(buffers), request);
}

WorkHandle MpiCommunicator::send_async(at::Tensor tensor, int peer, int tag, OpOptions /*options*/) {
  const std::string what = fmt::format("send to rank {} (tag {})", peer, tag);
  check_usable(what);
  check_cpu_tensor(what, tensor, "tensor");
  check_peer_and_tag(what, peer, tag);
  const WireType wire = wire_type(tensor.scalar_type());
  const int count = checked_count(what, "`tensor`", tensor.numel() * wire.units_per_element);
  auto buffers = std::make_unique<InFlight>(InFlight{{tensor}, {}});
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this, MPI_Isend(tensor.data_ptr(), count, wire.type, peer, tag, comm_, &request), "MPI_Isend",
                        what);
  return start(what, fmt::format("rank {} may have died or not posted the matching recv", peer), std::move(buffers),
               request);
}

WorkHandle MpiCommunicator::recv_async(at::Tensor tensor, int peer, int tag, OpOptions /*options*/) {
  const std::string what = fmt::format("recv from rank {} (tag {})", peer, tag);
  check_usable(what);
  check_cpu_tensor(what, tensor, "tensor");
  check_peer_and_tag(what, peer, tag);
  const WireType wire = wire_type(tensor.scalar_type());
  const int count = checked_count(what, "`tensor`", tensor.numel() * wire.units_per_element);
  auto buffers = std::make_unique<InFlight>(InFlight{{tensor}, {}});
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this, MPI_Irecv(tensor.data_ptr(), count, wire.type, peer, tag, comm_, &request), "MPI_Irecv",
                        what);
  // A shorter message than the tensor is not an MPI error, but it is one for us: the two sides
  // disagree about the shape (a longer one already fails in MPI with a truncation error).
  auto finish = [this, what, count, wire](const MPI_Status& status) {
    MPI_Status copy = status;
    int received = 0;
    TANDEM_COMM_MPI_CHECK(*this, MPI_Get_count(&copy, wire.type, &received), "MPI_Get_count", what);
    TANDEM_COMM_CHECK(*this, received == count,
                      "{}: received {} elements, expected {} (the sender's tensor has a different size)",
                      describe(what), received / wire.units_per_element, count / wire.units_per_element);
  };
  return start(what, fmt::format("rank {} may have died or not posted the matching send", peer), std::move(buffers),
               request, std::move(finish));
}

WorkHandle MpiCommunicator::barrier_async() {
  const std::string what = "barrier";
  check_usable(what);
  MPI_Request request = MPI_REQUEST_NULL;
  TANDEM_COMM_MPI_CHECK(*this, MPI_Ibarrier(comm_, &request), "MPI_Ibarrier", what);
  return start(what, kCollectiveHint, std::make_unique<InFlight>(), request);
}

// ---------------------------------------------------------------------------------------------
// MpiWork

bool MpiWork::poll() {
  int done = 0;
  MPI_Status status;
  const int code = MPI_Test(&request_, &done, &status);
  if (code != MPI_SUCCESS) [[unlikely]] {
    const Error error = comm_->mpi_error(code, "MPI_Test", op_, __FILE__, __LINE__);
    if (request_ != MPI_REQUEST_NULL) give_up(error);  // MPI still owns the operation
    state_ = State::kFailed;
    error_ = std::make_exception_ptr(error);
    buffers_.reset();
    rethrow_failure();
  }
  if (!done) return false;
  state_ = State::kDone;
  try {
    if (finish_) finish_(status);
  } catch (...) {
    state_ = State::kFailed;
    error_ = std::current_exception();
    buffers_.reset();
    throw;
  }
  buffers_.reset();  // MPI is done with them; the caller's references remain
  return true;
}

void MpiWork::give_up(const Error& error) {
  state_ = State::kAbandoned;
  error_ = std::make_exception_ptr(error);
  // MPI may still write into these buffers (an active collective request cannot be freed or
  // cancelled), so they are leaked instead of released: see the file comment.
  static_cast<void>(buffers_.release());
  request_ = MPI_REQUEST_NULL;
  rethrow_failure();
}

void MpiWork::wait_for(std::chrono::milliseconds limit) {
  const auto begin = Clock::now();
  while (!poll()) {
    if (comm_->failed()) {
      give_up(comm_->located_error(ErrorKind::kCommunication, __FILE__, __LINE__,
                                   fmt::format("{} was aborted: {}", comm_->describe(op_), comm_->failure_reason())));
    }
    const auto waited = Clock::now() - begin;
    if (waited >= limit) {
      const double seconds = std::chrono::duration<double>(limit).count();
      const Error error = comm_->located_error(
          ErrorKind::kCommunication, __FILE__, __LINE__,
          fmt::format("{} did not complete within {:g} s: {}", comm_->describe(op_), seconds, hint_));
      // The collective order of the whole communicator is now broken: nothing later can match.
      comm_->abort(fmt::format("{} timed out after {:g} s", op_, seconds));
      give_up(error);
    }
    if (waited < kSpinPhase) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(kPollSleep);
    }
  }
}

void MpiWork::wait() {
  if (state_ == State::kDone) return;
  if (state_ != State::kPending) rethrow_failure();
  wait_for(comm_->timeout());
}

bool MpiWork::is_completed() {
  if (state_ == State::kDone) return true;
  if (state_ != State::kPending) rethrow_failure();
  if (poll()) return true;
  if (comm_->failed()) {
    give_up(comm_->located_error(ErrorKind::kCommunication, __FILE__, __LINE__,
                                 fmt::format("{} was aborted: {}", comm_->describe(op_), comm_->failure_reason())));
  }
  return false;
}

MpiWork::~MpiWork() {
  if (state_ != State::kPending) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // a Work that outlived MPI: nothing can be asked of MPI any more
  try {
    // Dropping an unfinished operation waits for it (communicator.h), bounded by the timeout;
    // on an aborted communicator there is nothing left to wait for.
    if (comm_->failed()) {
      if (!poll()) {
        give_up(comm_->located_error(ErrorKind::kCommunication, __FILE__, __LINE__,
                                     fmt::format("{} was dropped unfinished after an abort", comm_->describe(op_))));
      }
    } else {
      wait_for(comm_->timeout());
    }
  } catch (const std::exception& error) {
    try {
      TANDEM_LOG_ERROR("comm", "an unfinished operation was dropped and could not complete; giving up on it: {}",
                       error.what());
    } catch (...) {  // a destructor must not throw, not even from logging
    }
  } catch (...) {
  }
}

}  // namespace

CommunicatorPtr make_mpi_communicator(MPI_Comm comm, std::string name, std::chrono::milliseconds timeout) {
  return std::make_shared<MpiCommunicator>(comm, std::move(name), timeout);
}

}  // namespace tandem::parallel
