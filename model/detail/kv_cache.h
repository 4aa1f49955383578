// The key/value cache of one decoding batch: what each attention layer keeps of the tokens seen
// so far, so a new token costs one position's work instead of the whole prefix's. MLA keeps what
// DeepSeek-V2/V3 keep at inference: the normalized compressed latent c_kv [B, S, kv_rank] and the
// rotated shared key k_rope [B, S, dr], (kv_rank + dr) numbers per token and layer whatever the
// head count; GQA keeps the rotated keys and the values [B, KV, S, hd] of this rank's heads.
// Rows share one length: prompts are left-padded to a common start (model/generation.cpp), the
// padding masked out by ForwardContext::attn_mask.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>

namespace tandem::model::detail {

struct LayerKv {
  at::Tensor first;   // MLA: c_kv [B, capacity, kv_rank]; GQA: keys [B, KV, capacity, hd]
  at::Tensor second;  // MLA: k_rope [B, capacity, dr]; GQA: values [B, KV, capacity, hd]
};

struct KvCache {
  int64_t capacity = 0;               // positions allocated (prompt + the most new tokens)
  int64_t length = 0;                 // positions filled; a forward of n tokens writes [length, length + n)
  std::map<int64_t, LayerKv> layers;  // by global layer index, allocated by the layer's first write
};

// Writes `values` (n positions along `dim`) into `slot` at [cache.length, cache.length + n),
// allocating the slot with cache.capacity positions on first use, and returns the filled prefix
// [0, cache.length + n) along `dim`.
at::Tensor append_to_cache(at::Tensor& slot, const at::Tensor& values, int64_t dim, const KvCache& cache);

// softmax(q k^T * scale, masked) v for decoding, softmax statistics in at least fp32.
// q [B, H, n, d], k [B, H or 1, S, d], v [B, H or 1, S, dv] (a single head broadcasts: MLA's
// latent is shared by every head), mask [B, 1, n, S] bool (true = may attend) -> [B, H, n, dv].
at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            const at::Tensor& mask);

}  // namespace tandem::model::detail
