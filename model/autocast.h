// Mixed precision by autocast: while an AutocastScope is alive on this thread, matmul-like ops on
// `device_type` run in `dtype` (bf16) while parameters, optimizer state and gradients stay fp32
// (the master weights). Numerically sensitive ops (norms, softmax, cross-entropy, routing scores)
// already compute in fp32 inside the model, and autocast keeps its own fp32 list for the rest.
// Backward needs no scope: autograd replays the casts recorded in forward.
// Scopes nest; the cast-weight cache is cleared when the outermost one ends, so a weight updated
// by the optimizer is never served from a stale bf16 copy.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace tandem::model {

class AutocastScope {
 public:
  // `enabled` false makes the scope a no-op, so callers need no branches for fp32 runs.
  AutocastScope(c10::DeviceType device_type, c10::ScalarType dtype, bool enabled = true);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_type_;
  bool enabled_ = false;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_;
};

// The opposite, for work that must stay in fp32 inside an AutocastScope (the MoE router: its
// logits decide the expert choice, docs/model.md#moe-routing): autocast is off on `device_type` while alive,
// then back as it was. The cast cache is left alone (the enclosing scope owns it).
class AutocastOffScope {
 public:
  explicit AutocastOffScope(c10::DeviceType device_type);
  ~AutocastOffScope();
  AutocastOffScope(const AutocastOffScope&) = delete;
  AutocastOffScope& operator=(const AutocastOffScope&) = delete;

 private:
  c10::DeviceType device_type_;
  bool previous_enabled_ = false;
};

}  // namespace tandem::model
