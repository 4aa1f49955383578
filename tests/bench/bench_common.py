"""Shared by the Python sides of the single-GPU benchmark (reference_model.py and the peers in
peers/): the fixed token batch, the warmup and timed steps, the expert imbalance, the one
profiled step after timing, and the keys of the result line, rounded as tandem_train_bench
rounds them, so that bench_table.py reads every implementation alike."""
import json
import math
import sys
import time

import torch


def fixed_batch(cfg, device):
    """(inputs, labels) of the one random batch [micro_batch_size, seq_length + 1] that every step
    trains on, drawn from a generator seeded with the JSON's seed as tandem_train_bench draws it."""
    batch, seq = cfg["micro_batch_size"], cfg["seq_length"]
    generator = torch.Generator().manual_seed(cfg["seed"])
    tokens = torch.randint(0, cfg["vocab_size"], (batch, seq + 1), generator=generator).to(device)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device, warmup, steps, after_step=None, log=None, step_times=False):
    """Runs `warmup` untimed calls of `step`, then `steps` timed ones, the last as
    step(capture=True) so that the step can keep its routing figures; returns (the last loss, the
    timed seconds). The peak-memory counter starts at the warmup. `after_step(n)` follows the n-th
    step of both (n from 1). `log(message)`, when given, gets the warmup's duration and, with
    `step_times`, each step's wall time, which syncs and so slows the timed loop."""
    def run(kind, i, n, capture=False):
        begin = time.perf_counter()
        loss = step(capture=capture)
        if log and step_times:
            synchronize(device)
            log(f"{kind} step {i}: {1e3 * (time.perf_counter() - begin):.1f} ms, loss {float(loss):.5f}")
        if after_step:
            after_step(n)
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    begin = time.perf_counter()
    for i in range(warmup):
        run("warmup", i, i + 1)
    synchronize(device)
    if log:
        log(f"warmup ({warmup} steps, compilation included): {time.perf_counter() - begin:.1f} s")
    start = time.perf_counter()
    loss = None
    for i in range(steps):
        loss = run("timed", i, warmup + i + 1, capture=(i == steps - 1))
    synchronize(device)
    return loss, time.perf_counter() - start


def load_imbalance(loads):
    """Mean over MoE layers of max / mean tokens per expert (1.0 = balanced), as tandem's trainer
    computes it, and the per-layer ratios. `loads`: rows of tokens per expert, one per MoE layer;
    rows with no tokens are skipped. (1.0, []) without MoE layers."""
    ratios = [float(row.max() / row.mean()) for row in (r.double() for r in loads) if row.mean() > 0]
    return (sum(ratios) / len(ratios) if ratios else 1.0), ratios


def profile_one_step(step, sync, device, path):
    """Records one more `step` with torch.profiler (host ops, and device kernels on a GPU) into a
    Chrome trace at `path`; called after timing, so the profiler's overhead stays out of it."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        sync()
    prof.export_chrome_trace(path)


def result_line(impl, label, device, bf16, params, tokens_per_step, steps, seconds, cfg, final_loss):
    """The keys every implementation's JSON line carries (tandem_train_bench's): throughput over
    `steps` timed steps of `tokens_per_step` tokens in `seconds`, MFU from the model JSON's FLOPs
    and peak, the device's peak allocated memory."""
    tokens_per_s = steps * tokens_per_step / seconds
    peak_flops = cfg["peak_flops"] if device.type == "cuda" else cfg["cpu_peak_flops"]
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {
        "impl": impl,
        "label": label,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "bf16" if bf16 else "fp32",
        "params": params,
        "tokens_per_step": tokens_per_step,
        "steps": steps,
        "step_ms": round(1e3 * seconds / steps, 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": round(cfg["flops_per_token"] * tokens_per_s / peak_flops, 5),
        "peak_mem_gib": round(peak_mem, 3),
        "final_loss": round(float(final_loss), 5),
        "torch": torch.__version__,
    }


def finish(prog, result):
    """Prints the result line, leaves the process group, and fails the run when the loss is not
    finite (after printing, so the line still shows what ran)."""
    print(json.dumps(result), flush=True)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if not math.isfinite(result["final_loss"]):
        sys.exit(f"{prog}: the loss is not finite")
