#!/usr/bin/env python3
"""Where one profiled training step spends its device time.

Reads Chrome traces written by `tandem_train_bench --profile` or `reference_model.py --profile`
(Kineto format: device kernels are events with cat "kernel", host ops cat "cpu_op") and prints,
per trace: the step's wall span on the device, the time at least one kernel ran (busy) and the
idle remainder, device time by kernel category (matrix multiply, attention, elementwise and
reductions, copies, communication, other) and the top kernels by total time. Categories are
chosen by kernel name; the point is to see what a change moves, not an exact taxonomy.

Usage: profile_summary.py TRACE.json [TRACE.json ...] [--top N]
"""
import argparse
import json
import re
from collections import defaultdict

CATEGORIES = [  # first match wins
    ("communication", re.compile(r"nccl", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|cudnn.*(mha|sdpa)", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|sm90_xmma|nvjet|cublas|matmul|grouped_mm|wgmma", re.I)),
    ("copy / cast", re.compile(r"copy|memcpy|memset|cast|fill", re.I)),
    ("optimizer", re.compile(r"adam|foreach|multi_tensor", re.I)),
    ("reduction", re.compile(r"reduce|norm|sum|softmax|nll|cross_entropy|log_softmax", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|unrolled|pointwise|index|gather|scatter", re.I)),
]


def category(name):
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def union_length(intervals):
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def summarize(path, top):
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        print(f"{path}: no device kernels in the trace (a CPU run?)")
        return
    spans = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in kernels]
    wall = max(stop for _, stop in spans) - min(start for start, _ in spans)
    busy = union_length(spans)
    by_category, by_name, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    for e in kernels:
        duration = float(e.get("dur", 0))
        by_category[category(e["name"])] += duration
        by_name[e["name"]] += duration
        counts[e["name"]] += 1
    kernel_total = sum(by_category.values())
    print(f"== {path}")
    print(f"device span {wall / 1e3:.2f} ms, busy {busy / 1e3:.2f} ms ({100 * busy / wall:.1f}%), "
          f"idle {(wall - busy) / 1e3:.2f} ms, {len(kernels)} kernels")
    print("| category | ms | share of kernel time |\n|---|---:|---:|")
    for label, duration in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {duration / 1e3:.2f} | {100 * duration / kernel_total:.1f}% |")
    print(f"\ntop {top} kernels:\n| ms | calls | category | kernel |\n|---:|---:|---|---|")
    for name, duration in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {duration / 1e3:.2f} | {counts[name]} | {category(name)} | {name[:110]} |")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.traces:
        summarize(path, args.top)


if __name__ == "__main__":
    main()
