#!/usr/bin/env python3
"""Megatron-Core peer for tandem's training-step benchmark.

Builds the model that `tandem_train_bench --model-json` describes (DeepSeek-V3 style: MLA or GQA
attention, dense first layers then MoE layers with shared experts, sigmoid routing with the
auxiliary-loss-free expert bias, MTP modules) as Megatron-Core's GPTModel and trains it the way
Megatron-LM's pretrain_gpt.py does on one GPU: MLATransformerConfig/TransformerConfig, the
Megatron-Core *local* layer spec (Transformer Engine is not installed), Float16Module (bf16
parameters), DistributedDataParallel with fp32 gradient buffers, the distributed optimizer from
get_megatron_optimizer (fp32 master weights, AdamW, global-norm clipping), the non-pipelined
forward_backward_func with finalize_model_grads (which also updates the routing bias). One fixed
random batch [micro_batch_size, seq_length+1], the same every step. Prints one JSON line with
the keys of reference_model.py plus peer_version, spec, imbalance and notes.

Usage (one process; the script starts its own single-rank process group when it is not started
by torchrun, so plain `python3` works too):
    torchrun --nproc-per-node 1 megatron_peer.py --model-json X [--steps N] [--warmup M] [--label L]
        [--compare-to TANDEM_LABEL] [--device cuda|cpu] [--force-balanced] [--attention sdpa|local]
        [--optimizer megatron|torch] [--no-fusions] [--verbose] [--profile TRACE.json]
    megatron_peer.py --model-json X --count-params     (builds on the CPU, prints the count)

Only the JSON line goes to stdout. --device cpu is a plumbing mode: Megatron-Core assumes CUDA in
places (RNG tracker, streams, device="cuda" buffers, torch.cuda.*Tensor checks in its optimizer),
so cpu_shims() redirects those to the CPU; nothing of it is active on a GPU.

A config that Megatron-Core cannot reproduce is refused: one line on stderr, exit status 2.
"""
import argparse
import contextlib
import functools
import json
import os
import socket
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_common import (  # noqa: E402  (tests/bench)
    finish, fixed_batch, load_imbalance, profile_one_step, result_line, synchronize, time_steps)

PROG = "megatron_peer.py"
EXIT_UNSUPPORTED = 2


def refuse(problems):
    print(f"{PROG}: cannot match this architecture in Megatron-Core: " + "; ".join(problems),
          file=sys.stderr, flush=True)
    sys.exit(EXIT_UNSUPPORTED)


# ----------------------------------------------------------------------------------------------
# What can be matched


def check_supported(cfg):
    """Every way the JSON can ask for something Megatron-Core computes differently."""
    problems = []
    attn = cfg["attention_type"]
    if attn not in ("mla", "gqa"):
        problems.append(f"attention_type {attn!r}")
    if cfg["rope_scaling"] not in ("none", "yarn"):
        problems.append(f"rope_scaling {cfg['rope_scaling']!r}")
    if attn == "gqa" and cfg["rope_scaling"] == "yarn":
        problems.append("YaRN with GQA (Megatron applies the YaRN softmax scale in MLA only)")
    if attn == "gqa" and cfg["num_attention_heads"] % cfg["num_key_value_heads"] != 0:
        problems.append("num_attention_heads not a multiple of num_key_value_heads")
    E, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    L, D, k_dense = cfg["num_hidden_layers"], cfg["num_nextn_predict_layers"], cfg["first_k_dense_replace"]
    if E > 0:
        score = cfg["scoring_func"]
        if score not in ("sigmoid", "softmax"):
            problems.append(f"scoring_func {score!r}")
        if score == "sigmoid":
            # Megatron always divides sigmoid gates by their sum when top-k > 1, never when top-k = 1.
            if K > 1 and not cfg["norm_topk_prob"]:
                problems.append("sigmoid routing without norm_topk_prob (Megatron always normalises the top-k gates)")
            if K == 1 and cfg["norm_topk_prob"]:
                problems.append("sigmoid top-1 with norm_topk_prob (Megatron does not normalise a single gate)")
        if score == "softmax" and cfg["bias_update_speed"] > 0:
            problems.append("the routing bias with softmax scores (Megatron uses expert_bias with sigmoid only)")
        G, Gk = cfg["n_group"], cfg["topk_group"]
        if Gk < G:
            if E % G or K % Gk:
                problems.append("group-limited routing needs n_routed_experts % n_group == 0 and "
                                "num_experts_per_tok % topk_group == 0 in Megatron")
            elif K // Gk != min(2, E // G):
                problems.append(f"group score: Megatron sums the top-{K // Gk} (top_k/topk_group) experts "
                                f"of a group, tandem the top-{min(2, E // G)}")
            if score == "softmax" and cfg["norm_topk_prob"]:
                problems.append("group-limited softmax routing with norm_topk_prob (Megatron picks groups on logits)")
        if D > 0:
            # Megatron builds every MTP block from the spec of the LAST decoder layer.
            last_is_moe = (L - 1) >= k_dense
            for k in range(1, D + 1):
                if ((L + k - 1) >= k_dense) != last_is_moe:
                    problems.append(f"MTP block {k} would be {'MoE' if not last_is_moe else 'dense'} in "
                                    "tandem but Megatron copies the last decoder layer's kind")
                    break
    if D > 0 and cfg["seq_length"] <= D:
        problems.append("seq_length must exceed num_nextn_predict_layers")
    if problems:
        refuse(problems)


# ----------------------------------------------------------------------------------------------
# Process group


def init_process_group(device):
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    if int(os.environ["WORLD_SIZE"]) != 1:
        refuse([f"this peer runs on one rank, WORLD_SIZE is {os.environ['WORLD_SIZE']}"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    else:
        dist.init_process_group("gloo", rank=0, world_size=1)


def cpu_shims():
    """Plumbing-only: Megatron-Core keeps CUDA RNG states and a few CUDA-only buffers.

    Used with --device cpu alone (never on a GPU), so that the model can be built and stepped
    on the CPU: the model-parallel RNG tracker forks become no-ops and CUDA-device helpers
    allocate on the CPU."""
    from megatron.core import tensor_parallel
    from megatron.core.tensor_parallel import random as mc_random

    class _NoForkTracker(mc_random.CudaRNGStatesTracker):
        def add(self, name, seed):
            self.states_[name] = seed

        @contextlib.contextmanager
        def fork(self, name=None):
            yield

    tracker = _NoForkTracker()
    mc_random._CUDA_RNG_STATE_TRACKER = tracker
    mc_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    tensor_parallel.random._CUDA_RNG_STATE_TRACKER = tracker
    torch.cuda.current_device = lambda: "cpu"  # buffers that Megatron places on "the" GPU

    class _Event:
        def synchronize(self):
            pass

        def wait(self, *a, **k):
            pass

    class _Stream:  # one stand-in for every CUDA stream: "current" and "side" are the same
        def wait_stream(self, *a, **k):
            pass

        def wait_event(self, *a, **k):
            pass

        def synchronize(self):
            pass

        def record_event(self, *a, **k):
            return _Event()

    class _CudaOnCpu(torch.overrides.TorchFunctionMode):
        """Every device="cuda" request lands on the CPU; Tensor.cuda() is the identity; and
        Tensor.type() names CPU tensors as torch.cuda.* (the optimizers check that string)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            dev = kwargs.get("device")
            if dev is not None and (str(dev).startswith("cuda") or isinstance(dev, int)):
                kwargs["device"] = "cpu"
            if func is torch.Tensor.cuda:
                return args[0]
            if func is torch.Tensor.to and len(args) > 1 and isinstance(args[1], (str, torch.device)) \
                    and str(args[1]).startswith("cuda"):
                args = (args[0], "cpu") + tuple(args[2:])
            if func is torch.Tensor.type and len(args) == 1 and not kwargs:
                name = func(*args)
                return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
            return func(*args, **kwargs)

    stream = object.__new__(_Stream)
    _Stream.__new__ = lambda cls, *a, **k: stream
    _Stream.__init__ = lambda self, *a, **k: None
    torch.cuda.Stream = _Stream
    torch.cuda.current_stream = lambda *a, **k: stream
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.Event = _Event
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    mode = _CudaOnCpu()
    mode.__enter__()
    return mode


# ----------------------------------------------------------------------------------------------
# Core attention modules with Megatron-Core's interface


def make_core_attention_classes():
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.module import MegatronModule

    class LocalDotProductAttention(DotProductAttention):
        """Megatron-Core's own unfused attention (baddbmm, masked fp32 softmax, bmm).

        MLA passes k_channels/v_channels, which only TE's attention accepts; the unfused
        math already works with a query/key width different from the value width as long as
        config.kv_channels is the value width, so the two arguments are checked and dropped."""

        def __init__(self, config, *args, k_channels=None, v_channels=None, **kwargs):
            if v_channels is not None and v_channels != config.kv_channels:
                raise ValueError(f"kv_channels {config.kv_channels} must equal v_channels {v_channels}")
            super().__init__(config, *args, **kwargs)

    class SDPACoreAttention(MegatronModule):
        """Causal torch.nn.functional.scaled_dot_product_attention behind Megatron's interface.

        Stands in for TE's fused attention (which Megatron users run) since TE is absent:
        PyTorch picks its flash / cuDNN / memory-efficient kernel."""

        def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                     softmax_scale=None, k_channels=None, v_channels=None, cp_comm_type=None,
                     pg_collection=None, **_):
            super().__init__(config=config)
            if attn_mask_type != AttnMaskType.causal:
                raise ValueError("SDPACoreAttention supports causal self-attention only")
            head_k = k_channels or config.kv_channels
            self.softmax_scale = softmax_scale if softmax_scale is not None else head_k ** -0.5
            self.gqa = config.num_query_groups is not None and config.num_query_groups != config.num_attention_heads

        def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                    packed_seq_params=None, **_):
            assert packed_seq_params is None and attention_bias is None
            # Megatron layout [s, b, heads, dim] -> [b, heads, s, dim]
            q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale,
                                                 enable_gqa=self.gqa)
            s, b = query.shape[0], query.shape[1]
            return out.permute(2, 0, 1, 3).reshape(s, b, -1)

    return LocalDotProductAttention, SDPACoreAttention


def patch_attention_spec(spec, core_cls, no_q_norm):
    """In place on a layer spec: `core_cls` as core attention; with MLA and no query latent
    (q_lora_rank null) no q_layernorm, which the local spec would otherwise put there and MLA
    then rejects (the latent-KV norm stays)."""
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear
    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.multi_latent_attention import MLASelfAttention

    class MLASelfAttentionDirectQuery(MLASelfAttention):
        """MLA with a direct q_proj: Megatron-Core 0.19's resolver asks for TE's fused
        norm+linear there whenever qk_layernorm is on; without a query latent there is no
        query norm, so the plain ColumnParallelLinear is the projection and only the KV latent
        is normed (DeepSeek-V2-Lite's layout)."""

        def _resolve_qk_norm_config(self, submodules):
            return dict(linear_q_proj=submodules.linear_q_proj or ColumnParallelLinear,
                        linear_q_up_proj=IdentityOp,
                        linear_kv_up_proj=submodules.linear_kv_up_proj or ColumnParallelLinear,
                        q_layernorm=IdentityOp,
                        kv_layernorm=submodules.kv_layernorm)

    sub = spec.submodules.self_attention.submodules
    sub.core_attention = core_cls
    if no_q_norm:
        sub.q_layernorm = IdentityOp
        spec.submodules.self_attention.module = MLASelfAttentionDirectQuery


# ----------------------------------------------------------------------------------------------
# Config


def common_config(cfg, args, device):
    """The TransformerConfig arguments that MLA and GQA models share."""
    from megatron.core.utils import init_method_normal

    bf16 = bool(cfg["bf16"])
    std = cfg["initializer_range"]
    fusions = not args.no_fusions
    return dict(
        num_layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        ffn_hidden_size=cfg["intermediate_size"],
        num_attention_heads=cfg["num_attention_heads"],
        normalization="RMSNorm",
        layernorm_epsilon=cfg["rms_norm_eps"],
        gated_linear_unit=True,  # SwiGLU
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=std,
        # tandem (and DeepSeek) draw every matrix from N(0, std): no 1/sqrt(2L) output scaling.
        output_layer_init_method=init_method_normal(std),
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        attention_softmax_in_fp32=True,
        # Megatron-LM's defaults for --swiglu runs (torch.compile'd SwiGLU and bias-dropout-add).
        bias_activation_fusion=fusions,
        bias_dropout_fusion=fusions,
        masked_softmax_fusion=False,  # the CUDA kernel comes with Apex/the source build, not the wheel
        apply_rope_fusion=False,
        cross_entropy_loss_fusion=False,
        use_cpu_initialization=device.type == "cpu" or args.count_params,
        perform_initialization=not args.count_params,
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        expert_model_parallel_size=1,
        context_parallel_size=1,
        sequence_parallel=False,
        transformer_impl="local",
    )


def moe_config(cfg, args):
    """The TransformerConfig arguments of the MoE layers; none without routed experts."""
    L, E = cfg["num_hidden_layers"], cfg["n_routed_experts"]
    if E == 0:
        return {}
    k = cfg["first_k_dense_replace"]
    moe = dict(
        num_moe_experts=E,
        moe_ffn_hidden_size=cfg["moe_intermediate_size"],
        moe_layer_freq=[0] * min(k, L) + [1] * max(L - k, 0),
        moe_router_topk=cfg["num_experts_per_tok"],
        moe_router_score_function=cfg["scoring_func"],
        moe_router_pre_softmax=cfg["scoring_func"] == "softmax" and not cfg["norm_topk_prob"],
        moe_router_topk_scaling_factor=cfg["routed_scaling_factor"],
        moe_router_dtype="fp32",
        moe_router_enable_expert_bias=cfg["bias_update_speed"] > 0,
        moe_router_bias_update_rate=cfg["bias_update_speed"],
        moe_router_load_balancing_type="seq_aux_loss" if cfg["aux_loss_alpha"] > 0 else "none",
        moe_aux_loss_coeff=cfg["aux_loss_alpha"],
        moe_shared_expert_intermediate_size=(cfg["n_shared_experts"] * cfg["moe_intermediate_size"]
                                             if cfg["n_shared_experts"] > 0 else None),
        moe_shared_expert_overlap=False,
        moe_token_dispatcher_type="alltoall",
        moe_grouped_gemm=False,  # GroupedMLP/TEGroupedMLP need TE; the local spec builds SequentialMLP
        moe_permute_fusion=False,  # TE kernels
        moe_router_fusion=False,  # TE kernels
        moe_router_force_load_balancing=args.force_balanced,
    )
    if cfg["topk_group"] < cfg["n_group"]:
        moe.update(moe_router_num_groups=cfg["n_group"], moe_router_group_topk=cfg["topk_group"])
    return moe


def build_config(cfg, args, device):
    from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

    common = common_config(cfg, args, device)
    common.update(moe_config(cfg, args))
    if cfg["num_nextn_predict_layers"] > 0:
        common.update(mtp_num_layers=cfg["num_nextn_predict_layers"],
                      mtp_loss_scaling_factor=cfg.get("mtp_loss_weight", 0.3))
    if cfg["attention_type"] != "mla":
        return TransformerConfig(
            **common,
            num_query_groups=cfg["num_key_value_heads"],
            kv_channels=cfg["head_dim"] or cfg["hidden_size"] // cfg["num_attention_heads"],
            rotary_interleaved=True,  # tandem rotates interleaved pairs
        )
    yarn = cfg["rope_scaling"] == "yarn"
    return MLATransformerConfig(
        **common,
        num_query_groups=cfg["num_attention_heads"],
        kv_channels=cfg["v_head_dim"],
        q_lora_rank=cfg["q_lora_rank"],
        kv_lora_rank=cfg["kv_lora_rank"],
        qk_head_dim=cfg["qk_nope_head_dim"],
        qk_pos_emb_head_dim=cfg["qk_rope_head_dim"],
        v_head_dim=cfg["v_head_dim"],
        qk_layernorm=True,  # q_a_layernorm and kv_a_layernorm on the latents
        rope_type="yarn" if yarn else "rope",
        rotary_base=cfg["rope_theta"],
        rotary_percent=1.0,
        rotary_scaling_factor=cfg["rope_factor"] if yarn else 1.0,
        original_max_position_embeddings=cfg["rope_original_max_position_embeddings"],
        beta_fast=cfg["rope_beta_fast"],
        beta_slow=cfg["rope_beta_slow"],
        mscale=cfg["rope_mscale"],
        mscale_all_dim=cfg["rope_mscale_all_dim"],
    )


def build_model(cfg, config, args):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec, get_gpt_mtp_block_spec

    block_spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False, normalization="RMSNorm")
    local_cls, sdpa_cls = make_core_attention_classes()
    core_cls = sdpa_cls if args.attention == "sdpa" else local_cls
    no_q_norm = cfg["attention_type"] == "mla" and cfg["q_lora_rank"] is None
    for spec in block_spec.layer_specs:
        patch_attention_spec(spec, core_cls, no_q_norm)
    mtp_spec = None
    if cfg["num_nextn_predict_layers"] > 0:
        mtp_spec = get_gpt_mtp_block_spec(config, block_spec, use_transformer_engine=False)
        # The MTP block reuses the last decoder layer's spec object (already patched).
    model = GPTModel(
        config=config,
        transformer_layer_spec=block_spec,
        vocab_size=cfg["vocab_size"],
        max_sequence_length=max(cfg["max_position_embeddings"], cfg["seq_length"]),
        pre_process=True,
        post_process=True,
        parallel_output=True,
        share_embeddings_and_output_weights=bool(cfg["tie_word_embeddings"]),
        position_embedding_type="rope",
        rotary_base=int(cfg["rope_theta"]),
        mtp_block_spec=mtp_spec,
    )
    return model


def count_params(model):
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def routers(model):
    from megatron.core.transformer.moe.router import TopKRouter

    return [m for m in model.modules() if isinstance(m, TopKRouter)]


# ----------------------------------------------------------------------------------------------
# Optimizers


def megatron_training_objects(model, config, cfg, device):
    """Float16Module + DDP (fp32 grad buffers) + get_megatron_optimizer(distributed), as
    Megatron-LM's setup_model_and_optimizer builds them for --bf16 --use-distributed-optimizer."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.transformer.module import Float16Module

    bf16 = bool(cfg["bf16"])
    module = Float16Module(config, model) if bf16 else model
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=True,
        check_for_nan_in_grad=False,
        bucket_size=None,
    )
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=module)
    opt_config = OptimizerConfig(
        optimizer="adam",
        lr=cfg["lr"],
        min_lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        adam_beta1=cfg["beta1"],
        adam_beta2=cfg["beta2"],
        adam_eps=cfg["eps"],
        clip_grad=cfg["grad_clip"] if cfg["grad_clip"] > 0 else 0.0,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=True,
    )
    # Default overrides: no weight decay on 1-D parameters (norms) and biases, as tandem.
    optimizer = get_megatron_optimizer(opt_config, [ddp])
    # Megatron sets each group's lr and weight decay (wd_mult) through the scheduler; constant
    # here, like tandem's bench (lr_schedule: constant).
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=cfg["lr"], max_lr=cfg["lr"], min_lr=cfg["lr"], lr_warmup_steps=0,
        lr_decay_steps=10**9, lr_decay_style="constant", start_wd=cfg["weight_decay"],
        end_wd=cfg["weight_decay"], wd_incr_steps=10**9, wd_incr_style="constant")
    return ddp, optimizer, scheduler


class TorchMasterAdamW:
    """Fallback (--optimizer torch): bf16 model parameters, fp32 master copies, torch AdamW,
    global-norm clipping on the fp32 gradients, then the masters copied back."""

    def __init__(self, model, cfg):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        decay = [m for m, p in zip(self.master, self.params) if p.dim() > 1]
        no_decay = [m for m, p in zip(self.master, self.params) if p.dim() <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        self.clip = cfg["grad_clip"]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for m, p in zip(self.master, self.params):
            m.grad = None if p.grad is None else p.grad.float()
        norm = torch.nn.utils.clip_grad_norm_(self.master, self.clip) if self.clip > 0 else None
        self.opt.step()
        with torch.no_grad():
            for m, p in zip(self.master, self.params):
                p.copy_(m)
        return norm


# ----------------------------------------------------------------------------------------------
# Training step


def summed_token_losses(output_tensor):
    """Megatron's loss_func contract: (the loss, the tokens it sums over, what to report)."""
    losses = output_tensor.float().view(-1)
    total = losses.sum()
    num = torch.tensor(losses.numel(), dtype=torch.int, device=losses.device)
    return total, num, {"lm loss": torch.stack([total.detach(), num.float()])}


class TrainStep:
    """One training step on the fixed batch, as pretrain_gpt.py takes it: the non-pipelined
    forward_backward_func, then the optimizer of --optimizer. Called as step(capture=False) -> the
    main LM loss; a capturing step leaves its tokens per expert in `counts`, one row per router."""

    def __init__(self, model, config, cfg, args, device):
        from megatron.core.distributed import finalize_model_grads
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self.config, self.cfg, self.args = config, cfg, args
        self.batch, self.seq = cfg["micro_batch_size"], cfg["seq_length"]
        self.input_ids, self.labels = fixed_batch(cfg, device)
        self.position_ids = torch.arange(self.seq, device=device).unsqueeze(0).expand(self.batch, -1).contiguous()
        # Megatron's convention: True = masked out. Only the local attention reads it.
        self.attention_mask = torch.triu(torch.ones(self.seq, self.seq, dtype=torch.bool, device=device),
                                         diagonal=1).view(1, 1, self.seq, self.seq)
        self.routers = routers(model)
        self.capturing, self.counts, self.hooked = False, None, []
        if args.optimizer == "megatron":
            self.wrapped, self.optimizer, self.scheduler = megatron_training_objects(model, config, cfg, device)
            config.finalize_model_grads_func = self.finalize
            config.grad_scale_func = self.optimizer.scale_loss
        else:
            from megatron.core.transformer.module import Float16Module

            self.wrapped = Float16Module(config, model) if cfg["bf16"] else model
            self.optimizer = TorchMasterAdamW(self.wrapped, cfg)
            config.finalize_model_grads_func = None
        self.forward_backward = get_forward_backward_func()
        self.finalize_model_grads = finalize_model_grads

    def finalize(self, *a, **kw):
        # The routers' per-expert counts of this step, read before finalize_model_grads uses and
        # zeroes them (only on the step that is recorded, so no extra work while timing).
        if self.capturing and self.routers and self.routers[0].local_tokens_per_expert is not None:
            self.counts = torch.stack([r.local_tokens_per_expert.detach().clone() for r in self.routers])
        return self.finalize_model_grads(*a, **kw)

    def forward_step(self, data_iterator, model):
        output = model(self.input_ids, self.position_ids, self.attention_mask, labels=self.labels)
        return output, summed_token_losses

    def count_hook(self, router, inputs, output):  # routers without expert bias keep no counts
        self.hooked.append(output[1].sum(dim=0).float())

    def optimizer_step(self, capture):
        """Returns the gradient norm."""
        if self.args.optimizer == "megatron":
            _, grad_norm, _ = self.optimizer.step()
            self.scheduler.step(increment=1)
            return grad_norm
        # Without Megatron's optimizer nothing calls finalize_model_grads, which updates the bias.
        if self.routers and self.routers[0].expert_bias is not None:
            if capture:
                self.counts = torch.stack([r.local_tokens_per_expert.clone() for r in self.routers])
            from megatron.core.distributed.finalize_model_grads import (_update_router_expert_bias,
                                                                         reset_model_temporary_tensors)
            _update_router_expert_bias([self.wrapped], self.config)
            reset_model_temporary_tensors(self.config, [self.wrapped])
        return self.optimizer.step()

    def __call__(self, capture=False):
        self.capturing = capture
        hooks = []
        if capture and self.routers and self.routers[0].local_tokens_per_expert is None:
            self.hooked = []
            hooks = [r.register_forward_hook(self.count_hook) for r in self.routers]
        if capture and self.cfg["num_nextn_predict_layers"] > 0:
            from megatron.core.transformer.multi_token_prediction import MTPLossLoggingHelper

            MTPLossLoggingHelper.clean_metrics_in_tracker()  # so that it holds this step alone
        if self.args.optimizer == "megatron":
            self.wrapped.zero_grad_buffer()
        self.optimizer.zero_grad()
        out = self.forward_backward(forward_step_func=self.forward_step, data_iterator=iter([None]),
                                    model=[self.wrapped], num_microbatches=1, seq_length=self.seq,
                                    micro_batch_size=self.batch, decoder_seq_length=self.seq, forward_only=False)
        grad_norm = self.optimizer_step(capture)
        for h in hooks:
            h.remove()
        if hooks and self.hooked:
            self.counts = torch.stack(self.hooked)
        loss_sum, n = out[0]["lm loss"]
        if self.args.verbose:  # host syncs: not for timing
            bias = [round(float(r.expert_bias.abs().sum()), 6) for r in self.routers if r.expert_bias is not None]
            print(f"{PROG}: step loss {float(loss_sum / n):.5f} grad_norm {float(grad_norm or 0):.5f} "
                  f"|expert_bias| per router {bias}", file=sys.stderr, flush=True)
        return loss_sum / n


# ----------------------------------------------------------------------------------------------
# The run


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-json", required=True, help="written by tandem_train_bench --model-json")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--compare-to", default="", help='tandem label to pair with in bench_table.py ("compare_to")')
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--force-balanced", action="store_true",
                        help="moe_router_force_load_balancing: the router's logits are replaced by fresh "
                             "N(0,1) noise every forward (straight-through gradient), then routed as usual")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "local"],
                        help="core attention: sdpa = torch SDPA behind Megatron's interface (stand-in for TE's "
                             "fused attention); local = Megatron-Core's unfused DotProductAttention")
    parser.add_argument("--optimizer", default="megatron", choices=["megatron", "torch"],
                        help="megatron = Float16Module+DDP+get_megatron_optimizer (distributed optimizer); "
                             "torch = bf16 params with fp32 masters and torch.optim.AdamW")
    parser.add_argument("--no-fusions", action="store_true",
                        help="turn off the torch.compile'd SwiGLU / bias-dropout-add fusions")
    parser.add_argument("--profile", default="", help="after timing, record one step with torch.profiler "
                        "and write a Chrome trace to this path")
    parser.add_argument("--verbose", action="store_true",
                        help="print each step's loss, grad norm and routing-bias size to stderr (syncs: not for timing)")
    parser.add_argument("--count-params", action="store_true", help="build on the CPU, print the parameter count")
    return parser.parse_args()


def start_single_rank(args, cfg):
    """The device, in a process group and model-parallel state of one rank, seeded."""
    device = torch.device("cpu") if args.count_params else torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    init_process_group(device)
    # Imported once the group exists, so that Megatron's import-time warnings carry the rank.
    from megatron.core import parallel_state, tensor_parallel
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
                                             expert_model_parallel_size=1, context_parallel_size=1)
    torch.manual_seed(cfg["seed"])
    if device.type == "cuda":
        tensor_parallel.model_parallel_cuda_manual_seed(cfg["seed"])
    else:
        cpu_shims()
    return device


def mtp_figures(cfg, config):
    """The last step's cross-entropy per MTP depth and their weighted sum; (None, None) without MTP."""
    from megatron.core.transformer.multi_token_prediction import MTPLossLoggingHelper

    if cfg["num_nextn_predict_layers"] == 0 or "loss_values" not in MTPLossLoggingHelper.tracker:
        return None, None
    mtp_losses = [round(float(v), 5) for v in MTPLossLoggingHelper.tracker["loss_values"]]
    # (lambda / D) * sum_k CE_k, the mtp_loss of docs/model.md and reference_model.py
    return mtp_losses, round(config.mtp_loss_scaling_factor / len(mtp_losses) * sum(mtp_losses), 5)


def run_notes(cfg, config, args, model):
    """Every way this run differs from tandem's step."""
    experts_impl = sorted({type(m).__name__ for m in model.modules()
                           if type(m).__name__ in ("SequentialMLP", "GroupedMLP", "TEGroupedMLP")})
    notes = [
        "transformer_impl local (Transformer Engine not installed): ColumnParallel/RowParallelLinear, torch RMSNorm",
        f"experts: {','.join(experts_impl) or 'none'} (one GEMM chain per expert; grouped GEMM needs TE)",
        "core attention: " + ("torch SDPA (causal) behind Megatron's core-attention interface"
                              if args.attention == "sdpa" else "Megatron-Core DotProductAttention (unfused)"),
        "optimizer: " + ("Float16Module + DDP(fp32 grads) + get_megatron_optimizer(use_distributed_optimizer, "
                         "torch AdamW fallback inside: no TE/Apex FusedAdam)" if args.optimizer == "megatron"
                         else "bf16 params, fp32 masters, torch AdamW"),
        "token dispatcher alltoall (ep=1), router fp32, expert bias updated in finalize_model_grads",
        "final_loss is the main LM loss (as tandem); imbalance = mean over MoE layers (MTP included) "
        "of max/mean tokens per expert in the last timed step",
    ]
    if cfg["num_nextn_predict_layers"] > 0:
        notes.append(f"MTP: weight {config.mtp_loss_scaling_factor}/D, rolled over all T positions (last ones "
                     "masked); differs from tandem: hnorm gets the final-normed hidden state (model.norm(h)), "
                     "and depth k+1 the shared_head-normed output of depth k")
    if args.force_balanced:
        notes.append("force-balanced: router logits replaced by N(0,1) noise each forward, then sigmoid/softmax, "
                     "expert bias and top-k as usual (random, balanced in expectation only)")
    return notes


def main():
    args = parse_args()
    with open(args.model_json) as f:
        cfg = json.load(f)
    check_supported(cfg)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    device = start_single_rank(args, cfg)
    import megatron.core

    config = build_config(cfg, args, device)
    model = build_model(cfg, config, args)
    params = count_params(model)
    if args.count_params:
        print(json.dumps({"params": params, "tandem_params": cfg.get("total_params")}), flush=True)
        return
    if device.type == "cuda":
        model.cuda(device)

    step = TrainStep(model, config, cfg, args, device)
    step.wrapped.train()
    loss, seconds = time_steps(step, device, args.warmup, args.steps)
    # As tandem's trainer and reference_model.py: the mean over MoE layers (MTP blocks included)
    # of max / mean tokens per expert, from the last timed step's routing.
    imbalance, per_layer = None, None
    if step.counts is not None:
        mean, ratios = load_imbalance(step.counts)
        per_layer = [round(r, 4) for r in ratios]
        imbalance = round(mean, 4)
    mtp_losses, final_mtp_loss = mtp_figures(cfg, config)
    # After timing and after the last step's figures are read: the profiler's overhead stays out.
    if args.profile:
        profile_one_step(step, functools.partial(synchronize, device), device, args.profile)

    tokens = cfg["micro_batch_size"] * cfg["seq_length"]
    result = {
        **result_line("megatron", args.label, device, cfg["bf16"], params, tokens, args.steps, seconds, cfg, loss),
        **({"compare_to": args.compare_to} if args.compare_to else {}),
        "peer_version": megatron.core.__version__,
        "spec": "local",
        "final_mtp_loss": final_mtp_loss,
        "imbalance": imbalance,
        "mtp_ce_per_depth": mtp_losses,
        "imbalance_per_layer": per_layer,
        "attention": args.attention,
        "optimizer": args.optimizer,
        "force_balanced": args.force_balanced,
        "tandem_params": cfg.get("total_params"),
        "notes": "; ".join(run_notes(cfg, config, args, model)),
    }
    finish(PROG, result)


if __name__ == "__main__":
    main()
