#!/usr/bin/env python3
"""Fraction of all-to-all time hidden under compute, from Chrome trace files (stdlib only).

Reads complete events ("ph": "X", with "ts" and "dur" in microseconds) from one or more trace
files (one per rank). Events whose name matches --comm (default: all_to_all, dispatch, combine)
are communication; every other complete event is compute. Per rank (file), the hidden time is the
part of the union of communication intervals that lies inside the union of compute intervals;
the result is sum(hidden) / sum(communication) over all files. Prints one JSON line
{"a2a_ms": ..., "hidden_ms": ..., "a2a_hidden": fraction or null}; null when no file holds a
communication event (the trace did not record the exchanges, e.g. an executor timeline of
whole F/B ops only).

With --cat kernel only device kernels count (Kineto traces of `tandem train` with
logging.trace_kernels, traces/stepN/kernels/rankR.json): communication = the NCCL kernels the
--comm pattern names (NCCL runs an all-to-all as grouped send/receive: ncclDevKernel_SendRecv),
compute = every other kernel of that process (--not-compute nccl leaves out the other
collectives' kernels), so the result is the part of the all-to-all kernels' time during which
the same GPU also ran this rank's compute kernels.
"""
import argparse
import json
import re


def union(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def covered(intervals, cover):
    """Length of `intervals` (merged) lying inside `cover` (merged)."""
    total, j = 0.0, 0
    for start, end in intervals:
        while j < len(cover) and cover[j][1] <= start:
            j += 1
        k = j
        while k < len(cover) and cover[k][0] < end:
            total += min(end, cover[k][1]) - max(start, cover[k][0])
            k += 1
    return total


def events(path, category=None):
    with open(path) as f:
        data = json.load(f)
    items = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in items if e.get("ph") == "X" and "dur" in e and (category is None or e.get("cat") == category)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--comm", default=r"all_to_all|alltoall|dispatch|combine",
                        help="regex naming communication events")
    parser.add_argument("--cat", default=None, help="only events of this category (e.g. kernel: device kernels)")
    parser.add_argument("--not-compute", default=None,
                        help="regex naming events that are neither communication nor compute (e.g. nccl: the "
                             "other collectives' kernels)")
    args = parser.parse_args()
    comm_name = re.compile(args.comm, re.IGNORECASE)
    neither = re.compile(args.not_compute, re.IGNORECASE) if args.not_compute else None
    comm_total = hidden_total = 0.0
    for path in args.traces:
        comm, compute = [], []
        for e in events(path, args.cat):
            interval = (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
            name = str(e.get("name", ""))
            if comm_name.search(name):
                comm.append(interval)
            elif not (neither and neither.search(name)):
                compute.append(interval)
        comm_union = union(comm)
        comm_total += sum(end - start for start, end in comm_union)
        hidden_total += covered(comm_union, union(compute))
    print(json.dumps({"a2a_ms": comm_total / 1e3, "hidden_ms": hidden_total / 1e3,
                      "a2a_hidden": hidden_total / comm_total if comm_total > 0 else None}))


if __name__ == "__main__":
    main()
