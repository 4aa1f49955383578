#!/usr/bin/env python3
"""scripts/plot_metrics.py on a metrics.jsonl with a restart: the restarted stretch is a new path
segment (no line back to step 1), and lr and grad_norm get panels of their own below the losses.
Usage: plot_metrics_test.py SOURCE_DIR"""
import os
import re
import subprocess
import sys
import tempfile

source = sys.argv[1]
with tempfile.TemporaryDirectory() as tmp:
    metrics = os.path.join(tmp, "metrics.jsonl")
    with open(metrics, "w") as f:
        for step, loss in [(1, 5.0), (2, 4.0), (3, 3.5), (1, 5.1), (2, 4.2)]:  # died after 3, restarted
            f.write(f'{{"step":{step},"loss":{loss},"lr":{0.1 * step},"grad_norm":{3 - step / 2}}}\n')
    out = os.path.join(tmp, "plot.svg")
    subprocess.run([sys.executable, os.path.join(source, "scripts", "plot_metrics.py"), metrics, "--out", out,
                    "--field", "lr", "--field", "grad_norm"], check=True, capture_output=True)
    svg = open(out).read()
paths = re.findall(r'<path d="([^"]*)"', svg)
failures = []
if len(paths) != 3:
    failures.append(f"expected 3 curves (loss, lr, grad_norm), got {len(paths)}")
for d in paths:
    if d.count("M") != 2:
        failures.append(f"a restarted series must be 2 segments (2 moves), got {d.count('M')}: {d}")
axes = re.findall(r'rotate\(-90\)" text-anchor="middle">([^<]*)<', svg)
if axes != ["nats / token", "lr", "grad_norm"]:
    failures.append(f"expected the axes nats / token, lr, grad_norm; got {axes}")
if "1 restart(s)" not in svg:
    failures.append("the legend does not mention the restart")
for failure in failures:
    print("FAIL:", failure)
print("ok: restarts drawn as segments, lr and grad_norm on their own axes" if not failures else "")
sys.exit(1 if failures else 0)
