// `tandem export`: a checkpoint -> a Hugging Face model folder (config.json + safetensors).
// tandem's parameters already carry Hugging Face DeepseekV3 state-dict names (docs/model.md#hugging-face-names), and
// checkpoints address tensors by global name and shape, so export reads each global tensor
// (assembled from whatever layout wrote it), converts its dtype and writes it under the same
// name. Two architectures are produced:
//  - DeepseekV3ForCausalLM for MLA models (MoE or dense): config.json with rope_interleave true,
//    which is the rotary convention tandem trains with (adjacent pairs); the router bias
//    (gate.e_score_correction_bias) is kept in fp32.
//  - LlamaForCausalLM for dense gqa/MHA models: Llama rotates halves rather than adjacent
//    pairs, so q_proj and k_proj rows are permuted per head (pair (2i, 2i+1) -> (i, i + d/2)),
//    which leaves every attention score unchanged.
// In both, MTP modules follow as extra layers model.layers.{N..N+D-1} (Hugging Face ignores
// them on load), with copies of the shared embedding and head under .embed_tokens and
// .shared_head.head as in DeepSeek's published checkpoint.
// gqa attention with MoE has no matching Hugging Face architecture and is refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"

namespace tandem::launch {

inline constexpr int64_t kDefaultMaxShardBytes = 5'000'000'000;  // Hugging Face's "5GB"

struct ExportOptions {
  std::string dtype = "bf16";                       // bf16 | fp32 (the router bias stays fp32)
  int64_t max_shard_bytes = kDefaultMaxShardBytes;  // above this, model-0000k-of-0000n.safetensors + index
  bool overwrite = false;                           // replace an earlier export in out_dir
  std::string reference_logits_path;                // when set: tandem's logits for fixed tokens, as safetensors
};

struct ExportResult {
  std::string checkpoint_dir;  // the step directory exported
  int64_t step = 0;
  std::string architecture;  // "DeepseekV3ForCausalLM" | "LlamaForCausalLM"
  int64_t num_tensors = 0;
  int64_t total_bytes = 0;         // tensor data over all files
  std::vector<std::string> files;  // written, relative to out_dir
  std::vector<std::string> warnings;
};

// "DeepseekV3ForCausalLM" or "LlamaForCausalLM". Throws kInput when no Hugging Face architecture
// computes what this config computes (gqa attention with MoE).
std::string hf_architecture(const model::ModelConfig& config);

// config.json for the architecture above; `torch_dtype` is "bfloat16" or "float32".
std::string hf_config_json(const model::ModelConfig& config, const std::string& torch_dtype);

// Exports the checkpoint at `checkpoint_path` (a step directory or a checkpoint root: see
// resolve_checkpoint_dir) into `out_dir`, verifying every shard's checksum first. Throws kInput
// for a corrupt checkpoint, an unsupported model, a bad option or an out_dir holding an earlier
// export without `overwrite`; kIo when writing fails.
ExportResult export_hugging_face(const std::string& checkpoint_path, const std::string& out_dir,
                                 const ExportOptions& options);

}  // namespace tandem::launch
