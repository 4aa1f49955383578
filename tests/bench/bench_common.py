"""Shared by the Python sides of the single-GPU benchmark (reference_model.py and the peers in
peers/): the expert imbalance, the one profiled step after timing, and the keys of the result
line, rounded as tandem_train_bench rounds them, so that bench_table.py reads every
implementation alike."""
import torch


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
