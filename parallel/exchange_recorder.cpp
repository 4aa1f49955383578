// Recording all-to-alls of traced steps (exchange_recorder.h).
#include "parallel/exchange_recorder.h"

#include <chrono>
#include <utility>

#include "runtime/json.h"

namespace tandem::parallel {
namespace {

// Bytes of the rows of `splits` other than this rank's own slice (which never leaves the rank).
int64_t peer_bytes(const at::Tensor& rows, const std::vector<int64_t>& splits, int self) {
  if (!rows.defined() || rows.dim() == 0 || rows.size(0) == 0) return 0;
  const int64_t row_bytes = rows.numel() / rows.size(0) * static_cast<int64_t>(rows.element_size());
  int64_t total = 0;
  for (size_t j = 0; j < splits.size(); ++j) {
    if (static_cast<int>(j) != self) total += splits[j];
  }
  return total * row_bytes;
}

// Forwards to the inner Work and records the span at the first wait (or at destruction, which
// waits too).
class RecordingWork final : public Work {
 public:
  RecordingWork(WorkHandle inner, ExchangeSpan span, ExchangeRecorderPtr recorder)
      : inner_(std::move(inner)), span_(std::move(span)), recorder_(std::move(recorder)) {}
  ~RecordingWork() override {
    if (recorded_) return;
    span_.wait_begin_ms = exchange_clock_ms();
    inner_.reset();
    finish();
  }
  void wait() override {
    timed([this] { inner_->wait(); });
  }
  void synchronize() override {
    timed([this] { inner_->synchronize(); });
  }
  bool is_completed() override { return inner_->is_completed(); }

 private:
  template <typename F>
  void timed(F&& f) {
    if (recorded_) return f();
    span_.wait_begin_ms = exchange_clock_ms();
    f();
    finish();
  }
  void finish() {
    span_.end_ms = exchange_clock_ms();
    recorded_ = true;
    recorder_->record(std::move(span_));
  }

  WorkHandle inner_;
  ExchangeSpan span_;
  ExchangeRecorderPtr recorder_;
  bool recorded_ = false;
};

class RecordingCommunicator final : public Communicator {
 public:
  RecordingCommunicator(CommunicatorPtr inner, ExchangeRecorderPtr recorder)
      : inner_(std::move(inner)), recorder_(std::move(recorder)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  std::string backend() const override { return inner_->backend(); }

  WorkHandle all_reduce_async(at::Tensor tensor, ReduceOp op, OpOptions options) override {
    return inner_->all_reduce_async(std::move(tensor), op, options);
  }
  WorkHandle all_gather_async(at::Tensor output, at::Tensor input, OpOptions options) override {
    return inner_->all_gather_async(std::move(output), std::move(input), options);
  }
  WorkHandle reduce_scatter_async(at::Tensor output, at::Tensor input, ReduceOp op, OpOptions options) override {
    return inner_->reduce_scatter_async(std::move(output), std::move(input), op, options);
  }
  WorkHandle broadcast_async(at::Tensor tensor, int root, OpOptions options) override {
    return inner_->broadcast_async(std::move(tensor), root, options);
  }
  WorkHandle all_to_all_async(at::Tensor output, at::Tensor input, std::vector<int64_t> output_splits,
                              std::vector<int64_t> input_splits, OpOptions options) override {
    if (!recorder_->enabled()) {
      return inner_->all_to_all_async(std::move(output), std::move(input), std::move(output_splits),
                                      std::move(input_splits), options);
    }
    ExchangeSpan span;
    span.label = options.label ? options.label : "all_to_all";
    span.bytes_sent = peer_bytes(input, input_splits, rank());
    span.bytes_received = peer_bytes(output, output_splits, rank());
    span.issued_ms = exchange_clock_ms();
    WorkHandle work = inner_->all_to_all_async(std::move(output), std::move(input), std::move(output_splits),
                                               std::move(input_splits), options);
    span.posted_ms = exchange_clock_ms();
    return std::make_unique<RecordingWork>(std::move(work), std::move(span), recorder_);
  }
  WorkHandle send_async(at::Tensor tensor, int peer, int tag, OpOptions options) override {
    return inner_->send_async(std::move(tensor), peer, tag, options);
  }
  WorkHandle recv_async(at::Tensor tensor, int peer, int tag, OpOptions options) override {
    return inner_->recv_async(std::move(tensor), peer, tag, options);
  }
  WorkHandle barrier_async() override { return inner_->barrier_async(); }
  void abort(const std::string& reason) override { inner_->abort(reason); }

 private:
  CommunicatorPtr inner_;
  ExchangeRecorderPtr recorder_;
};

}  // namespace

void ExchangeRecorder::record(ExchangeSpan span) {
  const std::lock_guard<std::mutex> lock(mutex_);
  spans_.push_back(std::move(span));
}

std::vector<ExchangeSpan> ExchangeRecorder::take() {
  const std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(spans_, {});
}

CommunicatorPtr make_recording_communicator(CommunicatorPtr inner, ExchangeRecorderPtr recorder) {
  if (!inner) return inner;
  return std::make_shared<RecordingCommunicator>(std::move(inner), std::move(recorder));
}

double exchange_clock_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string exchange_trace_json(const std::vector<ExchangeSpan>& spans, int rank, int64_t step) {
  // Chrome trace times are microseconds (to the nanosecond); the ms values ride along in args
  // (to the nanosecond too) for exact sums.
  nlohmann::ordered_json events = nlohmann::ordered_json::array();
  auto event = [&](const ExchangeSpan& s, const char* track, double from, double to) {
    nlohmann::ordered_json e;
    e["name"] = s.label;
    e["cat"] = track;
    e["ph"] = "X";
    e["pid"] = rank;
    e["tid"] = track;
    e["ts"] = json::rounded(from * 1e3, 3);
    e["dur"] = json::rounded((to - from) * 1e3, 3);
    nlohmann::ordered_json& args = e["args"];
    args["issued_ms"] = json::rounded(s.issued_ms, 6);
    args["posted_ms"] = json::rounded(s.posted_ms, 6);
    args["wait_begin_ms"] = json::rounded(s.wait_begin_ms, 6);
    args["end_ms"] = json::rounded(s.end_ms, 6);
    args["bytes_sent"] = s.bytes_sent;
    args["bytes_received"] = s.bytes_received;
    events.push_back(std::move(e));
  };
  for (const ExchangeSpan& s : spans) {
    event(s, "exchange", s.issued_ms, s.end_ms);
    event(s, "blocked", s.wait_begin_ms, s.end_ms);
  }
  nlohmann::ordered_json root;
  root["format"] = "tandem-exchanges";
  root["rank"] = rank;
  root["step"] = step;
  root["traceEvents"] = std::move(events);
  return json::dump_rows(root);
}

}  // namespace tandem::parallel
