// ZeRO memory formula (see zero_memory.h).
#include "parallel/zero_memory.h"

#include <algorithm>

namespace tandem::parallel {

ZeroMemoryBytes zero_memory_bytes(const ZeroParamCounts& counts, int64_t zero_stage, double weight_width,
                                  double master_width) {
  const double dp = static_cast<double>(std::max<int64_t>(counts.dp, 1));
  const double edp = static_cast<double>(std::max<int64_t>(counts.edp, 1));
  // Elements per rank when a buffer is sharded (or not) over each group.
  const double all = counts.dense + counts.experts;
  const double sharded = counts.dense / dp + counts.experts / edp;
  // ZeRO-3 keeps parameters outside decoder layers whole; a group of one shards nothing.
  const double layer_params = (counts.dense - counts.dense_persistent) / dp +
                              (counts.experts - counts.experts_persistent) / edp;
  const double params_zero3 = counts.dense_persistent + counts.experts_persistent + layer_params;
  ZeroMemoryBytes bytes;
  bytes.param_bytes = weight_width * (zero_stage >= 3 ? params_zero3 : all);
  bytes.grad_bytes = 4.0 * (zero_stage >= 2 ? sharded : all);
  bytes.optimizer_bytes = (8.0 + master_width) * (zero_stage >= 1 ? sharded : all);
  return bytes;
}

}  // namespace tandem::parallel
