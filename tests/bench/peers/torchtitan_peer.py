#!/usr/bin/env python3
"""torchtitan peer for tandem's training-step benchmark (one GPU).

Builds torchtitan's own DeepSeek-V3 model (torchtitan.models.deepseek_v3: MLA attention, dense
first layers, then MoE layers with shared experts and token-choice top-k routing) from the JSON
that `tandem_train_bench --model-json` writes, and runs torchtitan's training step the way its
trainer (torchtitan/train.py) does on one GPU:

- model built on the meta device, parallelized by `parallelize_deepseekv3` (on one GPU that is
  only `apply_compile`: torch.compile per transformer block, the MoE's router / shared expert
  compiled and the grouped-GEMM expert function compiled), `to_empty` on the device, then
  torchtitan's `init_weights`; no activation checkpointing;
- experts as one grouped GEMM (`MoEArgs.use_grouped_mm`, `moe_impl` "standard", as
  `DeepSeekV3ModelArgs.update_from_config` sets them);
- bf16 by autocast (`maybe_enable_amp`: without FSDP torchtitan uses torch.autocast), fp32
  master weights;
- torchtitan's cross-entropy loss (compiled), `clip_grad_norm_`, and its optimizer builder
  `build_optimizers_with_moe_load_balancing` (AdamW, fused; its step pre-hook updates each MoE
  layer's `expert_bias` from the `tokens_per_expert` counters: the auxiliary-loss-free balance);
- one fixed random token batch [micro_batch_size, seq_length + 1] from a torch.Generator seeded
  with the JSON's seed, as reference_model.py and tandem_train_bench do.

Prints one JSON line with reference_model.py's keys ("impl": "torchtitan") plus "peer_version",
"imbalance" (mean over MoE layers of max / mean expert load in the last timed step, from
torchtitan's tokens_per_expert counters), "attention", "compiled", "force_balanced" and "notes"
(every place where the run is not the JSON's model or tandem's step). What torchtitan cannot
match is also written to stderr; what it cannot build at all (GQA attention, tied embeddings,
the sequence-wise balance loss, ...) makes the script exit non-zero.

Usage:
  PYTHONPATH=/tmp/site-tt python3 tests/bench/peers/torchtitan_peer.py --model-json X \\
      [--steps N] [--warmup M] [--label L] [--device cuda|cpu] [--no-compile] \\
      [--attn auto|sdpa|flex] [--force-balanced] [--profile TRACE.json] [--step-times]
  ... --count-params   (builds on the meta device and prints {"params": N})
"""
import os

# torchtitan's run_train.sh launches training with this allocator setting.
os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_common import (  # noqa: E402  (tests/bench)
    finish, fixed_batch, load_imbalance, profile_one_step, result_line, synchronize, time_steps)

PROG = "torchtitan_peer.py"


def say(message):
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def refuse(problems):
    sys.exit(f"{PROG}: torchtitan cannot build this model: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Imports. torchtitan's deepseek_v3 package imports its dataloader stack (torchdata, datasets)
# at import time although this benchmark feeds a fixed batch. If those two cannot be imported
# on the machine, stand-ins are registered so that the model code still loads (said loudly).
# --------------------------------------------------------------------------------------------
def ensure_dataloader_imports(notes):
    try:
        import datasets  # noqa: F401
        import datasets.distributed  # noqa: F401
    except Exception as error:  # an ImportError, or a version clash inside datasets
        say(f"WARNING: `import datasets` failed ({error!r}); registering a stand-in module "
            "(only torchtitan's HF dataloader uses it, this benchmark does not)")
        notes.append("datasets could not be imported here; a stand-in module was registered")
        stub = types.ModuleType("datasets")
        stub.Dataset = type("Dataset", (), {})
        stub.IterableDataset = type("IterableDataset", (), {})

        def unavailable(*args, **kwargs):
            raise RuntimeError("the datasets package is not importable on this machine")

        stub.load_dataset = unavailable
        dist_stub = types.ModuleType("datasets.distributed")
        dist_stub.split_dataset_by_node = unavailable
        stub.distributed = dist_stub
        sys.modules["datasets"] = stub
        sys.modules["datasets.distributed"] = dist_stub
    try:
        import torchdata.stateful_dataloader  # noqa: F401
    except Exception as error:
        say(f"WARNING: `import torchdata.stateful_dataloader` failed ({error!r}); registering "
            "a stand-in (only torchtitan's dataloader uses it)")
        notes.append("torchdata could not be imported here; a stand-in module was registered")
        root = types.ModuleType("torchdata")
        sub = types.ModuleType("torchdata.stateful_dataloader")
        sub.StatefulDataLoader = type("StatefulDataLoader", (torch.utils.data.DataLoader,), {})
        root.stateful_dataloader = sub
        sys.modules["torchdata"] = root
        sys.modules["torchdata.stateful_dataloader"] = sub


def torchtitan_version():
    try:
        from importlib.metadata import version

        return version("torchtitan")
    except Exception:
        import torchtitan

        return getattr(torchtitan, "__version__", "unknown")


# --------------------------------------------------------------------------------------------
# JSON -> torchtitan's DeepSeekV3ModelArgs / JobConfig
# --------------------------------------------------------------------------------------------
def yarn_active(cfg):
    return cfg.get("rope_scaling", "none") == "yarn" and float(cfg.get("rope_factor", 1.0)) > 1.0


def check_architecture(cfg):
    """Returns (problems that stop the run, differences to report)."""
    problems, differences = [], []
    if cfg["attention_type"] != "mla":
        problems.append(f"attention_type {cfg['attention_type']!r}: torchtitan's DeepSeek-V3 model has MLA "
                        "attention only (GQA/MHA configs belong to its llama/qwen models)")
    if cfg["num_key_value_heads"] != cfg["num_attention_heads"]:
        problems.append(f"num_key_value_heads {cfg['num_key_value_heads']} != num_attention_heads "
                        f"{cfg['num_attention_heads']}: MLA has one key/value head per query head")
    if cfg["tie_word_embeddings"]:
        problems.append("tie_word_embeddings: torchtitan's DeepSeek-V3 has separate tok_embeddings and output")
    if cfg["n_routed_experts"] > 0 and cfg["aux_loss_alpha"] > 0:
        problems.append(f"aux_loss_alpha {cfg['aux_loss_alpha']}: torchtitan 0.2.x has no sequence-wise "
                        "balance loss (only the expert_bias balancing); set it to 0")
    if cfg["n_routed_experts"] > 0 and cfg["scoring_func"] not in ("sigmoid", "softmax"):
        problems.append(f"scoring_func {cfg['scoring_func']!r}")
    if cfg["n_routed_experts"] > 0 and cfg["n_group"] > 1:
        e, g = cfg["n_routed_experts"], cfg["n_group"]
        if e % g != 0 or e // g < 2:
            problems.append(f"n_group {g} with {e} experts: torchtitan needs n_group | experts and >= 2 per group")
    if cfg.get("rope_scaling", "none") not in ("none", "yarn"):
        problems.append(f"rope_scaling {cfg['rope_scaling']!r}")
    if yarn_active(cfg):
        if cfg["seq_length"] <= cfg["rope_original_max_position_embeddings"]:
            problems.append(
                f"YaRN with seq_length {cfg['seq_length']} <= rope_original_max_position_embeddings "
                f"{cfg['rope_original_max_position_embeddings']}: torchtitan applies YaRN (frequencies and "
                "softmax scale) only when its max_seq_len (= training seq_len) exceeds original_seq_len")
        if float(cfg["rope_mscale"]) != float(cfg["rope_mscale_all_dim"]):
            problems.append(
                f"YaRN rope_mscale {cfg['rope_mscale']} != rope_mscale_all_dim {cfg['rope_mscale_all_dim']}: "
                "torchtitan has one mscale (softmax scale only), no cos/sin amplitude")
        differences.append("YaRN mapped as original_seq_len=rope_original_max_position_embeddings, "
                           "mscale=rope_mscale_all_dim, beta_fast/beta_slow, rope_factor")
    if cfg["num_nextn_predict_layers"] > 0:
        differences.append(
            f"num_nextn_predict_layers {cfg['num_nextn_predict_layers']}: torchtitan 0.2.x has no MTP module "
            "(its MTP arrives in 0.3.0, which needs a torch nightly); built WITHOUT MTP, so params and "
            "FLOPs lack it: compare with tandem run at num_nextn_predict_layers 0")
    return problems, differences


def build_model_args(cfg, job_config, DeepSeekV3ModelArgs, MoEArgs):
    n_layers = cfg["num_hidden_layers"]
    moe = cfg["n_routed_experts"] > 0
    grouped = moe and cfg["n_group"] > 1 and cfg["topk_group"] < cfg["n_group"]
    if yarn_active(cfg):
        original_seq_len = cfg["rope_original_max_position_embeddings"]
        rope_factor = float(cfg["rope_factor"])
        mscale = float(cfg["rope_mscale_all_dim"])
    else:
        # torchtitan switches YaRN on when max_seq_len > original_seq_len: keep it off.
        original_seq_len = max(cfg["seq_length"], cfg["max_position_embeddings"])
        rope_factor, mscale = 1.0, 1.0
    moe_args = MoEArgs(
        num_experts=max(cfg["n_routed_experts"], 1),
        num_shared_experts=cfg["n_shared_experts"],
        score_func=cfg["scoring_func"],
        route_norm=bool(cfg["norm_topk_prob"]),
        route_scale=float(cfg["routed_scaling_factor"]),
        # torchtitan's DeepSeek-V3 flavors weight the expert outputs (as HF DeepseekV3 and tandem),
        # not the expert inputs.
        score_before_experts=False,
        top_k=max(cfg["num_experts_per_tok"], 1),
        num_expert_groups=cfg["n_group"] if grouped else None,
        num_limited_groups=cfg["topk_group"] if grouped else None,
        use_grouped_mm=True,
        load_balance_coeff=float(cfg["bias_update_speed"]) if cfg["bias_update_speed"] > 0 else None,
    )
    args = DeepSeekV3ModelArgs(
        max_batch_size=cfg["micro_batch_size"],
        max_seq_len=cfg["seq_length"],
        vocab_size=cfg["vocab_size"],
        dim=cfg["hidden_size"],
        inter_dim=cfg["intermediate_size"],
        moe_inter_dim=cfg["moe_intermediate_size"],
        n_layers=n_layers,
        n_dense_layers=min(cfg["first_k_dense_replace"], n_layers) if moe else n_layers,
        n_heads=cfg["num_attention_heads"],
        norm_eps=float(cfg["rms_norm_eps"]),
        moe_args=moe_args,
        q_lora_rank=cfg["q_lora_rank"] or 0,  # null -> 0: a direct wq projection
        kv_lora_rank=cfg["kv_lora_rank"],
        qk_nope_head_dim=cfg["qk_nope_head_dim"],
        qk_rope_head_dim=cfg["qk_rope_head_dim"],
        v_head_dim=cfg["v_head_dim"],
        attn_type="sdpa",
        attn_mask_type="causal",
        original_seq_len=original_seq_len,
        rope_theta=float(cfg["rope_theta"]),
        rope_factor=rope_factor,
        beta_fast=cfg["rope_beta_fast"],
        beta_slow=cfg["rope_beta_slow"],
        mscale=mscale,
    )
    # As the trainer does: max_seq_len <- training.seq_len, grouped mm off below SM90,
    # _debug_force_load_balance <- debug.moe_force_load_balance, moe_impl <- the EP comm backend.
    args.update_from_config(job_config)
    return args


def make_job_config(cfg, args, JobConfig):
    jc = JobConfig()
    jc.training.seq_len = cfg["seq_length"]
    jc.training.local_batch_size = cfg["micro_batch_size"]
    jc.training.global_batch_size = cfg["micro_batch_size"]
    jc.training.max_norm = float(cfg["grad_clip"])
    jc.training.dtype = "float32"  # fp32 master weights
    jc.training.mixed_precision_param = "bfloat16" if cfg["bf16"] else "float32"
    jc.optimizer.name = "AdamW"
    jc.optimizer.lr = float(cfg["lr"])
    jc.optimizer.beta1 = float(cfg["beta1"])
    jc.optimizer.beta2 = float(cfg["beta2"])
    jc.optimizer.eps = float(cfg["eps"])
    jc.optimizer.weight_decay = float(cfg["weight_decay"])
    jc.optimizer.implementation = "fused"  # torchtitan's default
    # torchtitan's own activation checkpointing: "none" unless memory asks for it (--activation-checkpoint)
    jc.activation_checkpoint.mode = args.activation_checkpoint
    jc.compile.enable = not args.no_compile
    jc.compile.components = ["model", "loss"]
    jc.parallelism.data_parallel_shard_degree = 1
    jc.parallelism.expert_parallel_comm_backend = "standard"
    jc.debug.moe_force_load_balance = bool(args.force_balanced)
    return jc


# --------------------------------------------------------------------------------------------
# Attention: torchtitan's DeepSeek-V3 offers attn_type "sdpa" (F.scaled_dot_product_attention
# with backend priority cuDNN > flash > mem-efficient > math) or "flex" (FlexAttention, compiled
# with max-autotune, plus a BlockMask). MLA's q/k head dim (nope + rope, 192) differs from v's
# (128), which PyTorch's flash backend rejects; cuDNN accepts it on Hopper. Probe what SDPA would
# run at the real shape; use flex only when SDPA would fall back to mem-efficient / math.
# --------------------------------------------------------------------------------------------
def probe_sdpa_backend(cfg, device, dtype, scale):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    h, t = cfg["num_attention_heads"], cfg["seq_length"]
    dqk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    q = torch.randn(1, h, t, dqk, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(1, h, t, dqk, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(1, h, t, cfg["v_head_dim"], device=device, dtype=dtype, requires_grad=True)
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)):
        try:
            with sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
                out.sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            chosen = name
            break
        except RuntimeError:
            continue
    else:
        chosen = "none"
    del q, k, v
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return chosen


def choose_attention(requested, cfg, device, bf16, scale):
    dtype = torch.bfloat16 if bf16 else torch.float32
    if device.type != "cuda":
        if requested == "flex":  # get_attention_masks -> create_block_mask(device="cuda")
            sys.exit(f"{PROG}: --attn flex needs CUDA (torchtitan builds its BlockMask on cuda)")
        return "sdpa", "cpu"
    backend = probe_sdpa_backend(cfg, device, dtype, scale)
    if requested == "auto":
        chosen = "sdpa" if backend in ("cudnn", "flash") else "flex"
    else:
        chosen = requested
    return chosen, backend


def install_cpu_histc_shim(notes):
    """torchtitan counts tokens per expert with torch.histc on int64 indices, which CUDA has and
    the CPU kernel lacks ("histogram_cpu" not implemented for 'Long'). For CPU runs only (the
    plumbing check), integer inputs are counted as float and the counts returned in the input's
    dtype, as the CUDA kernel returns them."""
    original = torch.histc

    def histc(input, bins=100, min=0, max=0, *, out=None):
        if out is not None or input.device.type != "cpu" or input.is_floating_point():
            kwargs = {} if out is None else {"out": out}
            return original(input, bins=bins, min=min, max=max, **kwargs)
        # CUDA's histc returns the input's integer dtype; so does this.
        return original(input.float(), bins=bins, min=min, max=max).to(input.dtype)

    torch.histc = histc
    say("NOTE: CPU run: torch.histc wrapped to count int64 expert indices as float (no CPU int kernel)")
    notes.append("CPU run: torch.histc shim for int64 expert indices")


# --------------------------------------------------------------------------------------------
# The run: one process, one device, torchtitan's trainer objects, the timed steps
# --------------------------------------------------------------------------------------------
def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-json", required=True, help="written by tandem_train_bench --model-json")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--label", default="")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true", help="eager: torchtitan's compile.enable = false")
    parser.add_argument("--attn", choices=("auto", "sdpa", "flex"), default="auto",
                        help="torchtitan attn_type; auto: sdpa when SDPA runs cuDNN or flash at this shape, "
                        "else flex")
    parser.add_argument("--force-balanced", action="store_true",
                        help="torchtitan's debug.moe_force_load_balance: round-robin expert assignment")
    parser.add_argument("--activation-checkpoint", choices=("none", "selective", "full"), default="none",
                        help="torchtitan's activation_checkpoint.mode (long sequences); default none")
    parser.add_argument("--step-times", action="store_true",
                        help="print each step's synchronized wall time to stderr (slows the timed loop)")
    parser.add_argument("--count-params", action="store_true", help="print the parameter count and exit")
    parser.add_argument("--profile", default="", help="after timing, record one step with torch.profiler "
                        "and write it as a Chrome trace to this path")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def load_model_json(path):
    """The JSON's model, refused (exit 1) when torchtitan cannot build it; with it the notes that
    the run starts from: what torchtitan will build differently."""
    with open(path) as f:
        cfg = json.load(f)
    problems, differences = check_architecture(cfg)
    if problems:
        refuse(problems)
    for line in differences:
        say("NOTE: " + line)
    return cfg, list(differences)


def print_param_count(model_args):
    from torchtitan.models.deepseek_v3 import DeepSeekV3Model

    with torch.device("meta"):
        model = DeepSeekV3Model(model_args)
    print(json.dumps({"params": sum(p.numel() for p in model.parameters())}), flush=True)


def prepare_device(device, notes):
    import torchtitan.distributed.parallel_dims as tt_parallel_dims

    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        install_cpu_histc_shim(notes)
    # torchtitan picks the mesh's device type at import ("cuda" whenever no other accelerator
    # is found, even on a CPU-only host); the CPU plumbing run needs a CPU mesh.
    tt_parallel_dims.device_type = device.type


def set_attention(requested, cfg, device, model_args):
    """Sets model_args.attn_type (see choose_attention) and returns how the run's attention is
    described in its line."""
    # The probe runs SDPA at the softmax scale that the model will use, YaRN's mscale included.
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    if model_args.max_seq_len > model_args.original_seq_len:
        m = 0.1 * model_args.mscale * math.log(model_args.rope_factor) + 1.0
        scale *= m * m
    attn, sdpa_backend = choose_attention(requested, cfg, device, bool(cfg["bf16"]), scale)
    model_args.attn_type = attn
    attention = f"sdpa ({sdpa_backend})" if attn == "sdpa" else f"flex (sdpa would run {sdpa_backend})"
    say(f"attention: {attention}")
    if attn == "sdpa" and sdpa_backend not in ("cudnn", "flash", "cpu"):
        say(f"WARNING: SDPA runs its {sdpa_backend} backend at this shape; try --attn flex")
    return attention


def init_single_process(device):
    """ParallelDims of one rank, in a process group of one."""
    import torch.distributed as dist
    from torchtitan.distributed import ParallelDims

    # torchtitan always runs under torchrun with a process group (its device meshes and the
    # expert-bias hook ask for them). A local HashStore avoids ports.
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)
    return ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=1, pp=1, ep=1, etp=1, world_size=1)


def build_model(cfg, model_args, job_config, parallel_dims, device, notes):
    """As torchtitan's trainer builds it: on the meta device, parallelized (on one GPU that is
    compilation alone), materialized on `device`, torchtitan's init_weights. Returns the model,
    its parameter count and its MoE modules."""
    from torchtitan.models.deepseek_v3 import DeepSeekV3Model, parallelize_deepseekv3
    from torchtitan.tools import utils as tt_utils

    with torch.device("meta"), tt_utils.set_default_dtype(torch.float32):
        model = DeepSeekV3Model(model_args)
    params = sum(p.numel() for p in model.parameters())
    model = parallelize_deepseekv3(model, parallel_dims, job_config)
    model.to_empty(device=device)
    torch.manual_seed(cfg["seed"])
    with torch.no_grad():
        model.init_weights(buffer_device=None)
    model.train()
    moe_blocks = [b.moe for b in model.layers.values() if getattr(b, "moe_enabled", False)]
    if cfg["n_routed_experts"] > 0 and moe_blocks and not moe_blocks[0].experts.use_grouped_mm:
        notes.append("experts run torchtitan's for-loop path (grouped mm needs SM90+)")
    return model, params, moe_blocks


def build_loss(job_config):
    from torchtitan.components import loss as tt_loss

    if hasattr(tt_loss, "rescale_accumulated_loss"):  # 0.2.1: mean cross-entropy, / accumulation steps
        return tt_loss.rescale_accumulated_loss(tt_loss.build_cross_entropy_loss(job_config), 1)
    # 0.2.2: sum cross-entropy, divided by the global count of valid tokens in the trainer
    summed = tt_loss.build_cross_entropy_loss(job_config)

    def loss_fn(pred, labels):
        return summed(pred, labels) / labels.numel()

    return loss_fn


def make_step(cfg, model, moe_blocks, job_config, parallel_dims, device):
    """torchtitan's training step on the fixed batch, as step(capture=False) -> the loss; a
    capturing step leaves its tokens per expert, one row per MoE layer, in the returned dict's
    "load"."""
    from torchtitan.components.optimizer import build_optimizers_with_moe_load_balancing
    from torchtitan.distributed import utils as dist_utils

    optimizers = build_optimizers_with_moe_load_balancing([model], job_config.optimizer, parallel_dims)
    loss_fn = build_loss(job_config)
    amp = (dist_utils.maybe_enable_amp(parallel_dims, job_config.training.mixed_precision_param, device.type)
           if cfg["bf16"] else contextlib.nullcontext())
    inputs, labels = fixed_batch(cfg, device)
    flex = model.model_args.attn_type == "flex"
    pp_mesh = parallel_dims.get_optional_mesh("pp")
    captured = {}

    def step(capture=False):
        if capture:  # count this step alone (the pre-hook zeroes them too, when balancing is on)
            for m in moe_blocks:
                m.tokens_per_expert.zero_()
        optimizers.zero_grad()
        extra = {}
        if flex:  # the trainer builds the BlockMask per batch (post_dataloading_process)
            extra["attention_masks"] = model.get_attention_masks(input_batch=inputs, tokenizer=None)
        with amp:
            pred = model(inputs, **extra)
            loss = loss_fn(pred, labels)
        del pred
        loss.backward()
        if capture and moe_blocks:  # the counters are zeroed by the optimizer's pre-hook
            captured["load"] = torch.stack([m.tokens_per_expert.detach().clone() for m in moe_blocks])
        dist_utils.clip_grad_norm_([p for p in model.parameters()], job_config.training.max_norm,
                                   foreach=True, pp_mesh=pp_mesh, ep_enabled=parallel_dims.ep_enabled)
        optimizers.step()
        return loss.detach()

    return step, captured


def note_differences_from_tandem(notes, cfg, args, attention, moe_blocks, compiled):
    """What this run does differently from tandem's step (see docs/model.md)."""
    notes.append(f"attention {attention}")
    if cfg["n_routed_experts"] > 0:
        notes.append(("routing: gate linear under bf16 autocast, " if cfg["bf16"] else "routing: ")
                     + "sigmoid/softmax in fp32, expert_bias for selection only")
        if moe_blocks and moe_blocks[0].experts.use_grouped_mm:
            notes.append("experts as torch._grouped_mm, always in bf16 (torchtitan casts), per-expert token "
                         "groups padded to multiples of 8")
        if cfg["bias_update_speed"] > 0:
            notes.append("bias update (optimizer step pre-hook): delta = coeff*sign(mean-load), then "
                         "delta -= mean(delta) (torchtitan centers it; tandem does not)")
        if args.force_balanced:
            notes.append("force_balanced: token t's k-th slot -> expert (t*top_k + k) mod n_experts, "
                         "gate = that expert's score (then norm/scale)")
    notes.append("weight decay on every parameter (torchtitan builds one AdamW group; tandem exempts "
                 "norm weights)")
    notes.append("torchtitan's own init (trunc-normal 0.02, depth-scaled output projections, embedding "
                 "N(0,1)); initializer_range unused")
    notes.append("final RMSNorm uses torch's default eps, block norms use rms_norm_eps")
    notes.append("constant lr (no torchtitan warmup scheduler)")
    if not compiled:
        notes.append("eager (--no-compile)")


def main():
    args = parse_args()
    cfg, notes = load_model_json(args.model_json)
    ensure_dataloader_imports(notes)  # before anything of torchtitan is imported
    from torchtitan.config import JobConfig
    from torchtitan.models.deepseek_v3 import DeepSeekV3ModelArgs
    from torchtitan.models.moe import MoEArgs
    from torchtitan.tools import utils as tt_utils

    peer_version = torchtitan_version()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    job_config = make_job_config(cfg, args, JobConfig)
    model_args = build_model_args(cfg, job_config, DeepSeekV3ModelArgs, MoEArgs)
    if args.count_params:
        print_param_count(model_args)
        return

    prepare_device(device, notes)
    attention = set_attention(args.attn, cfg, device, model_args)
    parallel_dims = init_single_process(device)
    gc_handler = tt_utils.GarbageCollection(gc_freq=job_config.training.gc_freq)  # as the trainer
    model, params, moe_blocks = build_model(cfg, model_args, job_config, parallel_dims, device, notes)
    step, captured = make_step(cfg, model, moe_blocks, job_config, parallel_dims, device)
    loss, seconds = time_steps(step, device, args.warmup, args.steps, after_step=gc_handler.run, log=say,
                               step_times=args.step_times)
    if args.profile:
        profile_one_step(step, functools.partial(synchronize, device), device, args.profile)

    imbalance = None
    if "load" in captured:
        imbalance = round(load_imbalance(captured["load"].cpu())[0], 4)
    note_differences_from_tandem(notes, cfg, args, attention, moe_blocks, job_config.compile.enable)
    tokens = cfg["micro_batch_size"] * cfg["seq_length"]
    result = {
        **result_line("torchtitan", args.label, device, bool(cfg["bf16"]), params, tokens, args.steps, seconds,
                      cfg, loss),
        "peer_version": f"torchtitan {peer_version}",
        "imbalance": imbalance,
        "attention": attention,
        "compiled": job_config.compile.enable,
        "force_balanced": bool(args.force_balanced),
        "notes": "; ".join(notes),
    }
    if params != cfg.get("total_params", params):
        say(f"NOTE: params {params} != the JSON's total_params {cfg['total_params']}"
            + (" (MTP not built)" if cfg["num_nextn_predict_layers"] > 0 else ""))
    finish(PROG, result)


if __name__ == "__main__":
    main()
