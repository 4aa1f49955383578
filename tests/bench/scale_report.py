#!/usr/bin/env python3
"""Results and tables of run_pipeline_scale_bench.sh (standard library only).

`result`: one JSON line for one `tandem train` run: tokens/s (median of metrics.jsonl's
tokens_per_s over the steps after --skip), the per-rank measured and simulated bubble (from the
table `tandem simulate --measured` printed, --compare), and the expert all-to-all statistics of
the traced step (from traces/stepN/exchanges/rank*.json, --exchanges; see `exchange_stats`).
`exchanges`: the all-to-all statistics of one traced step as a JSON line.
`chrome`: one Chrome trace of a traced step's exchanges on every rank (see `exchange_chrome_trace`).
`kernels`: a Kineto trace of `tandem train` (logging.trace_kernels) cut down to its device side.
`table`: one Markdown table per part (a: pipeline schedules, b: expert all-to-all, c: combined
layout) from result lines, plus a check line per scaling rule (docs/benchmarks.md) that the numbers allow.

Definitions (docs/benchmarks.md, "Pipeline and expert parallelism at scale"):
- exchange time: sum over the dispatch/combine all-to-alls of a rank of (wait returned - issued).
- hidden: the part of [posted, wait began) of an exchange during which its rank was not itself
  blocked in another exchange's wait, i.e. the other half of an overlapped DualPipe pair ran.
  hidden fraction = hidden time / exchange time, summed over ranks.
- achieved bandwidth (GB/s per rank) = bytes sent to the other ranks / exchange time; meaningful
  for exchanges nobody overlaps (ep over dp, pp = 1), where the span is the transfer itself.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

from trace_overlap import union  # merged intervals (this directory is on sys.path when run as a script)

EXCHANGE_LABELS = ("dispatch", "combine")


def uncovered(start, end, cover):
    """Length of [start, end) outside the merged intervals `cover`."""
    length = max(0.0, end - start)
    for c_start, c_end in cover:
        length -= max(0.0, min(end, c_end) - max(start, c_start))
    return max(0.0, length)


def exchange_stats(directory):
    """All-to-all statistics over every rank file of one traced step, or None without files."""
    files = sorted(glob.glob(os.path.join(directory, "rank*.json")))
    if not files:
        return None
    count = 0
    exchange_ms = hidden_ms = blocked_ms = 0.0
    bytes_sent = 0
    for path in files:
        with open(path) as f:
            spans = [e["args"] | {"label": e["name"]} for e in json.load(f)["traceEvents"] if e["cat"] == "exchange"]
        blocked = union([(s["wait_begin_ms"], s["end_ms"]) for s in spans])
        for s in spans:
            if s["label"] not in EXCHANGE_LABELS:
                continue
            count += 1
            exchange_ms += s["end_ms"] - s["issued_ms"]
            blocked_ms += s["end_ms"] - s["wait_begin_ms"]
            hidden_ms += uncovered(s["posted_ms"], s["wait_begin_ms"], blocked)
            bytes_sent += s["bytes_sent"]
    return {
        "ranks": len(files), "exchanges": count, "bytes_sent": bytes_sent,
        "bytes_per_exchange": bytes_sent / count if count else 0, "exchange_ms": exchange_ms,
        "blocked_ms": blocked_ms, "hidden_ms": hidden_ms,
        "hidden": hidden_ms / exchange_ms if exchange_ms > 0 else None,
        "gbps": bytes_sent / exchange_ms / 1e6 if exchange_ms > 0 else None,
    }


ROW = re.compile(r"^\s+(\d+|all)\s+([\d.]+)\s+([\d.]*)\s+([\d.]+)%\s+([\d.]+)\s+([\d.]*)\s+([\d.]+)%\s*$")


def parse_compare(path):
    """Per-rank and overall (measured, simulated) bubble fractions from `simulate --measured`'s table."""
    ranks, overall = [], None
    with open(path) as f:
        for line in f:
            m = ROW.match(line)
            if not m:
                continue
            pair = {"measured": float(m.group(4)) / 100, "simulated": float(m.group(7)) / 100,
                    "measured_ms": float(m.group(2)), "simulated_ms": float(m.group(5))}
            if m.group(1) == "all":
                overall = pair
            else:
                ranks.append(pair | {"rank": int(m.group(1))})
    return ranks, overall


def median_tokens_per_s(metrics_path, skip):
    """(median tokens/s over metrics.jsonl's steps after the first `skip`, steps counted); all
    steps when there are no more than `skip`."""
    with open(metrics_path) as f:
        steps = [json.loads(line) for line in f if line.strip()]
    timed = [s["tokens_per_s"] for s in steps[skip:]] or [s["tokens_per_s"] for s in steps]
    return statistics.median(timed), len(timed)


def exchange_chrome_trace(directory):
    """One Chrome trace (Perfetto opens it) of a traced step's exchanges on every rank: the rank
    files' events (pid = rank; tracks `exchange` = issued..done, `blocked` = waiting), with each
    rank named; None without files."""
    files = sorted(glob.glob(os.path.join(directory, "rank*.json")))
    if not files:
        return None
    events = []
    for path in files:
        with open(path) as f:
            data = json.load(f)
        events.append({"name": "process_name", "ph": "M", "pid": data["rank"], "args": {"name": f"rank {data['rank']}"}})
        events += data["traceEvents"]
    return {"displayTimeUnit": "ms", "traceEvents": events}


def device_events_only(path):
    """A Kineto Chrome trace cut down to its device side (kernels, copies, memsets, and the
    metadata naming processes and streams), which is a fraction of the whole trace's size."""
    with open(path) as f:
        data = json.load(f)
    keep = ("kernel", "gpu_memcpy", "gpu_memset")
    data["traceEvents"] = [e for e in data["traceEvents"] if e.get("cat") in keep or e.get("ph") == "M"]
    return data


def cmd_result(args):
    row = {"part": args.part, "label": args.label, "ranks": args.ranks, "schedule": args.schedule,
           "layout": args.layout}
    if args.error:
        row["error"] = args.error
        print(json.dumps(row))
        return
    row["tokens_per_s"], row["steps_timed"] = median_tokens_per_s(args.metrics, args.skip)
    if args.compare and os.path.exists(args.compare):
        row["bubble_ranks"], row["bubble"] = parse_compare(args.compare)
    if args.svg:
        row["svg"] = args.svg
    if args.exchanges:
        row["a2a"] = exchange_stats(args.exchanges)
    if args.alltoall_bench and os.path.exists(args.alltoall_bench):
        with open(args.alltoall_bench) as f:
            lines = [json.loads(line) for line in f if line.strip().startswith("{")]
        if lines:
            row["backend_a2a"] = lines[-1]
    print(json.dumps(row))


def pct(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def table_a(rows, checks):
    lines = ["| pp | schedule | tokens/s | bubble measured | bubble simulated | measured / simulated | per rank (measured / simulated) | picture |",
             "|---:|---|---:|---:|---:|---:|---|---|"]
    by_pp = {}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['ranks']} | {r['schedule']} | failed: {r['error']} | | | | | |")
            continue
        b = r.get("bubble") or {}
        per_rank = " · ".join(f"{100 * x['measured']:.0f}/{100 * x['simulated']:.0f}" for x in r.get("bubble_ranks", []))
        ratio = b["measured"] / b["simulated"] if b.get("simulated") else None
        lines.append(f"| {r['ranks']} | {r['schedule']} | {r['tokens_per_s']:,.0f} | {pct(b.get('measured'))} | "
                     f"{pct(b.get('simulated'))} | {'-' if ratio is None else f'{ratio:.2f}'} | {per_rank} | "
                     f"{os.path.basename(r.get('svg', '')) or '-'} |")
        by_pp.setdefault(r["ranks"], {})[r["schedule"]] = b
    for pp, runs in sorted(by_pp.items()):
        dual, base = runs.get("dualpipe") or {}, runs.get("1f1b") or {}
        if dual.get("simulated"):
            gap = abs(dual["measured"] - dual["simulated"])
            within = gap <= 0.1 * dual["simulated"]
            checks.append(f"pp{pp}: DualPipe measured bubble {pct(dual['measured'])} vs simulated "
                          f"{pct(dual['simulated'])}: {'within' if within else 'NOT within'} 10% of it (relative; "
                          f"{100 * gap:.1f} points apart)")
        if dual.get("measured") is not None and base.get("measured") is not None:
            lower = dual["measured"] < base["measured"]
            checks.append(f"pp{pp}: DualPipe measured bubble {pct(dual['measured'])} "
                          f"{'<' if lower else 'NOT <'} 1F1B's {pct(base['measured'])}")
    return lines


def table_b(rows, checks):
    lines = ["| layout | ranks | exchanges | KiB sent / exchange | exchange time (ms, all ranks) | achieved GB/s per rank | "
             "backend all-to-all GB/s (same size) | achieved / backend | hidden under compute |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['ranks']} | failed: {r['error']} | | | | | | |")
            continue
        a = r.get("a2a")
        if not a:
            lines.append(f"| {r['label']} | {r['ranks']} | no exchange trace | | | | | | |")
            continue
        bench = r.get("backend_a2a")
        ratio = a["gbps"] / bench["gbps"] if bench and a.get("gbps") and bench.get("gbps") else None
        achieved = "-" if a["gbps"] is None else f"{a['gbps']:.3f}"
        backend = "-" if not bench else f"{bench['gbps']:.3f}"
        lines.append(f"| {r['label']} | {r['ranks']} | {a['exchanges']} | {a['bytes_per_exchange'] / 1024:,.1f} | "
                     f"{a['exchange_ms']:,.1f} | {achieved} | {backend} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} | {pct(a['hidden'])} |")
        if r.get("schedule") == "dualpipe" and a.get("hidden") is not None:
            checks.append(f"{r['label']}: {pct(a['hidden'])} of the all-to-all time hidden under the paired micro-batch")
    return lines


def table_c(rows, checks):
    base = [r for r in rows if r["label"] == "1rank" and "error" not in r]
    lines = ["| layout | ranks | schedule | tokens/s | scaling efficiency vs 1 rank | vs the same layout with 1f1b |",
             "|---|---:|---|---:|---:|---:|"]
    if not base:
        checks.append("part c: no 1-rank baseline, no scaling efficiency")
    base_tps = base[0]["tokens_per_s"] if base else None
    by_layout = {(r["layout"], r["schedule"]): r for r in rows if "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['layout']} | {r['ranks']} | {r['schedule']} | failed: {r['error']} | | |")
            continue
        eff = r["tokens_per_s"] / (r["ranks"] * base_tps) if base_tps else None
        other = by_layout.get((r["layout"], "1f1b"))
        vs = r["tokens_per_s"] / other["tokens_per_s"] if other and r["schedule"] != "1f1b" else None
        lines.append(f"| {r['layout']} | {r['ranks']} | {r['schedule']} | {r['tokens_per_s']:,.0f} | {pct(eff)} | "
                     f"{'-' if vs is None else f'{vs:.2f}x'} |")
    return lines


def cmd_table(args):
    rows = []
    for path in args.results:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip().startswith("{")]
    checks = []
    out = []
    for part, title, build in (("a", "Pipeline schedules (measured vs simulated bubble)", table_a),
                               ("b", "Expert all-to-all inside training", table_b),
                               ("c", "Combined layout scaling", table_c)):
        selected = [r for r in rows if r["part"] == part]
        if selected:
            out += [f"### {title}", ""] + build(selected, checks) + [""]
    if checks:
        out += ["Checks:", ""] + [f"- {c}" for c in checks] + [""]
    print("\n".join(out))
    if any("error" in r for r in rows):
        print("scale_report.py: some runs failed (see the rows marked failed and their logs)", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("result", help="one JSON line for one run")
    r.add_argument("--part", required=True, choices=["a", "b", "c"])
    r.add_argument("--label", required=True)
    r.add_argument("--ranks", type=int, required=True)
    r.add_argument("--schedule", default="-")
    r.add_argument("--layout", default="-")
    r.add_argument("--metrics")
    r.add_argument("--skip", type=int, default=2)
    r.add_argument("--compare", help="stdout of `tandem simulate --measured`")
    r.add_argument("--svg")
    r.add_argument("--exchanges", help="traces/stepN/exchanges of the run")
    r.add_argument("--alltoall-bench", help="output of tandem_alltoall_bench at the run's message size")
    r.add_argument("--error", help="the run failed: record this instead")
    e = sub.add_parser("exchanges", help="all-to-all statistics of one traced step")
    e.add_argument("directory")
    c = sub.add_parser("chrome", help="one Chrome trace of a traced step's exchanges on every rank")
    c.add_argument("directory")
    c.add_argument("--out", required=True)
    k = sub.add_parser("kernels", help="a Kineto trace cut down to its device kernels")
    k.add_argument("trace")
    k.add_argument("--out", required=True)
    t = sub.add_parser("table", help="Markdown tables from result lines")
    t.add_argument("results", nargs="+")
    args = parser.parse_args()
    if args.command == "result":
        cmd_result(args)
    elif args.command == "exchanges":
        print(json.dumps(exchange_stats(args.directory)))
    elif args.command == "kernels":
        with open(args.out, "w") as f:
            json.dump(device_events_only(args.trace), f)
    elif args.command == "chrome":
        trace = exchange_chrome_trace(args.directory)
        if trace is None:
            sys.exit(f"scale_report.py chrome: no rank*.json in {args.directory}")
        with open(args.out, "w") as f:
            json.dump(trace, f)
    else:
        cmd_table(args)


if __name__ == "__main__":
    main()
