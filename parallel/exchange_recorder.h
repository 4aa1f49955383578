// Timeline of the expert all-to-alls of traced steps: a Communicator decorator that records, for
// every all_to_all_async it forwards while recording is on, when it was issued, when the backend
// had posted it, when its owner started to wait for it and when the wait returned, and how many
// bytes left for / arrived from the other ranks. The MoE layer labels its exchanges through
// OpOptions::label ("counts"; "dispatch": rows to their experts; "combine": rows back; a backward
// transport carries the label of its direction, so a dispatch's backward is a "combine").
// In an overlapped pair (parallel/overlap_hook.h) [posted, wait_begin) is time the other
// micro-batch ran on this rank and [wait_begin, end) time this rank sat blocked on the exchange;
// [issued, posted) is the backend posting it (copies, MPI/NCCL calls); without overlap
// [posted, wait_begin) is the caller's own bookkeeping (about zero). The exchange time, hidden
// time and bandwidth built on them: docs/benchmarks.md, tests/bench/scale_report.py.
// Times are ms on std::chrono::steady_clock since its epoch, the clock of the pipeline executor's
// op timelines (schedule/executor/executor.h), so both can be drawn together. Off (the default):
// one atomic load per all_to_all_async; on: one small record per exchange. Everything else is
// forwarded untouched. Thread-safe: the pair runner's two threads may record into one recorder.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace tandem::parallel {

struct ExchangeSpan {
  std::string label;           // OpOptions::label, or "all_to_all" when none was given
  double issued_ms = 0;        // all_to_all_async called
  double posted_ms = 0;        // the backend's all_to_all_async returned (the exchange is in flight)
  double wait_begin_ms = 0;    // first wait()/synchronize() (or destruction) began
  double end_ms = 0;           // that wait returned
  int64_t bytes_sent = 0;      // to the other ranks of the group (this rank's own slice excluded)
  int64_t bytes_received = 0;  // from the other ranks
};

class ExchangeRecorder {
 public:
  void set_enabled(bool on) { enabled_.store(on, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  void record(ExchangeSpan span);
  // The spans recorded so far (in completion order), leaving the recorder empty.
  std::vector<ExchangeSpan> take();

 private:
  std::atomic<bool> enabled_{false};
  std::mutex mutex_;
  std::vector<ExchangeSpan> spans_;
};
using ExchangeRecorderPtr = std::shared_ptr<ExchangeRecorder>;

// `inner` with its all-to-alls recorded into `recorder` while it is enabled. Null `inner` (a
// group of one) stays null: there is nothing to exchange.
CommunicatorPtr make_recording_communicator(CommunicatorPtr inner, ExchangeRecorderPtr recorder);

// Milliseconds on the recorder's clock (steady_clock since its epoch).
double exchange_clock_ms();

// The spans of one rank as a Chrome trace (one complete event per exchange on track "exchange",
// its blocked tail [wait_begin, end) on track "blocked", bytes and times in args), which
// tests/bench/scale_report.py reads back.
std::string exchange_trace_json(const std::vector<ExchangeSpan>& spans, int rank, int64_t step);

}  // namespace tandem::parallel
