#!/usr/bin/env python3
"""Plain PyTorch eager reference for tandem's training-step benchmark.

Builds the same model as tandem_train_bench (from the JSON that `tandem_train_bench
--model-json` writes: architecture, batch, precision, optimizer), written the way a user would
write it in eager PyTorch: nn.Linear layers, RMSNorm in fp32, interleaved rotary embeddings
(optionally YaRN-scaled), causal F.scaled_dot_product_attention as GQA/MHA or as DeepSeek's
multi-head latent attention (MLA), SwiGLU MLPs, for MoE layers a sigmoid router with the
auxiliary-loss-free selection bias and the per-expert loop of Hugging Face's DeepseekV3MoE
(gather each expert's tokens, run it, index_add the weighted output back), and DeepSeek-V3's
multi-token-prediction (MTP) modules. The math is docs/model.md's. One step: bf16 autocast
forward with fp32 master weights, cross-entropy in fp32, backward of lm_loss + mtp_loss,
global-norm clipping, torch.optim.AdamW, routing-bias update; the same fixed random batch every
step. Prints one JSON line with the same keys as tandem_train_bench ("final_loss" is the
next-token lm_loss, as tandem reports it), plus "final_mtp_loss".

Usage: reference_model.py --model-json PATH [--steps N] [--warmup N] [--device cuda|cpu] [--label NAME]
                          [--profile TRACE.json]
       reference_model.py --model-json PATH --count-params   (builds on the meta device, no memory)
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench_common import load_imbalance, profile_one_step, result_line


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def yarn_mscale(factor, m):
    return 0.1 * m * math.log(factor) + 1.0 if factor > 1 else 1.0


def uses_yarn(cfg):
    return cfg["rope_scaling"] == "yarn" and cfg["rope_factor"] > 1


def softmax_scale(cfg, qk_dim):
    # docs/model.md#yarn-scaling: d_qk^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN.
    scale = qk_dim ** -0.5
    if uses_yarn(cfg):
        scale *= yarn_mscale(cfg["rope_factor"], cfg["rope_mscale_all_dim"]) ** 2
    return scale


def rotary_tables(cfg, seq_len, device):
    # Rotary width: qk_rope_head_dim for MLA, the whole head for GQA. YaRN blends each base
    # frequency with base/factor along a ramp that is linear in the frequency index.
    dim = cfg["qk_rope_head_dim"] if cfg["attention_type"] == "mla" else cfg["head_dim"]
    theta = cfg["rope_theta"]
    index = torch.arange(0, dim // 2, dtype=torch.float64)
    inv_freq = theta ** (-2.0 * index / dim)
    amplitude = 1.0
    if uses_yarn(cfg):
        factor, original = cfg["rope_factor"], cfg["rope_original_max_position_embeddings"]

        def corr(rotations):  # index whose wavelength fits `rotations` times into `original`
            return dim * math.log(original / (2 * math.pi * rotations)) / (2 * math.log(theta))

        low = max(math.floor(corr(cfg["rope_beta_fast"])), 0)
        high = min(math.ceil(corr(cfg["rope_beta_slow"])), dim - 1)
        if high == low:
            high += 0.001
        ramp = ((index - low) / (high - low)).clamp(0, 1)
        inv_freq = inv_freq * (1 - ramp) + (inv_freq / factor) * ramp
        amplitude = yarn_mscale(factor, cfg["rope_mscale"]) / yarn_mscale(factor, cfg["rope_mscale_all_dim"])
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # [T, dim/2]
    return (angles.cos() * amplitude).float().to(device), (angles.sin() * amplitude).float().to(device)


def apply_rotary(x, cos, sin):
    # Interleaved pairs (x0, x1), (x2, x3), ... rotated by position: x [B, H, T, dim], in fp32
    # against the fp32 tables, back in x's dtype.
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg["num_key_value_heads"]
        self.head_dim = cfg["head_dim"]
        hidden = cfg["hidden_size"]
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)
        self.scale = softmax_scale(cfg, self.head_dim)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class MLA(nn.Module):
    """Multi-head latent attention, the training form (docs/model.md#mla-attention): k_nope and v
    come per head out of kv_b_proj of the normed latent c_kv; one rotary key k_pe for all heads."""

    def __init__(self, cfg):
        super().__init__()
        hidden, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.heads = cfg["num_attention_heads"]
        self.nope, self.rope, self.v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.kv_rank, self.q_rank = cfg["kv_lora_rank"], cfg["q_lora_rank"]
        q_width = self.heads * (self.nope + self.rope)
        if self.q_rank is None:
            self.q_proj = nn.Linear(hidden, q_width, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, self.q_rank, bias=False)
            self.q_a_layernorm = RMSNorm(self.q_rank, eps)
            self.q_b_proj = nn.Linear(self.q_rank, q_width, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, self.kv_rank + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kv_rank, eps)
        self.kv_b_proj = nn.Linear(self.kv_rank, self.heads * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.heads * self.v_dim, hidden, bias=False)
        self.scale = softmax_scale(cfg, self.nope + self.rope)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x) if self.q_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q_nope, q_rope = q.view(b, t, self.heads, -1).transpose(1, 2).split([self.nope, self.rope], dim=-1)
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_rank, self.rope], dim=-1)  # k_pe not normed
        kv = self.kv_b_proj(self.kv_a_layernorm(c_kv)).view(b, t, self.heads, -1).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)  # [B, H, T, dn], [B, H, T, dv]
        k_rope = apply_rotary(k_pe.unsqueeze(1), cos, sin).expand(b, self.heads, t, self.rope)
        q = torch.cat((q_nope, apply_rotary(q_rope, cos, sin)), dim=-1)  # [B, H, T, dn+dr]
        k = torch.cat((k_nope, k_rope), dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)  # [B, H, T, dv]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.v_dim))


class SwiGLU(nn.Module):
    def __init__(self, hidden, width):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, width, bias=False)
        self.up_proj = nn.Linear(hidden, width, bias=False)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden, width = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.num_experts = cfg["n_routed_experts"]
        self.top_k = cfg["num_experts_per_tok"]
        self.n_group, self.topk_group = cfg["n_group"], cfg["topk_group"]
        self.norm_topk_prob = cfg["norm_topk_prob"]
        self.scaling = cfg["routed_scaling_factor"]
        self.force_balanced = cfg.get("force_balanced_routing", False)
        self.gate = nn.Linear(hidden, self.num_experts, bias=False)
        self.register_buffer("e_score_correction_bias", torch.zeros(self.num_experts))
        self.experts = nn.ModuleList(SwiGLU(hidden, width) for _ in range(self.num_experts))
        shared = cfg["n_shared_experts"] * width
        self.shared_experts = SwiGLU(hidden, shared) if shared > 0 else None
        self.load = None  # tokens per expert of the last forward

    def route(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores = torch.sigmoid(F.linear(x.float(), self.gate.weight.float()))  # [N, E]
        selection = scores.detach() + self.e_score_correction_bias
        if self.topk_group < self.n_group:
            n = selection.shape[0]
            grouped = selection.view(n, self.n_group, -1)
            group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)  # [N, G]
            kept = torch.zeros_like(group_scores, dtype=torch.bool)
            kept.scatter_(1, group_scores.topk(self.topk_group, dim=-1).indices, True)
            mask = kept.unsqueeze(-1).expand_as(grouped).reshape(n, -1)
            selection = selection.masked_fill(~mask, float("-inf"))
        topk_idx = selection.topk(self.top_k, dim=-1).indices  # [N, K]
        if self.force_balanced:  # row n's k-th expert is (n*K + k) mod E (docs/model.md#moe-routing)
            n = topk_idx.shape[0]
            topk_idx = (torch.arange(n * self.top_k, device=x.device) % self.num_experts).view(n, self.top_k)
        weights = scores.gather(1, topk_idx)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return topk_idx, weights * self.scaling

    def forward(self, x):
        b, t, c = x.shape
        rows = x.reshape(b * t, c)
        topk_idx, topk_weight = self.route(rows)
        self.load = torch.bincount(topk_idx.flatten(), minlength=self.num_experts)
        out = torch.zeros_like(rows, dtype=torch.float32)
        # Hugging Face DeepseekV3MoE's loop: each expert on the tokens that chose it.
        mask = F.one_hot(topk_idx, self.num_experts).permute(2, 0, 1)  # [E, N, K]
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(mask[e])
            if token.numel() == 0:
                continue
            y = expert(rows[token]) * topk_weight[token, slot].unsqueeze(-1)
            out.index_add_(0, token, y.float())
        out = out.to(rows.dtype)
        if self.shared_experts is not None:
            out = out + self.shared_experts(rows)
        return out.view(b, t, c)


class Layer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = MLA(cfg) if cfg["attention_type"] == "mla" else Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        moe = cfg["n_routed_experts"] > 0 and index >= cfg["first_k_dense_replace"]
        self.mlp = MoE(cfg) if moe else SwiGLU(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class MTPModule(Layer):
    """Multi-token prediction module (docs/model.md#multi-token-prediction): eh_proj of
    [enorm(embedding) ; hnorm(previous hidden)], then one decoder layer (whose parameters sit
    flat beside enorm/hnorm/eh_proj, as in Hugging Face's layout) and its own output norm."""

    def __init__(self, cfg, index):
        super().__init__(cfg, index)
        hidden, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.enorm = RMSNorm(hidden, eps)
        self.hnorm = RMSNorm(hidden, eps)
        self.eh_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.shared_head = nn.Module()
        self.shared_head.norm = RMSNorm(hidden, eps)

    def forward(self, prev, emb, cos, sin):
        return super().forward(self.eh_proj(torch.cat((self.enorm(emb), self.hnorm(prev)), dim=-1)), cos, sin)


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        n = cfg["num_hidden_layers"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(n))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        # MTP module k (1..D) is decoder layer N+k-1: MoE or dense by that index.
        self.mtp = nn.ModuleList(MTPModule(cfg, n + k) for k in range(cfg["num_nextn_predict_layers"]))
        self.mtp_loss_weight = cfg.get("mtp_loss_weight", 0.0)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.embed_tokens.weight
        for name, p in self.named_parameters():
            if "norm" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=cfg["initializer_range"])

    def cross_entropy(self, normed, labels):
        return F.cross_entropy(self.lm_head(normed).float().flatten(0, 1), labels.flatten())

    def forward(self, tokens, cos, sin):
        """Returns (lm_loss, mtp_loss); the training loss is their sum (no balance loss here)."""
        t = tokens.shape[1] - 1
        h = self.embed_tokens(tokens[:, :t])
        for layer in self.layers:
            h = layer(h, cos, sin)
        lm_loss = self.cross_entropy(self.norm(h), tokens[:, 1:])
        mtp_losses = []
        for k, mtp in enumerate(self.mtp, start=1):  # depth k predicts the token k+1 ahead
            n = t - k  # positions whose target exists; rotary positions restart at 0
            h = mtp(h[:, :n], self.embed_tokens(tokens[:, k:k + n]), cos[:n], sin[:n])
            mtp_losses.append(self.cross_entropy(mtp.shared_head.norm(h), tokens[:, k + 1:]))
        mtp_loss = self.mtp_loss_weight / len(mtp_losses) * sum(mtp_losses) if mtp_losses else torch.zeros_like(lm_loss)
        return lm_loss, mtp_loss

    def moe_layers(self):
        return [layer.mlp for layer in [*self.layers, *self.mtp] if isinstance(layer.mlp, MoE)]

    def update_routing_bias(self, speed):
        with torch.no_grad():
            for moe in self.moe_layers():
                if moe.load is not None:
                    load = moe.load.float()
                    moe.e_score_correction_bias += speed * torch.sign(load.mean() - load)

    def load_imbalance(self):
        """As tandem's trainer: mean over MoE layers (MTP blocks included) of max / mean load."""
        return load_imbalance([m.load for m in self.moe_layers() if m.load is not None])[0]


def check_supported(cfg):
    problems = []
    if cfg["attention_type"] not in ("gqa", "mla"):
        problems.append(f"attention_type {cfg['attention_type']}")
    if cfg["num_nextn_predict_layers"] > 0 and "mtp_loss_weight" not in cfg:
        problems.append("MTP modules but no mtp_loss_weight in the JSON (an older tandem_train_bench)")
    if cfg["n_routed_experts"] > 0 and cfg["scoring_func"] != "sigmoid":
        problems.append("softmax routing")
    if cfg["aux_loss_alpha"] > 0:
        problems.append("the sequence-wise balance loss (aux_loss_alpha > 0)")
    if cfg["rope_scaling"] not in ("none", "yarn"):
        problems.append(f"rope_scaling {cfg['rope_scaling']}")
    if problems:
        sys.exit("reference_model.py: this config uses " + ", ".join(problems))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-json", required=True, help="written by tandem_train_bench --model-json")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--label", default="")
    parser.add_argument("--count-params", action="store_true", help="print the parameter count and exit")
    parser.add_argument("--force-balanced", action="store_true",
                        help="route token n's k-th slot to expert (n*K + k) mod E (also set by the JSON's "
                             "force_balanced_routing)")
    parser.add_argument("--profile", default="", help="after timing, record one step with torch.profiler "
                        "and write it as a Chrome trace to this path")
    args = parser.parse_args()
    with open(args.model_json) as f:
        cfg = json.load(f)
    cfg["force_balanced_routing"] = cfg.get("force_balanced_routing", False) or args.force_balanced
    check_supported(cfg)
    if args.count_params:
        with torch.device("meta"):
            print(json.dumps({"params": sum(p.numel() for p in Model(cfg).parameters())}))
        return
    device = torch.device(args.device)
    torch.manual_seed(cfg["seed"])

    model = Model(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "norm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
    batch, seq = cfg["micro_batch_size"], cfg["seq_length"]
    generator = torch.Generator().manual_seed(cfg["seed"])
    tokens = torch.randint(0, cfg["vocab_size"], (batch, seq + 1), generator=generator).to(device)
    cos, sin = rotary_tables(cfg, seq, device)
    bf16 = cfg["bf16"]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            lm_loss, mtp_loss = model(tokens, cos, sin)
        (lm_loss + mtp_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        model.update_routing_bias(cfg["bias_update_speed"])
        return lm_loss.detach(), mtp_loss.detach()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, mtp_loss = step()
    sync()
    seconds = time.perf_counter() - start
    if args.profile:
        profile_one_step(step, sync, device, args.profile)
    # final_loss is the lm_loss, as tandem_train_bench reports it.
    result = result_line("pytorch", args.label, device, bf16, sum(p.numel() for p in model.parameters()), batch * seq,
                         args.steps, seconds, cfg, loss)
    result["final_mtp_loss"] = float(mtp_loss)  # (mtp_loss_weight / D) * sum of the depths' losses
    result["imbalance"] = round(model.load_imbalance(), 3)  # 1.0 without MoE layers, as tandem
    print(json.dumps(result), flush=True)
    if not math.isfinite(result["final_loss"]):
        sys.exit("reference_model.py: the loss is not finite")


if __name__ == "__main__":
    main()
