#include "launch/export/checkpoint_weights.h"

#include <torch/torch.h>

#include "runtime/checkpoint_tensors.h"
#include "runtime/error.h"

namespace tandem::launch {

using runtime::TensorKind;

void load_model_weights(const runtime::LoadedCheckpoint& checkpoint, model::Model& model) {
  const torch::NoGradGuard no_grad;
  runtime::CheckpointReader reader(checkpoint);
  auto read = [&](const std::string& name, TensorKind kind, const std::vector<int64_t>& shape) {
    const std::optional<std::vector<int64_t>> stored = reader.global_shape(name, kind);
    TANDEM_CHECK_INPUT(stored.has_value(), "checkpoint {} holds no tensor {}: it was written for another model",
                       checkpoint.dir, name);
    TANDEM_CHECK_INPUT(*stored == shape, "checkpoint {}: {} has shape [{}], the model's is [{}]", checkpoint.dir, name,
                       fmt::join(*stored, ", "), fmt::join(shape, ", "));
    return reader.read_global(name, kind);
  };
  for (auto& [param, sharding] : model.sharded_parameters()) {
    const bool master = reader.global_shape(sharding.name, TensorKind::kMaster).has_value();
    const at::Tensor full =
        read(sharding.name, master ? TensorKind::kMaster : TensorKind::kParam, sharding.global_shape);
    param.copy_(sharding.slice_of(full));
  }
  for (auto& [name, buffer] : model.named_buffers())
    buffer.copy_(read(name, TensorKind::kBuffer, buffer.sizes().vec()));
}

}  // namespace tandem::launch
