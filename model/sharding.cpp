// The name-based sharding rule table (sharding.h).
#include "model/sharding.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <string_view>

#include "runtime/error.h"

namespace tandem::model {
namespace {

constexpr std::string_view kLayerPrefix = "model.layers.";

struct NameParts {
  int64_t layer = -1;       // -1: not a decoder layer / MTP parameter
  std::string_view suffix;  // after "model.layers.{i}." (the whole name otherwise)
};

NameParts split_name(std::string_view name) {
  if (!name.starts_with(kLayerPrefix)) return {.layer = -1, .suffix = name};
  std::string_view rest = name.substr(kLayerPrefix.size());
  const size_t dot = rest.find('.');
  int64_t layer = -1;
  std::from_chars(rest.data(), rest.data() + dot, layer);
  return {.layer = layer, .suffix = rest.substr(dot + 1)};
}

bool one_of(std::string_view s, std::initializer_list<std::string_view> options) {
  for (std::string_view o : options) {
    if (s == o) return true;
  }
  return false;
}

// -1 replicated, 0 or 1: the dimension split over tp.
int64_t tp_split_dim(const NameParts& n) {
  if (n.layer < 0) return one_of(n.suffix, {"model.embed_tokens.weight", "lm_head.weight"}) ? 0 : -1;
  if (one_of(n.suffix,
             {"self_attn.q_proj.weight", "self_attn.q_b_proj.weight", "self_attn.kv_b_proj.weight",
              "self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
              "mlp.shared_experts.gate_proj.weight", "mlp.shared_experts.up_proj.weight"})) {
    return 0;
  }
  if (one_of(n.suffix, {"self_attn.o_proj.weight", "mlp.down_proj.weight", "mlp.shared_experts.down_proj.weight"})) {
    return 1;
  }
  return -1;
}

bool partial_over_tp(const NameParts& n, const ModelConfig& config, bool sequence_parallel) {
  if (n.layer >= 0 && n.suffix == "mlp.gate.weight") return true;
  if (!sequence_parallel) return false;
  if (n.layer < 0) return n.suffix == "model.norm.weight";
  if (n.layer >= config.num_hidden_layers) return false;  // MTP: never sequence-parallel
  return one_of(n.suffix, {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_a_proj.weight",
                           "self_attn.q_a_layernorm.weight", "self_attn.kv_a_proj_with_mqa.weight",
                           "self_attn.kv_a_layernorm.weight"});
}

parallel::ParamSharding make(const std::string& name, std::vector<int64_t> global_shape, const ModelConfig& config,
                             const ParallelGroups& groups) {
  const NameParts parts = split_name(name);
  const int64_t tp = groups.tp_size();
  parallel::ParamSharding s;
  s.name = name;
  s.global_shape = std::move(global_shape);
  s.local_shape = s.global_shape;
  if (parts.suffix.starts_with("mlp.experts.")) {
    s.kind = parallel::ShardKind::kExpertParallel;
    return s;
  }
  const int64_t dim = tp_split_dim(parts);
  if (tp > 1 && dim >= 0) {
    TANDEM_CHECK_CONFIG(dim < static_cast<int64_t>(s.global_shape.size()) && s.global_shape[dim] % tp == 0,
                        "{}: dimension {} of size {} is not divisible by tp = {}", name, dim, s.global_shape[dim], tp);
    s.kind = parallel::ShardKind::kTensorParallel;
    s.split_dim = dim;
    s.num_shards = tp;
    s.local_shape[dim] /= tp;
    s.offset = groups.tp_rank() * s.local_shape[dim];
  }
  s.grad_partial_over_tp = tp > 1 && s.kind == parallel::ShardKind::kReplicated &&
                           partial_over_tp(parts, config, groups.sequence_parallel);
  return s;
}

}  // namespace

parallel::ParamSharding param_sharding(const std::string& name, const std::vector<int64_t>& global_shape,
                                       const ModelConfig& config, const ParallelGroups& groups) {
  return make(name, global_shape, config, groups);
}

parallel::ParamSharding param_sharding_from_local(const std::string& name, const std::vector<int64_t>& local_shape,
                                                  const ModelConfig& config, const ParallelGroups& groups) {
  std::vector<int64_t> global = local_shape;
  const int64_t dim = tp_split_dim(split_name(name));
  if (groups.tp_size() > 1 && dim >= 0 && dim < static_cast<int64_t>(global.size())) global[dim] *= groups.tp_size();
  parallel::ParamSharding s = make(name, global, config, groups);
  TANDEM_CHECK(s.local_shape == local_shape, "{}: the module holds [{}], the sharding rule expects [{}]", name,
               fmt::join(local_shape, ", "), fmt::join(s.local_shape, ", "));
  return s;
}

}  // namespace tandem::model
