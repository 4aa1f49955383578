// Cutting the model into pipeline stages by layer ranges, and which stages each pipeline rank
// holds under each schedule family (docs/dualpipe.md#placement).
#include "model/stage.h"

namespace tandem::model {

std::vector<StageSpec> partition_layers(const ModelConfig& config, int64_t num_stages) {
  TANDEM_CONFIG_REQUIRE(num_stages >= 1, "parallel.pp", "need at least one pipeline stage (got {})", num_stages);
  std::vector<int64_t> sizes;
  const int64_t n = config.num_hidden_layers;
  for (int64_t stage = 0; stage < num_stages; ++stage)
    sizes.push_back(n / num_stages + (stage < n % num_stages ? 1 : 0));
  return partition_layers(config, sizes);
}

std::vector<StageSpec> partition_layers(const ModelConfig& config, const std::vector<int64_t>& layers_per_stage) {
  TANDEM_CONFIG_REQUIRE(!layers_per_stage.empty(), "parallel.pp", "need at least one pipeline stage");
  int64_t total = 0;
  for (int64_t count : layers_per_stage) {
    TANDEM_CONFIG_REQUIRE(count >= 0, "parallel.pp", "a stage cannot hold {} layers", count);
    total += count;
  }
  TANDEM_CONFIG_REQUIRE(total == config.num_hidden_layers, "model.num_hidden_layers",
                        "stage sizes add up to {} layers, the model has {}", total, config.num_hidden_layers);
  std::vector<StageSpec> specs;
  int64_t begin = 0;
  const auto num_stages = static_cast<int64_t>(layers_per_stage.size());
  for (int64_t stage = 0; stage < num_stages; ++stage) {
    specs.push_back(
        {.index = stage, .num_stages = num_stages, .layer_begin = begin, .layer_end = begin + layers_per_stage[stage]});
    begin += layers_per_stage[stage];
  }
  return specs;
}

std::vector<std::vector<int64_t>> linear_stage_assignment(int64_t pp) {
  std::vector<std::vector<int64_t>> ranks;
  for (int64_t r = 0; r < pp; ++r) ranks.push_back({r});
  return ranks;
}

std::vector<std::vector<int64_t>> interleaved_stage_assignment(int64_t pp, int64_t virtual_stages) {
  std::vector<std::vector<int64_t>> ranks(pp);
  for (int64_t r = 0; r < pp; ++r) {
    for (int64_t chunk = 0; chunk < virtual_stages; ++chunk) ranks[r].push_back(chunk * pp + r);
  }
  return ranks;
}

std::vector<std::vector<int64_t>> dualpipe_stage_assignment(int64_t pp) {
  TANDEM_CONFIG_REQUIRE(pp >= 2 && pp % 2 == 0, "parallel.pp", "DualPipe needs an even pipeline degree (got {})", pp);
  std::vector<std::vector<int64_t>> ranks;
  for (int64_t r = 0; r < pp; ++r) ranks.push_back({r, pp - 1 - r});
  return ranks;
}

std::vector<std::vector<int64_t>> dualpipev_stage_assignment(int64_t pp) {
  TANDEM_CONFIG_REQUIRE(pp >= 1, "parallel.pp", "DualPipeV needs at least one pipeline rank (got {})", pp);
  std::vector<std::vector<int64_t>> ranks;
  for (int64_t r = 0; r < pp; ++r) ranks.push_back({r, 2 * pp - 1 - r});
  return ranks;
}

}  // namespace tandem::model
