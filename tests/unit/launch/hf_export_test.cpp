// Hugging Face export of real tiny models: every tensor of the checkpoint comes back bit for bit
// (fp32) or as its bf16 rounding, under its Hugging Face name, from whole or sharded checkpoints;
// MTP layers follow the last layer with their shared embedding/head copies; config.json carries
// the model config; files shard with an index above the size limit; Llama exports permute q/k
// rows to Llama's rotary layout; bad inputs are refused with the reason.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "export_test_util.h"
#include "launch/export/hf_export.h"
#include "launch/export/safetensors.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime_test_util.h"

namespace tandem::launch {
namespace {

using runtime::testing::TempDir;
using testing::save_model_checkpoint;
using testing::SavedCheckpoint;
using testing::tiny_job;

// Every tensor of an export folder (single file or shards + index), as CPU tensors.
std::map<std::string, at::Tensor> read_export(const std::string& dir, std::vector<std::string>* files = nullptr) {
  std::vector<std::string> names;
  for (const std::string& name : runtime::list_directory(dir)) {
    if (name.ends_with(".safetensors")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  if (files != nullptr) *files = names;
  std::map<std::string, at::Tensor> out;
  for (const std::string& name : names) {
    const SafetensorsFile file = SafetensorsFile::open(dir + "/" + name);
    for (const SafetensorsTensor& t : file.tensors()) {
      const at::ScalarType type = t.dtype == "BF16" ? at::kBFloat16 : t.dtype == "F32" ? at::kFloat : at::kLong;
      at::Tensor value = at::empty(t.shape, type);
      std::memcpy(value.data_ptr(), file.data(t), static_cast<size_t>(t.size_bytes()));
      EXPECT_TRUE(out.emplace(t.name, value).second) << t.name << " in two files";
    }
  }
  return out;
}

nlohmann::json read_json(const std::string& path) { return json::parse(runtime::read_file(path)); }

double number(const nlohmann::json& object, const char* key) {
  const auto value = object.find(key);
  EXPECT_NE(value, object.end()) << key;
  return value != object.end() && value->is_number() ? value->get<double>() : -1.0;
}

TEST(HfExport, DeepseekFp32RoundTripsEveryTensor) {
  TempDir dir;
  const SavedCheckpoint saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 1);
  ExportOptions options;
  options.dtype = "fp32";
  const ExportResult result = export_hugging_face(dir / "ckpt", dir / "hf", options);  // the root: follows latest
  EXPECT_EQ(result.architecture, "DeepseekV3ForCausalLM");
  EXPECT_EQ(result.step, 10);
  EXPECT_EQ(result.files, (std::vector<std::string>{"model.safetensors", "config.json"}));

  const std::map<std::string, at::Tensor> exported = read_export(dir / "hf");
  const int64_t n = saved.config.model.num_hidden_layers;  // MTP module = layer n
  std::set<std::string> expected;
  for (const auto& [name, value] : saved.params) {
    expected.insert(name);
    ASSERT_TRUE(exported.count(name)) << name;
    EXPECT_TRUE(at::equal(exported.at(name), value)) << name;
  }
  for (const auto& [name, value] : saved.buffers) {
    expected.insert(name);
    EXPECT_TRUE(at::equal(exported.at(name), value)) << name;
  }
  const std::string mtp = fmt::format("model.layers.{}.", n);
  EXPECT_TRUE(saved.params.count(mtp + "eh_proj.weight"));
  EXPECT_TRUE(saved.params.count(mtp + "enorm.weight"));
  EXPECT_TRUE(saved.params.count(mtp + "shared_head.norm.weight"));
  EXPECT_TRUE(saved.params.count(mtp + "mlp.gate.weight"));  // the MTP block is an MoE layer
  EXPECT_TRUE(at::equal(exported.at(mtp + "embed_tokens.weight"), saved.params.at("model.embed_tokens.weight")));
  EXPECT_TRUE(at::equal(exported.at(mtp + "shared_head.head.weight"), saved.params.at("lm_head.weight")));
  expected.insert(mtp + "embed_tokens.weight");
  expected.insert(mtp + "shared_head.head.weight");
  EXPECT_EQ(exported.size(), expected.size());
  EXPECT_EQ(result.num_tensors, static_cast<int64_t>(expected.size()));
  EXPECT_FALSE(exported.count("model.layers.0.mlp.gate.weight")) << "layer 0 is dense (first_k_dense_replace 1)";
  EXPECT_TRUE(exported.count("model.layers.1.mlp.experts.7.down_proj.weight"));
  EXPECT_TRUE(exported.count("model.layers.1.mlp.shared_experts.up_proj.weight"));

  const nlohmann::json config = read_json(dir / "hf/config.json");
  const model::ModelConfig& m = saved.config.model;
  EXPECT_EQ(config.at("architectures").at(0), "DeepseekV3ForCausalLM");
  EXPECT_EQ(config.at("model_type"), "deepseek_v3");
  EXPECT_EQ(number(config, "hidden_size"), m.hidden_size);
  EXPECT_EQ(number(config, "num_hidden_layers"), m.num_hidden_layers);
  EXPECT_EQ(number(config, "num_nextn_predict_layers"), m.num_nextn_predict_layers);
  EXPECT_EQ(number(config, "vocab_size"), m.vocab_size);
  EXPECT_EQ(number(config, "intermediate_size"), m.intermediate_size);
  EXPECT_EQ(number(config, "moe_intermediate_size"), m.moe_intermediate_size);
  EXPECT_EQ(number(config, "n_routed_experts"), m.n_routed_experts);
  EXPECT_EQ(number(config, "n_shared_experts"), m.n_shared_experts);
  EXPECT_EQ(number(config, "num_experts_per_tok"), m.num_experts_per_tok);
  EXPECT_EQ(number(config, "n_group"), m.n_group);
  EXPECT_EQ(number(config, "topk_group"), m.topk_group);
  EXPECT_EQ(number(config, "first_k_dense_replace"), m.first_k_dense_replace);
  EXPECT_EQ(number(config, "kv_lora_rank"), m.kv_lora_rank);
  EXPECT_EQ(number(config, "qk_nope_head_dim"), m.qk_nope_head_dim);
  EXPECT_EQ(number(config, "qk_rope_head_dim"), m.qk_rope_head_dim);
  EXPECT_EQ(number(config, "v_head_dim"), m.v_head_dim);
  EXPECT_EQ(number(config, "num_attention_heads"), m.num_attention_heads);
  EXPECT_EQ(number(config, "rms_norm_eps"), m.rms_norm_eps);
  EXPECT_EQ(number(config, "rope_theta"), m.rope_theta);
  EXPECT_EQ(number(config, "routed_scaling_factor"), m.routed_scaling_factor);
  EXPECT_EQ(number(config, "max_position_embeddings"), m.max_position_embeddings);
  EXPECT_TRUE(config.at("q_lora_rank").is_null());  // tiny_moe has a direct q_proj
  EXPECT_TRUE(config.at("rope_interleave").get<bool>());
  EXPECT_FALSE(config.at("tie_word_embeddings").get<bool>());
  EXPECT_TRUE(config.at("rope_scaling").is_null());
  EXPECT_EQ(config.at("torch_dtype"), "float32");
}

TEST(HfExport, Bf16RoundsWeightsAndKeepsTheRouterBiasFp32) {
  TempDir dir;
  const SavedCheckpoint saved = save_model_checkpoint(dir / "ckpt", tiny_job({"model.q_lora_rank=16"}), 1);
  export_hugging_face(saved.dir, dir / "hf", {});  // default bf16
  const std::map<std::string, at::Tensor> exported = read_export(dir / "hf");
  for (const auto& [name, value] : saved.params) {
    ASSERT_EQ(exported.at(name).scalar_type(), at::kBFloat16) << name;
    EXPECT_TRUE(at::equal(exported.at(name), value.to(at::kBFloat16))) << name;
  }
  EXPECT_TRUE(exported.count("model.layers.0.self_attn.q_a_proj.weight"));
  EXPECT_TRUE(exported.count("model.layers.0.self_attn.q_a_layernorm.weight"));
  for (const auto& [name, value] : saved.buffers) {
    EXPECT_EQ(exported.at(name).scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(at::equal(exported.at(name), value)) << name;
  }
  const nlohmann::json config = read_json(dir / "hf/config.json");
  EXPECT_EQ(number(config, "q_lora_rank"), 16);
  EXPECT_EQ(config.at("torch_dtype"), "bfloat16");
}

TEST(HfExport, ShardedCheckpointExportsTheSameTensors) {
  TempDir dir;
  const SavedCheckpoint whole = save_model_checkpoint(dir / "one", tiny_job(), 1);
  const SavedCheckpoint halves = save_model_checkpoint(dir / "two", tiny_job(), 2);
  ExportOptions options;
  options.dtype = "fp32";
  export_hugging_face(whole.dir, dir / "hf1", options);
  export_hugging_face(halves.dir, dir / "hf2", options);
  const auto a = read_export(dir / "hf1");
  const auto b = read_export(dir / "hf2");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, value] : a) EXPECT_TRUE(at::equal(value, b.at(name))) << name;
  // Byte-identical model files: the export does not depend on the layout that wrote the checkpoint.
  EXPECT_EQ(runtime::read_file(dir / "hf1/model.safetensors"), runtime::read_file(dir / "hf2/model.safetensors"));
}

TEST(HfExport, ShardsWithAnIndexAboveTheLimit) {
  TempDir dir;
  const SavedCheckpoint saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 1);
  ExportOptions options;
  options.dtype = "fp32";
  options.max_shard_bytes = 60'000;  // the tiny model is ~0.4 MB in fp32
  const ExportResult result = export_hugging_face(saved.dir, dir / "hf", options);
  std::vector<std::string> files;
  const auto exported = read_export(dir / "hf", &files);
  ASSERT_GE(files.size(), 3u);
  EXPECT_EQ(files.front(), fmt::format("model-00001-of-{:05d}.safetensors", files.size()));
  EXPECT_EQ(files.back(), fmt::format("model-{:05d}-of-{:05d}.safetensors", files.size(), files.size()));
  for (const std::string& file : files) {
    const SafetensorsFile shard = SafetensorsFile::open(dir / "hf/" + file);
    const int64_t data = shard.tensors().back().end;
    // Over the limit only when a single tensor is larger than the limit by itself.
    EXPECT_TRUE(data <= options.max_shard_bytes || shard.tensors().size() == 1) << file << ": " << data;
  }
  const nlohmann::json index = read_json(dir / "hf/model.safetensors.index.json");
  EXPECT_EQ(number(index.at("metadata"), "total_size"), static_cast<double>(result.total_bytes));
  const nlohmann::json& map = index.at("weight_map");
  EXPECT_EQ(map.size(), exported.size());
  int64_t total = 0;
  for (const auto& [name, file] : map.items()) {
    const SafetensorsFile shard = SafetensorsFile::open(dir / "hf/" + file.get<std::string>());
    const SafetensorsTensor* t = shard.find(name);
    ASSERT_NE(t, nullptr) << name << " not in " << file;
    total += t->size_bytes();
  }
  EXPECT_EQ(total, result.total_bytes);
  for (const auto& [name, value] : saved.params) EXPECT_TRUE(at::equal(exported.at(name), value)) << name;
}

TEST(HfExport, LlamaExportPermutesQueryAndKeyRowsToHalfRotary) {
  TempDir dir;
  const SavedCheckpoint saved = save_model_checkpoint(
      dir / "ckpt",
      tiny_job({"model.attention_type=gqa", "model.num_attention_heads=4", "model.num_key_value_heads=2",
                "model.n_routed_experts=0", "model.num_nextn_predict_layers=0"}),
      1);
  ExportOptions options;
  options.dtype = "fp32";
  const ExportResult result = export_hugging_face(saved.dir, dir / "hf", options);
  EXPECT_EQ(result.architecture, "LlamaForCausalLM");
  const auto exported = read_export(dir / "hf");
  EXPECT_EQ(exported.size(), saved.params.size());
  const int64_t head_dim = 8;  // hidden 32 / 4 heads
  for (const auto& [name, value] : saved.params) {
    const at::Tensor& out = exported.at(name);
    const bool q = name.ends_with("q_proj.weight"), k = name.ends_with("k_proj.weight");
    if (!q && !k) {
      EXPECT_TRUE(at::equal(out, value)) << name;
      continue;
    }
    const int64_t heads = q ? 4 : 2;
    ASSERT_EQ(out.size(0), heads * head_dim);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < head_dim; ++i) {
        // Half layout row i holds the pair element (i < d/2 ? even : odd) of pair i % (d/2).
        const int64_t source = h * head_dim + 2 * (i % (head_dim / 2)) + (i < head_dim / 2 ? 0 : 1);
        EXPECT_TRUE(at::equal(out[h * head_dim + i], value[source])) << name << " head " << h << " row " << i;
      }
    }
  }
  const nlohmann::json config = read_json(dir / "hf/config.json");
  EXPECT_EQ(config.at("model_type"), "llama");
  EXPECT_EQ(number(config, "num_key_value_heads"), 2);
  EXPECT_EQ(number(config, "head_dim"), head_dim);
  EXPECT_EQ(number(config, "intermediate_size"), 48);
}

TEST(HfExport, ReferenceLogitsComeFromTheCheckpointWeights) {
  TempDir dir;
  const SavedCheckpoint saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 2, 10, /*scale=*/1.5);
  ExportOptions options;
  options.dtype = "fp32";
  options.reference_logits_path = dir / "reference.safetensors";
  export_hugging_face(saved.dir, dir / "hf", options);
  const SafetensorsFile file = SafetensorsFile::open(options.reference_logits_path);
  const SafetensorsTensor* ids = file.find("input_ids");
  const SafetensorsTensor* logits = file.find("logits");
  ASSERT_TRUE(ids != nullptr && logits != nullptr);
  EXPECT_EQ(ids->shape, (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(logits->shape, (std::vector<int64_t>{2, 32, 320}));
  at::Tensor tokens = at::empty(ids->shape, at::kLong);
  std::memcpy(tokens.data_ptr(), file.data(*ids), static_cast<size_t>(ids->size_bytes()));
  at::Tensor stored = at::empty(logits->shape, at::kFloat);
  std::memcpy(stored.data_ptr(), file.data(*logits), static_cast<size_t>(logits->size_bytes()));
  EXPECT_TRUE(tokens.min().item<int64_t>() >= 0 && tokens.max().item<int64_t>() < 320);

  // The same model with the saved weights gives the same logits; the unscaled init does not.
  torch::autograd::AutoGradMode no_grad(false);
  model::Model model(saved.config.model, static_cast<uint64_t>(saved.config.run.seed));
  model.train(false);
  const at::Tensor init_logits = model.forward_logits(tokens);
  for (auto& [name, param] : model.named_parameters()) param.copy_(saved.params.at(name));
  for (auto& [name, buffer] : model.named_buffers()) buffer.copy_(saved.buffers.at(name));
  EXPECT_TRUE(at::allclose(model.forward_logits(tokens), stored, 1e-6, 1e-6));
  EXPECT_FALSE(at::allclose(init_logits, stored, 1e-3, 1e-3));
}

TEST(HfExport, RefusesWhatItCannotExportFaithfully) {
  TempDir dir;
  auto expect_input_error = [](auto&& call, const std::string& fragment) {
    try {
      call();
      ADD_FAILURE() << "no error; expected '" << fragment << "'";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kInput) << error.what();
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    }
  };
  const SavedCheckpoint gqa_moe =
      save_model_checkpoint(dir / "gqa", tiny_job({"model.attention_type=gqa", "model.num_key_value_heads=2"}), 1);
  expect_input_error([&] { export_hugging_face(gqa_moe.dir, dir / "out1", {}); }, "gqa attention with MoE");

  const SavedCheckpoint saved = save_model_checkpoint(dir / "ckpt", tiny_job(), 2);
  export_hugging_face(saved.dir, dir / "out2", {});
  expect_input_error([&] { export_hugging_face(saved.dir, dir / "out2", {}); }, "pass --overwrite");
  ExportOptions overwrite;
  overwrite.overwrite = true;
  EXPECT_NO_THROW(export_hugging_face(saved.dir, dir / "out2", overwrite));

  runtime::testing::flip_byte(saved.dir + "/rank_00001.bin", 100);
  expect_input_error([&] { export_hugging_face(saved.dir, dir / "out3", {}); }, "rank_00001.bin: CRC-32C");
  expect_input_error([&] { export_hugging_face(dir / "nothing", dir / "out4", {}); }, "not a directory");
}

}  // namespace
}  // namespace tandem::launch
