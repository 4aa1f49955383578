// Per-rank bytes of parameters, gradients and AdamW state under ZeRO stage 0-3: the formula that
// check-config prints (launch/plan/memory_estimate.cpp) and that the data-parallel optimizer's measured
// buffers follow (tests/mpi/data_parallel_mpi_test.cpp checks one against the other).
//  params    = w * P, or at ZeRO-3 w * (P_persistent + (P - P_persistent) / N) (decoder layers are
//              gathered one at a time, plus one prefetched: transient, not counted here)
//  grads     = 4 * P (fp32), / N from ZeRO-2 on
//  optimizer = (8 + master) * P (Adam m and v, + an fp32 master copy under mixed precision),
//              / N from ZeRO-1 on
// per replication group: dense weights over N = dp, routed experts over N = expert-dp. Weights
// whose gradient is partial over tp are sharded over dp*tp by the optimizer (a few norms and the
// router): the formula counts them over dp, a slight overestimate. Bucket padding (< N elements
// per bucket) is not counted.
#pragma once

#include <cstdint>

namespace tandem::parallel {

struct ZeroParamCounts {
  double dense = 0;               // this rank's dense parameters (after tp splits)
  double dense_persistent = 0;    // of which outside decoder layers (ZeRO-3 keeps them gathered)
  double experts = 0;             // this rank's routed-expert parameters (after the ep split)
  double experts_persistent = 0;  // of which outside decoder layers (none in DeepSeek-V3 models)
  int64_t dp = 1;                 // dense replication group size
  int64_t edp = 1;                // expert-data-parallel group size
};

struct ZeroMemoryBytes {
  double param_bytes = 0;
  double grad_bytes = 0;
  double optimizer_bytes = 0;
  double total() const { return param_bytes + grad_bytes + optimizer_bytes; }
};

// `weight_width`: bytes per compute weight (4 fp32, 2 bf16); `master_width`: bytes of the fp32
// master copy kept beside bf16 weights (0 in fp32, where the weights are the master).
ZeroMemoryBytes zero_memory_bytes(const ZeroParamCounts& counts, int64_t zero_stage, double weight_width = 4.0,
                                  double master_width = 0.0);

}  // namespace tandem::parallel
