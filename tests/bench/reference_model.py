#!/usr/bin/env python3
"""Plain PyTorch eager reference for tandem's training-step benchmark.

Builds the same model as tandem_train_bench (from the JSON that `tandem_train_bench
--model-json` writes: architecture, batch, precision, optimizer), written the way a user would
write it in eager PyTorch: nn.Linear layers, RMSNorm in fp32, rotary embeddings, causal
F.scaled_dot_product_attention, SwiGLU MLPs, and for MoE layers a sigmoid router with the
auxiliary-loss-free selection bias and the per-expert loop of Hugging Face's DeepseekV3MoE
(gather each expert's tokens, run it, index_add the weighted output back). One step: bf16
autocast forward with fp32 master weights, cross-entropy in fp32, backward, global-norm
clipping, torch.optim.AdamW, routing-bias update; the same fixed random batch every step.
Prints one JSON line with the same keys as tandem_train_bench.

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


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def rotary_tables(head_dim, seq_len, theta, device):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # [T, hd/2]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rotary(x, cos, sin):
    # Interleaved pairs (x0, x1), (x2, x3), ... rotated by position: x [B, H, T, hd].
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


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

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


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
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        moe = cfg["n_routed_experts"] > 0 and index >= cfg["first_k_dense_replace"]
        self.mlp = MoE(cfg) if moe else SwiGLU(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.embed_tokens.weight
        for name, p in self.named_parameters():
            if "norm" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=cfg["initializer_range"])

    def forward(self, tokens, cos, sin):
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        x = self.embed_tokens(inputs)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())

    def update_routing_bias(self, speed):
        with torch.no_grad():
            for layer in self.layers:
                if isinstance(layer.mlp, MoE) and layer.mlp.load is not None:
                    load = layer.mlp.load.float()
                    layer.mlp.e_score_correction_bias += speed * torch.sign(load.mean() - load)


def check_supported(cfg):
    problems = []
    if cfg["attention_type"] != "gqa":
        problems.append(f"attention_type {cfg['attention_type']} (the reference has gqa/MHA only)")
    if cfg["num_nextn_predict_layers"] != 0:
        problems.append("MTP modules (set model.num_nextn_predict_layers: 0)")
    if cfg["n_routed_experts"] > 0 and cfg["scoring_func"] != "sigmoid":
        problems.append("softmax routing")
    if cfg["aux_loss_alpha"] > 0:
        problems.append("the sequence-wise balance loss (aux_loss_alpha > 0)")
    if cfg["rope_scaling"] != "none":
        problems.append("rope_scaling")
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
    parser.add_argument("--profile", default="", help="after timing, record one step with torch.profiler "
                        "and write it as a Chrome trace to this path")
    args = parser.parse_args()
    with open(args.model_json) as f:
        cfg = json.load(f)
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
    cos, sin = rotary_tables(cfg["head_dim"], seq, cfg["rope_theta"], device)
    bf16 = cfg["bf16"]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(tokens, cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        model.update_routing_bias(cfg["bias_update_speed"])
        return loss.detach()

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
        loss = step()
    sync()
    seconds = time.perf_counter() - start
    if args.profile:  # after timing: the profiler's overhead stays out of the figures
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            step()
            sync()
        prof.export_chrome_trace(args.profile)
    tokens_per_s = args.steps * batch * seq / seconds
    peak_flops = cfg["peak_flops"] if device.type == "cuda" else cfg["cpu_peak_flops"]
    result = {
        "impl": "pytorch",
        "label": args.label,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "bf16" if bf16 else "fp32",
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_step": batch * seq,
        "steps": args.steps,
        "step_ms": 1e3 * seconds / args.steps,
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": cfg["flops_per_token"] * tokens_per_s / peak_flops,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0,
        "final_loss": float(loss),
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)
    if not math.isfinite(result["final_loss"]):
        sys.exit("reference_model.py: the loss is not finite")


if __name__ == "__main__":
    main()
