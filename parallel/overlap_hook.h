// OverlapHook: the one place where code that has just started a communication hands control to an
// overlapping executor before it waits. The expert all-to-alls call it between start and wait, in
// forward and (through their autograd functions) in backward, and the MoE layer calls it at the
// same two places when there is no exchange at all (ep = 1), so the structure of an overlapped
// pair is the same whatever the layout. Code that is not overlapped passes a null hook.
// Contract for implementations: on_in_flight() may run arbitrary other work (another micro-batch's
// compute, its own collectives) before it returns; it must return on the calling thread, and it
// may throw (the caller's step is then lost). Collective ordering stays the caller's business: an
// implementation must interleave work the same way on every rank of a group.
#pragma once

#include <memory>

namespace tandem::parallel {

class OverlapHook {
 public:
  virtual ~OverlapHook() = default;
  // Called by a thread whose communication is in flight (or would be, see above), right before
  // it waits for it.
  virtual void on_in_flight() = 0;
};
using OverlapHookPtr = std::shared_ptr<OverlapHook>;

// Calls hook->on_in_flight() when there is a hook.
inline void yield_to_overlap(const OverlapHookPtr& hook) {
  if (hook) hook->on_in_flight();
}

}  // namespace tandem::parallel
