// Activation recomputation (train.recompute): which activations a layer keeps for backward and
// which it recomputes there, trading compute for memory (docs/model.md#activation-recomputation).
//  none       every layer keeps what its backward reads.
//  selective  DeepSeek-V3's choice: each layer keeps its input and the attention core's q, k, v;
//             the input RMSNorm and the attention projections in front of the core (MLA's down-
//             and up-projections and latent norms, GQA's q/k/v projections, rotary) are run again
//             in backward, so their outputs are never stored.
//  full       a layer keeps only its input and runs its whole forward again in backward (one
//             extra forward per layer); `layers` > 0 limits that to the first `layers` decoder
//             layers of each pipeline stage (the rest keep everything), 0 means all of them.
// Gradients are bit-identical to no recomputation: the recomputed forward runs the same
// kernels on the same inputs. Side effects of a forward (expert load counts, the logged balance
// loss) happen once, in the first forward.
#pragma once

#include <cstdint>

#include "runtime/config_schema.h"

namespace tandem::model {

enum class RecomputeMode { kNone, kSelective, kFull };
inline constexpr config::EnumNames<RecomputeMode, 3> kRecomputeModeNames{
    {{RecomputeMode::kNone, "none"}, {RecomputeMode::kSelective, "selective"}, {RecomputeMode::kFull, "full"}}};
constexpr const auto& config_enum_names(RecomputeMode) { return kRecomputeModeNames; }

struct RecomputePolicy {
  RecomputeMode mode = RecomputeMode::kNone;
  int64_t layers = 0;  // kFull: the first `layers` decoder layers of each stage; 0 = all

  // Whether the decoder layer at `position` within its stage (0 = the stage's first layer) runs
  // its whole forward again in backward.
  bool recomputes_whole_layer(int64_t position) const {
    return mode == RecomputeMode::kFull && (layers == 0 || position < layers);
  }
  bool selective() const { return mode == RecomputeMode::kSelective; }
};

}  // namespace tandem::model
