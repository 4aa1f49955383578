#include "launch/train/checkpoint_weights.h"

#include <torch/torch.h>

#include "runtime/checkpoint_tensors.h"
#include "runtime/error.h"
#include "runtime/file_util.h"

namespace tandem::launch {

using runtime::TensorKind;

runtime::LoadedCheckpoint load_weights_checkpoint(const std::string& path, const std::string& key) {
  TANDEM_CHECK_INPUT(runtime::is_directory(path), "{}: {} is not a directory (a checkpoint step directory or root)",
                     key, path);
  if (runtime::path_exists(path + "/manifest.pb")) {
    const runtime::VerifyResult verified = runtime::verify_checkpoint(path, /*verify_checksums=*/true);
    TANDEM_CHECK_INPUT(verified.manifest.has_value(), "{}: {} is not a valid checkpoint: {}", key, path,
                       verified.problem);
    return {path, verified.manifest->step, *verified.manifest};
  }
  std::optional<runtime::LoadedCheckpoint> latest = runtime::find_latest_valid(path);
  TANDEM_CHECK_INPUT(latest.has_value(), "{}: {} holds no valid checkpoint (no intact step_XXXXXXXX directory)", key,
                     path);
  return std::move(*latest);
}

void load_weights(const runtime::LoadedCheckpoint& checkpoint, const std::vector<parallel::ShardedParam>& params,
                  const std::vector<std::pair<std::string, at::Tensor>>& buffers) {
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
  for (const auto& [param, sharding] : params) {
    const bool master = reader.global_shape(sharding.name, TensorKind::kMaster).has_value();
    const at::Tensor full =
        read(sharding.name, master ? TensorKind::kMaster : TensorKind::kParam, sharding.global_shape);
    param.copy_(sharding.slice_of(full));
  }
  for (const auto& [name, buffer] : buffers) buffer.copy_(read(name, TensorKind::kBuffer, buffer.sizes().vec()));
}

}  // namespace tandem::launch
