// Hugging Face export (see hf_export.h): plan every output tensor from the manifest, lay them
// out over shard files, then stream them one global tensor at a time (peak memory is one tensor,
// not the model), and finally the index and config.json.
#include "launch/export/hf_export.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>

#include "launch/config/config_loader.h"
#include "launch/export/checkpoint_inspect.h"
#include "launch/export/safetensors.h"
#include "model/model.h"
#include "runtime/checkpoint_tensors.h"
#include "runtime/data/byte_tokenizer.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"

namespace tandem::launch {
namespace {

using runtime::TensorKind;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kConfigFile = "config.json";

bool is_llama(const model::ModelConfig& c) { return c.uses_gqa(); }

bool has_moe(const model::ModelConfig& c) {
  return c.n_routed_experts > 0 && c.first_k_dense_replace < c.num_hidden_layers;
}

// config.json values: doubles are JSON floats, which nlohmann writes with a decimal point ("1.0",
// not "1"): transformers' configs validate field types strictly, and 1 is an integer to JSON
// readers. Keys keep the order they are set in (ordered_json).
nlohmann::ordered_json rope_scaling_json(const model::ModelConfig& c) {
  const model::RopeScalingConfig& y = c.rope_scaling;
  if (!c.uses_yarn()) return nullptr;
  nlohmann::ordered_json o;
  o["type"] = "yarn";
  o["rope_type"] = "yarn";
  o["factor"] = y.factor;
  o["original_max_position_embeddings"] = y.original_max_position_embeddings;
  o["beta_fast"] = y.beta_fast;
  o["beta_slow"] = y.beta_slow;
  o["mscale"] = y.mscale;
  o["mscale_all_dim"] = y.mscale_all_dim;
  return o;
}

// "model.layers.10.x" after "model.layers.9.x": digit runs compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i_end = i, j_end = j;
      while (i_end < a.size() && std::isdigit(static_cast<unsigned char>(a[i_end]))) ++i_end;
      while (j_end < b.size() && std::isdigit(static_cast<unsigned char>(b[j_end]))) ++j_end;
      const std::string_view da(a.data() + i, i_end - i), db(b.data() + j, j_end - j);
      if (da.size() != db.size()) return da.size() < db.size();  // no leading zeros in our names
      if (da != db) return da < db;
      i = i_end;
      j = j_end;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

// One tensor of the export: where it comes from and how it is transformed.
struct PlannedTensor {
  std::string name;    // Hugging Face name
  std::string source;  // global name in the checkpoint
  TensorKind kind = TensorKind::kParam;
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::kFloat;
  int64_t rope_heads = 0;  // > 0: permute rows per head from adjacent-pair to half rotary layout
  int64_t size_bytes() const {
    int64_t n = at::elementSize(dtype);
    for (int64_t d : shape) n *= d;
    return n;
  }
};

std::string safetensors_dtype(at::ScalarType type) { return type == at::kBFloat16 ? "BF16" : "F32"; }

std::vector<PlannedTensor> plan_tensors(const runtime::CheckpointManifest& manifest, const model::ModelConfig& c,
                                        at::ScalarType dtype) {
  // Global tensors present, with the kind to read: fp32 master weights when the run kept them.
  std::map<std::string, std::pair<TensorKind, std::vector<int64_t>>> sources;
  std::set<std::string> masters;
  for (const runtime::RankRecord& record : manifest.ranks) {
    for (const runtime::TensorEntry& entry : record.tensors) {
      if (entry.kind == TensorKind::kMaster) masters.insert(entry.name);
      if (entry.kind == TensorKind::kParam || entry.kind == TensorKind::kBuffer) {
        sources.emplace(entry.name, std::make_pair(entry.kind, entry.global_shape));
      }
    }
  }
  TANDEM_CHECK_INPUT(!sources.empty(), "the checkpoint holds no parameters");
  const int64_t head_dim = c.gqa_head_dim();
  std::vector<PlannedTensor> plan;
  for (const auto& [name, source] : sources) {
    PlannedTensor t;
    t.name = name;
    t.source = name;
    t.shape = source.second;
    t.kind = source.first == TensorKind::kParam && masters.count(name) ? TensorKind::kMaster : source.first;
    // The routing bias shifts which experts win by small steps: rounding it to bf16 would change choices.
    t.dtype = source.first == TensorKind::kBuffer ? at::kFloat : dtype;
    const bool q = name.ends_with(".self_attn.q_proj.weight"), k = name.ends_with(".self_attn.k_proj.weight");
    if (is_llama(c) && (q || k)) {
      t.rope_heads = q ? c.num_attention_heads : c.num_key_value_heads;
      TANDEM_CHECK_INPUT(t.shape.size() == 2 && t.shape[0] == t.rope_heads * head_dim && head_dim % 2 == 0,
                         "'{}' has shape [{}], not [{} heads x {}, hidden]", name, fmt::join(t.shape, ", "),
                         t.rope_heads, head_dim);
    }
    plan.push_back(std::move(t));
  }
  // DeepSeek's checkpoints give each MTP layer its own copies of the shared embedding and head.
  const std::string head_source = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const std::vector<std::pair<std::string, std::string>> copies = {{"embed_tokens.weight", "model.embed_tokens.weight"},
                                                                   {"shared_head.head.weight", head_source}};
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    for (const auto& [suffix, source_name] : copies) {
      const auto it = sources.find(source_name);
      TANDEM_CHECK_INPUT(it != sources.end(), "the checkpoint lacks {}, which MTP layer {} shares", source_name,
                         c.num_hidden_layers + k);
      PlannedTensor t;
      t.name = fmt::format("model.layers.{}.{}", c.num_hidden_layers + k, suffix);
      t.source = source_name;
      t.shape = it->second.second;
      t.kind = masters.count(source_name) ? TensorKind::kMaster : TensorKind::kParam;
      t.dtype = dtype;
      plan.push_back(std::move(t));
    }
  }
  std::sort(plan.begin(), plan.end(),
            [](const PlannedTensor& a, const PlannedTensor& b) { return natural_less(a.name, b.name); });
  return plan;
}

// Consecutive runs of the plan, each at most `limit` bytes (a larger tensor gets a file alone).
std::vector<std::vector<size_t>> split_into_shards(const std::vector<PlannedTensor>& plan, int64_t limit) {
  std::vector<std::vector<size_t>> shards(1);
  int64_t current = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const int64_t size = plan[i].size_bytes();
    if (!shards.back().empty() && current + size > limit) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += size;
  }
  return shards;
}

// Adjacent-pair rotary rows [h, d/2, 2] of each head -> half layout [h, 2, d/2].
at::Tensor rope_pairs_to_halves(const at::Tensor& weight, int64_t heads) {
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const int64_t head_dim = rows / heads;
  return weight.view({heads, head_dim / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

at::Tensor load_planned(runtime::CheckpointReader& reader, const PlannedTensor& t) {
  at::Tensor value = reader.read_global(t.source, t.kind);  // [global shape]
  TANDEM_CHECK_INPUT(value.sizes().vec() == t.shape, "'{}' reads back with shape [{}], the manifest says [{}]",
                     t.source, fmt::join(value.sizes(), ", "), fmt::join(t.shape, ", "));
  if (t.rope_heads > 0) value = rope_pairs_to_halves(value, t.rope_heads);
  return value.to(t.dtype).contiguous();
}

void prepare_out_dir(const std::string& out_dir, bool overwrite) {
  runtime::make_directories(out_dir);
  std::vector<std::string> earlier;
  for (const std::string& name : runtime::list_directory(out_dir)) {
    if (name == kConfigFile || name == kIndexFile || (name.starts_with("model") && name.ends_with(".safetensors"))) {
      earlier.push_back(name);
    }
  }
  if (earlier.empty()) return;
  TANDEM_CHECK_INPUT(overwrite, "{} already holds an export ({}); pass --overwrite to replace it", out_dir,
                     fmt::join(earlier, ", "));
  for (const std::string& name : earlier) {
    const std::string problem = runtime::remove_tree(out_dir + "/" + name);
    TANDEM_CHECK_KIND(kIo, problem.empty(), "cannot remove {}/{}: {}", out_dir, name, problem);
  }
}

// tandem's own logits for fixed tokens, so a Hugging Face load can be compared with them.
void write_reference_logits(runtime::CheckpointReader& reader, const JobConfig& config, const std::string& path,
                            const std::map<std::string, std::string>& metadata) {
  torch::autograd::AutoGradMode no_grad(false);
  model::Model model(config.model, static_cast<uint64_t>(config.run.seed));
  auto restore = [&](const std::string& name, at::Tensor target) {
    const bool master = !reader.manifest().find(name, TensorKind::kMaster).empty();
    target.copy_(reader.read_global(name, master ? TensorKind::kMaster : TensorKind::kParam));
  };
  for (auto& [name, param] : model.named_parameters()) restore(name, param);
  for (auto& [name, buffer] : model.named_buffers()) buffer.copy_(reader.read_global(name, TensorKind::kBuffer));
  model.train(false);
  const int64_t batch = 2, length = std::min<int64_t>(32, config.model.max_position_embeddings);
  std::vector<int64_t> ids(static_cast<size_t>(batch * length));
  uint64_t state = 0x9e3779b97f4a7c15ull;  // a fixed LCG: the same tokens on every machine
  for (int64_t& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int64_t>((state >> 33) % static_cast<uint64_t>(config.model.vocab_size));
  }
  const at::Tensor tokens = at::tensor(ids, at::kLong).view({batch, length});          // [B, T]
  const at::Tensor logits = model.forward_logits(tokens).to(at::kFloat).contiguous();  // [B, T, V]
  SafetensorsWriter writer(path, {{"input_ids", "I64", {batch, length}}, {"logits", "F32", logits.sizes().vec()}},
                           metadata);
  writer.write("input_ids", tokens.data_ptr(), tokens.numel() * 8);
  writer.write("logits", logits.data_ptr(), logits.numel() * 4);
  writer.finish();
}

// The DeepseekV3 fields: MLA attention and the MoE router. A dense MLA model is a DeepseekV3
// whose layers are all below first_k_dense_replace.
void add_deepseek_fields(nlohmann::ordered_json& o, const model::ModelConfig& c) {
  o["moe_intermediate_size"] = c.moe_intermediate_size;
  o["q_lora_rank"] = c.q_lora_rank ? nlohmann::ordered_json(*c.q_lora_rank) : nlohmann::ordered_json(nullptr);
  o["kv_lora_rank"] = c.kv_lora_rank;
  o["qk_nope_head_dim"] = c.qk_nope_head_dim;
  o["qk_rope_head_dim"] = c.qk_rope_head_dim;
  o["v_head_dim"] = c.v_head_dim;
  o["n_routed_experts"] = has_moe(c) ? c.n_routed_experts : 0;
  o["n_shared_experts"] = c.n_shared_experts;
  o["num_experts_per_tok"] = c.num_experts_per_tok;
  o["n_group"] = c.n_group;
  o["topk_group"] = c.topk_group;
  o["routed_scaling_factor"] = c.routed_scaling_factor;
  o["norm_topk_prob"] = c.norm_topk_prob;
  o["scoring_func"] = config::enum_name(c.scoring_func);
  o["topk_method"] = "noaux_tc";
  o["first_k_dense_replace"] = has_moe(c) ? c.first_k_dense_replace : c.num_hidden_layers;
  o["moe_layer_freq"] = 1;
  o["aux_loss_alpha"] = c.aux_loss_alpha;
  o["seq_aux"] = true;
  o["rope_interleave"] = true;
}

}  // namespace

std::string hf_architecture(const model::ModelConfig& c) {
  if (!is_llama(c)) return "DeepseekV3ForCausalLM";
  TANDEM_CHECK_INPUT(!has_moe(c),
                     "this model has gqa attention with MoE layers; Hugging Face has no architecture with that "
                     "combination and DeepSeek-V3's router (export supports mla models as DeepseekV3ForCausalLM and "
                     "dense gqa models as LlamaForCausalLM)");
  return "LlamaForCausalLM";
}

std::string hf_config_json(const model::ModelConfig& c, const std::string& torch_dtype) {
  const std::string architecture = hf_architecture(c);
  const bool llama = architecture == "LlamaForCausalLM";
  nlohmann::ordered_json o;
  o["architectures"] = nlohmann::ordered_json::array({architecture});
  o["model_type"] = llama ? "llama" : "deepseek_v3";
  o["vocab_size"] = c.vocab_size;
  o["hidden_size"] = c.hidden_size;
  o["intermediate_size"] = c.intermediate_size;
  o["num_hidden_layers"] = c.num_hidden_layers;
  o["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  o["num_attention_heads"] = c.num_attention_heads;
  o["num_key_value_heads"] = llama ? c.num_key_value_heads : c.num_attention_heads;
  o["hidden_act"] = "silu";
  o["attention_bias"] = false;
  if (llama) {
    o["head_dim"] = c.gqa_head_dim();
    o["mlp_bias"] = false;
  } else {
    add_deepseek_fields(o, c);
  }
  o["max_position_embeddings"] = c.max_position_embeddings;
  o["rms_norm_eps"] = c.rms_norm_eps;
  o["rope_theta"] = c.rope_theta;
  o["rope_scaling"] = rope_scaling_json(c);
  o["attention_dropout"] = 0.0;
  o["initializer_range"] = c.initializer_range;
  o["tie_word_embeddings"] = c.tie_word_embeddings;
  o["use_cache"] = true;
  // The byte tokenizer's special tokens, when the vocabulary has room for them.
  using runtime::ByteTokenizer;
  if (c.vocab_size >= ByteTokenizer::kVocabSize) {
    o["bos_token_id"] = ByteTokenizer::kBos;
    o["eos_token_id"] = ByteTokenizer::kEod;
    o["pad_token_id"] = ByteTokenizer::kPad;
  }
  o["torch_dtype"] = torch_dtype;
  return json::dump(o, 2) + "\n";  // as transformers writes it (json.dumps, indent 2)
}

ExportResult export_hugging_face(const std::string& checkpoint_path, const std::string& out_dir,
                                 const ExportOptions& options) {
  TANDEM_CHECK_CONFIG(options.dtype == "bf16" || options.dtype == "fp32", "--dtype: '{}' is not bf16 or fp32",
                      options.dtype);
  TANDEM_CHECK_CONFIG(options.max_shard_bytes > 0, "--max-shard-size must be positive");
  ExportResult result;
  result.checkpoint_dir = resolve_checkpoint_dir(checkpoint_path);
  runtime::VerifyResult verified = runtime::verify_checkpoint(result.checkpoint_dir, /*verify_checksums=*/true);
  TANDEM_CHECK_INPUT(verified.manifest.has_value(), "{} is not a valid checkpoint: {}", result.checkpoint_dir,
                     verified.problem);
  const runtime::CheckpointManifest& manifest = *verified.manifest;
  result.step = manifest.step;
  const JobConfig config = job_config_from_manifest(manifest, result.checkpoint_dir + "/manifest.pb");
  const model::ModelConfig& c = config.model;
  result.architecture = hf_architecture(c);
  if (c.scoring_func != model::ScoringFunc::kSigmoid && has_moe(c)) {
    result.warnings.push_back("scoring_func is softmax: Hugging Face's DeepseekV3 router always uses sigmoid, so its "
                              "outputs will differ from tandem's");
  }
  if (is_llama(c) && c.uses_yarn()) {
    result.warnings.push_back("YaRN with gqa attention: Llama applies no mscale_all_dim to the softmax scale, so long-"
                              "context outputs may differ from tandem's");
  }
  const at::ScalarType dtype = options.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::vector<PlannedTensor> plan = plan_tensors(manifest, c, dtype);
  const std::vector<std::vector<size_t>> shards = split_into_shards(plan, options.max_shard_bytes);

  prepare_out_dir(out_dir, options.overwrite);
  runtime::CheckpointReader reader(runtime::LoadedCheckpoint{result.checkpoint_dir, manifest.step, manifest});
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"tandem_step", std::to_string(manifest.step)}, {"tandem_created_by", manifest.created_by}};
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file =
        shards.size() == 1 ? kSingleFile : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    std::vector<SafetensorsTensor> header;
    for (size_t i : shards[s]) header.push_back({plan[i].name, safetensors_dtype(plan[i].dtype), plan[i].shape});
    SafetensorsWriter writer(out_dir + "/" + file, std::move(header), metadata);
    for (size_t i : shards[s]) {
      const at::Tensor value = load_planned(reader, plan[i]);
      writer.write(plan[i].name, value.data_ptr(), value.numel() * value.element_size());
      weight_map[plan[i].name] = file;
      result.total_bytes += plan[i].size_bytes();
    }
    writer.finish();
    result.files.push_back(file);
  }
  result.num_tensors = static_cast<int64_t>(plan.size());
  if (shards.size() > 1) {
    runtime::write_file_durable(out_dir + "/" + kIndexFile, safetensors_index_json(result.total_bytes, weight_map));
    result.files.push_back(kIndexFile);
  }
  runtime::write_file_durable(out_dir + "/" + kConfigFile,
                              hf_config_json(c, options.dtype == "bf16" ? "bfloat16" : "float32"));
  result.files.push_back(kConfigFile);
  runtime::fsync_directory(out_dir);
  if (!options.reference_logits_path.empty()) {
    write_reference_logits(reader, config, options.reference_logits_path, metadata);
  }
  return result;
}

}  // namespace tandem::launch
