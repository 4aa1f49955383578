// WeightGradQueue: the deferred weight-gradient ("W") work of zero-bubble pipeline schedules.
// A split-capable linear layer (split_linear / grouped_split_linear, model/detail/layers.h)
// computes its input gradient ("B") during the autograd backward and, while the queue is
// deferring, pushes the weight-gradient computation here instead of running it. Work is grouped
// per backward call: everything pushed between two close_group() calls is one group, and groups
// run first-in-first-out (DualPipe's W queue).
// Running a task accumulates into the parameter's .grad exactly as autograd would have, so a
// step with deferred W is bit-identical to one without once the queue is drained.
// Thread-safety: push/close/run may come from different threads (the autograd engine runs GPU
// backward on its own threads); a mutex guards the groups; tasks run on the caller's thread.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

namespace tandem::model {

class WeightGradQueue {
 public:
  using Task = std::function<void()>;

  WeightGradQueue() = default;
  WeightGradQueue(const WeightGradQueue&) = delete;
  WeightGradQueue& operator=(const WeightGradQueue&) = delete;

  // While true, split layers queue their weight gradients; read at backward time, so the same
  // forward can be followed by a full (BW) or a split (B now, W later) backward.
  void set_deferring(bool deferring);
  bool deferring() const;

  // Appends to the open group (called from autograd backward).
  void push(Task task);
  // Seals the open group so later pushes start a new one; no-op when the open group is empty.
  void close_group();

  // Groups waiting to run (the open group counts when non-empty).
  size_t num_groups() const;
  size_t num_tasks() const;
  bool empty() const { return num_tasks() == 0; }

  // Runs the oldest group (sealing the open group first if it is the only one). Returns false
  // when there was nothing to run. A task that throws leaves the rest of its group dropped and
  // the exception propagates (the step is lost anyway).
  bool run_next_group();
  // Runs every group, oldest first.
  void run_all();
  // Drops every queued task without running it (a failed step: releases what the tasks hold).
  void discard_all();

 private:
  std::vector<Task> take_oldest_group();

  mutable std::mutex mutex_;
  bool deferring_ = false;
  std::deque<std::vector<Task>> sealed_;
  std::vector<Task> open_;
};

}  // namespace tandem::model
