#!/usr/bin/env python3
"""One Markdown table from benchmark JSON lines (standard library only).

Single device (run_gpu_bench.sh): files with one JSON line each from tandem_train_bench
("impl": "tandem") and reference_model.py ("impl": "pytorch"), paired by "label"; a row per
label with both throughputs, their ratio, MFU, peak memory and parameter counts. The two
implementations must agree on the parameter count (the same architecture) and the tokens per
step (the same batch), else this exits non-zero: a ratio of different models means nothing.

Scaling (run_gpu_bench_2gpu.sh, --scaling): lines with "label", "gpus", "tokens_per_s" and
optionally "ranks" (when several share a GPU), "a2a_hidden" (exchange timeline), "a2a_hidden_gpu"
(NCCL kernels under compute kernels) and "peak_gib"; the row labelled `--baseline` is the 1-GPU run, and each other row gets
its scaling efficiency = tokens/s / (gpus * baseline tokens/s).
"""
import argparse
import json
import math
import sys


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            lines = [line for line in f if line.strip().startswith("{")]
        if not lines:
            sys.exit(f"bench_table.py: {path} holds no JSON result line (did the run fail?)")
        rows.append(json.loads(lines[-1]))
    return rows


def fmt(value, digits=1):
    return f"{value:,.{digits}f}"


def single_device_table(rows, check_loss):
    by_label = {}
    for r in rows:
        by_label.setdefault(r["label"], {})[r["impl"]] = r
    lines = ["| model | device | precision | params | tokens/step | tandem tok/s | PyTorch tok/s | "
             "tandem / PyTorch | tandem MFU | PyTorch MFU | tandem peak GiB | PyTorch peak GiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    problems = []
    for label, impls in by_label.items():
        if set(impls) != {"tandem", "pytorch"}:
            problems.append(f"{label}: have {sorted(impls)}, need tandem and pytorch")
            continue
        t, p = impls["tandem"], impls["pytorch"]
        if t["params"] != p["params"]:
            problems.append(f"{label}: tandem has {t['params']} parameters, the reference {p['params']}")
        if t["tokens_per_step"] != p["tokens_per_step"]:
            problems.append(f"{label}: tokens per step differ ({t['tokens_per_step']} vs {p['tokens_per_step']})")
        for r in (t, p):
            if not (math.isfinite(r["final_loss"]) and r["tokens_per_s"] > 0):
                problems.append(f"{label} {r['impl']}: loss {r['final_loss']}, {r['tokens_per_s']} tokens/s")
        if check_loss is not None:
            # Same vocabulary, random tokens, a few steps: both losses sit near ln(vocab).
            for r in (t, p):
                if abs(r["final_loss"] - check_loss) > 0.1 * check_loss:
                    problems.append(f"{label} {r['impl']}: loss {r['final_loss']:.3f}, expected about {check_loss:.3f}")
        lines.append(
            f"| {label} | {t['device']} | {t['precision']} | {t['params'] / 1e6:,.1f}M | {t['tokens_per_step']:,} | "
            f"{fmt(t['tokens_per_s'])} | {fmt(p['tokens_per_s'])} | {t['tokens_per_s'] / p['tokens_per_s']:.2f} | "
            f"{100 * t['mfu']:.1f}% | {100 * p['mfu']:.1f}% | {t['peak_mem_gib']:.1f} | {p['peak_mem_gib']:.1f} |")
    return lines, problems


def scaling_table(rows, baseline_label):
    base = [r for r in rows if r["label"] == baseline_label]
    if not base:
        return [], [f"no baseline row labelled {baseline_label}"]
    base_tps = base[0]["tokens_per_s"]
    if base_tps <= 0:
        return [], [f"the baseline {baseline_label} has no throughput (did it fail?)"]
    lines = ["| layout | GPUs | ranks | tokens/s | scaling efficiency | all-to-all hidden (exchange timeline) | "
             "all-to-all hidden (GPU kernels) | peak GiB (largest GPU) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    for r in rows:
        efficiency = r["tokens_per_s"] / (r["gpus"] * base_tps)
        peak = r.get("peak_gib")
        lines.append(f"| {r['label']} | {r['gpus']} | {r.get('ranks', r['gpus'])} | {fmt(r['tokens_per_s'])} | "
                     f"{100 * efficiency:.1f}% | {pct(r.get('a2a_hidden'))} | {pct(r.get('a2a_hidden_gpu'))} | "
                     f"{'-' if peak is None else f'{peak:.1f}'} |")
    return lines, []


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="files holding one JSON result line each")
    parser.add_argument("--scaling", action="store_true", help="a scaling table instead of tandem vs PyTorch")
    parser.add_argument("--baseline", default="1gpu", help="label of the 1-GPU row for --scaling")
    parser.add_argument("--check-loss", type=float, default=None,
                        help="fail unless every final loss is within 10%% of this value (smoke runs: ln(vocab))")
    args = parser.parse_args()
    rows = load(args.results)
    lines, problems = scaling_table(rows, args.baseline) if args.scaling else single_device_table(rows, args.check_loss)
    print("\n".join(lines))
    if problems:
        print("\n".join("bench_table.py: " + p for p in problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
