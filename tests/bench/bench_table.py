#!/usr/bin/env python3
"""One Markdown table from benchmark JSON lines (standard library only).

Single device (run_gpu_bench.sh): files with one JSON line each from tandem_train_bench
("impl": "tandem") and its peers: reference_model.py ("impl": "pytorch"), and optionally
"torchtitan" and "megatron" runs (any other non-tandem impl works the same way). One row per
tandem label; each peer present gets its own columns: tokens/s, the tandem/peer ratio, MFU and
peak memory, and "<impl> imbalance" columns appear for the implementations whose lines carry
"imbalance" (expert load, max/mean). A peer line is paired with the tandem line of its own
"label", or of the tandem label it names in "compare_to" (a variant tandem ran for it, e.g. a
peer without MTP against "moe_1b_nomtp"). Each peer must agree with its tandem line on the
parameter count (the same architecture) and the tokens per step (the same batch), else this
exits non-zero: a ratio of different models means nothing.

Memory (run_gpu_bench.sh's recomputation runs, --memory): tandem lines carrying "recompute",
"peak_mem_gib" and "estimated_mem_gib" (check-config's estimate of the same job); a row per line
with the estimate's error relative to the measured peak, which must stay within 10%.

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


PEER_ORDER = ["pytorch", "torchtitan", "megatron"]
PEER_NAMES = {"tandem": "tandem", "pytorch": "PyTorch", "torchtitan": "torchtitan", "megatron": "Megatron"}
REQUIRED = ("label", "impl", "params", "tokens_per_step", "tokens_per_s", "final_loss")


def single_device_table(rows, check_loss):
    problems = []
    tandem, peers = {}, {}  # tandem: label -> row; peers: tandem label -> impl -> row
    for r in rows:
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            problems.append(f"a {r.get('impl', '?')} line labelled {r.get('label', '?')} lacks {', '.join(missing)}")
            continue
        if r["impl"] == "tandem":
            if r["label"] in tandem:
                problems.append(f"{r['label']}: two tandem lines")
            tandem[r["label"]] = r
    for r in rows:
        if any(k not in r for k in REQUIRED) or r["impl"] == "tandem":
            continue
        target = r.get("compare_to", r["label"])
        what = f"{r['impl']} {r['label']}" + (f" (compare_to {target})" if target != r["label"] else "")
        if target not in tandem:
            problems.append(f"{what}: no tandem line labelled {target} to compare with")
            continue
        if r["impl"] in peers.get(target, {}):
            problems.append(f"{what}: a second {r['impl']} line compared with tandem {target}")
        peers.setdefault(target, {})[r["impl"]] = r
        t = tandem[target]
        if r["params"] != t["params"]:
            hint = ("" if "compare_to" in r else
                    "; for a variant, add \"compare_to\" naming the tandem label of the same architecture")
            problems.append(f"{what}: {r['params']:,} parameters, tandem {target} has {t['params']:,} "
                            f"(differ by {r['params'] - t['params']:+,}){hint}")
        if r["tokens_per_step"] != t["tokens_per_step"]:
            problems.append(f"{what}: tokens per step differ ({t['tokens_per_step']} tandem vs {r['tokens_per_step']})")
    present = {impl for by_impl in peers.values() for impl in by_impl}
    impls = [i for i in PEER_ORDER if i in present] + sorted(present - set(PEER_ORDER))
    names = {i: PEER_NAMES.get(i, i) for i in ["tandem", *impls]}
    with_imbalance = [i for i in ["tandem", *impls]
                      if any("imbalance" in r for r in rows if r.get("impl") == i)]
    header = (["model", "device", "precision", "params", "tokens/step"] +
              [f"{names[i]} tok/s" for i in ["tandem", *impls]] + [f"tandem / {names[i]}" for i in impls] +
              [f"{names[i]} MFU" for i in ["tandem", *impls]] + [f"{names[i]} peak GiB" for i in ["tandem", *impls]] +
              [f"{names[i]} imbalance" for i in with_imbalance])
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]

    def num(r, key, f):
        return "-" if r is None or r.get(key) is None else f(r[key])

    notes = []
    for label, t in tandem.items():
        by_impl = peers.get(label, {})
        if not by_impl:
            problems.append(f"{label}: a tandem line and no peer (pytorch, torchtitan, megatron) to compare with")
            continue
        for r in [t, *by_impl.values()]:
            if not (math.isfinite(r["final_loss"]) and r["tokens_per_s"] > 0):
                problems.append(f"{label} {r['impl']}: loss {r['final_loss']}, {r['tokens_per_s']} tokens/s")
            elif check_loss is not None and abs(r["final_loss"] - check_loss) > 0.1 * check_loss:
                # Same vocabulary, random tokens, a few steps: every loss sits near ln(vocab).
                problems.append(f"{label} {r['impl']}: loss {r['final_loss']:.3f}, expected about {check_loss:.3f}")
        for i, r in by_impl.items():
            if r["label"] != label:
                notes.append(f"{names[i]} `{r['label']}` is compared with tandem `{label}` (compare_to).")
        row = {"tandem": t, **{i: by_impl.get(i) for i in impls}}
        cells = ([label, t.get("device", "-"), t.get("precision", "-"), f"{t['params'] / 1e6:,.1f}M",
                  f"{t['tokens_per_step']:,}"] +
                 [num(row[i], "tokens_per_s", fmt) for i in ["tandem", *impls]] +
                 [num(row[i], "tokens_per_s", lambda v: f"{t['tokens_per_s'] / v:.2f}" if v > 0 else "-")
                  for i in impls] +
                 [num(row[i], "mfu", lambda v: f"{100 * v:.1f}%") for i in ["tandem", *impls]] +
                 [num(row[i], "peak_mem_gib", lambda v: f"{v:.1f}") for i in ["tandem", *impls]] +
                 [num(row[i], "imbalance", lambda v: f"{v:.2f}") for i in with_imbalance])
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + notes
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


def memory_table(rows):
    lines = ["| run | recompute | tokens/s | MFU | measured peak GiB | estimated GiB | estimate vs peak |",
             "|---|---|---:|---:|---:|---:|---:|"]
    problems = []
    for r in rows:
        peak, estimate = r.get("peak_mem_gib"), r.get("estimated_mem_gib")
        if peak is None or estimate is None or peak <= 0:
            problems.append(f"{r.get('label')}: no peak_mem_gib/estimated_mem_gib (not a GPU tandem run?)")
            continue
        error = estimate / peak - 1.0
        lines.append(f"| {r['label']} | {r.get('recompute', 'none')} | {fmt(r['tokens_per_s'])} | "
                     f"{100 * r['mfu']:.1f}% | {peak:.2f} | {estimate:.2f} | {100 * error:+.1f}% |")
        if abs(error) > 0.10:
            problems.append(f"{r['label']}: the memory estimate {estimate:.2f} GiB is {100 * error:+.1f}% off the "
                            f"measured peak {peak:.2f} GiB (more than 10%)")
    return lines, problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="files holding one JSON result line each")
    parser.add_argument("--scaling", action="store_true", help="a scaling table instead of tandem vs its peers")
    parser.add_argument("--memory", action="store_true",
                        help="measured peak memory against check-config's estimate (recomputation runs)")
    parser.add_argument("--baseline", default="1gpu", help="label of the 1-GPU row for --scaling")
    parser.add_argument("--check-loss", type=float, default=None,
                        help="fail unless every final loss is within 10%% of this value (smoke runs: ln(vocab))")
    args = parser.parse_args()
    rows = load(args.results)
    if args.memory:
        lines, problems = memory_table(rows)
    elif args.scaling:
        lines, problems = scaling_table(rows, args.baseline)
    else:
        lines, problems = single_device_table(rows, args.check_loss)
    print("\n".join(lines))
    if problems:
        print("\n".join("bench_table.py: " + p for p in problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
