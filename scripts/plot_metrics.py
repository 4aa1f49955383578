#!/usr/bin/env python3
"""Draws curves from a run's metrics.jsonl as a self-contained SVG (no plotting library).

  scripts/plot_metrics.py runs/tiny_moe/metrics.jsonl --out docs/images/loss_tiny_moe.svg \\
      --title "tiny_moe: training loss" --hline 3.32 "unigram entropy"

Plots `loss` against `step`, plus every other field given with --field (e.g. eval_loss, drawn
where present), and optional horizontal reference lines. Losses (nats per token) share the top
panel; any other field (lr, grad_norm, tokens_per_s, ...) gets a panel of its own below, with its
own axis. A step that goes back (a restarted run appended to the same file) starts a new segment
instead of a line jumping back. Uses only the standard library, so the project renders its own
pictures on any machine with python3.
"""
import argparse
import json
import math
import sys

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50
COLORS = ["#1f6fb4", "#e07b00", "#2a9d3a", "#c0392b", "#7d4fb3"]


def nice_ticks(low, high, count=6):
    """Round tick values covering [low, high]."""
    span = high - low if high > low else 1.0
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first, last = math.floor(low / step), math.ceil(high / step)
    return [round(i * step, 10) for i in range(first, last + 1)]


LOSS_FIELDS = {"loss", "lm_loss", "mtp_loss", "aux_loss", "eval_loss"}
PANEL_HEIGHT = 160  # each panel below the losses


def segments(points):
    """Splits (step, value) points where the step goes back: each piece is one run's stretch."""
    pieces = [[]]
    for x, y in points:
        if pieces[-1] and x <= pieces[-1][-1][0]:
            pieces.append([])
        pieces[-1].append((x, y))
    return pieces


def draw_panel(out, top, height, x_ticks, series, hlines, unit, first_color):
    """One axis box at y = top: grid, ticks, the series (each in segments) and reference lines."""
    ys = [y for points in series.values() for _, y in points] + [v for v, _ in hlines]
    y_ticks = nice_ticks(min(ys), max(ys), count=6 if height > 200 else 3)
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]
    bottom = top + height

    def px(x):
        return LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)

    def py(y):
        return bottom - (y - y0) / ((y1 - y0) or 1.0) * height

    for t in x_ticks:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{bottom}" stroke="#e5e5e5"/>')
    for t in y_ticks:
        out.append(f'<line x1="{LEFT}" y1="{py(t):.1f}" x2="{WIDTH - RIGHT}" y2="{py(t):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{height}" fill="none" '
               f'stroke="#444"/>')
    out.append(f'<text transform="translate(18 {top + height / 2}) rotate(-90)" text-anchor="middle">{unit}</text>')
    for value, label in hlines:
        out.append(f'<line x1="{LEFT}" y1="{py(value):.1f}" x2="{WIDTH - RIGHT}" y2="{py(value):.1f}" '
                   f'stroke="#888" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{WIDTH - RIGHT - 6}" y="{py(value) + 16:.1f}" text-anchor="end" fill="#555">'
                   f'{label} ({value:g})</text>')
    for i, (name, points) in enumerate(series.items()):
        color = COLORS[(first_color + i) % len(COLORS)]
        pieces = segments(points)
        path = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}"
                        for piece in pieces for j, (x, y) in enumerate(piece))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(points) < 20:
            out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in points)
        last = points[-1]
        restarts = f", {len(pieces) - 1} restart(s)" if len(pieces) > 1 else ""
        out.append(f'<text x="{WIDTH - RIGHT - 10}" y="{top + 18 + 16 * i}" text-anchor="end" fill="{color}">'
                   f'{name}: {last[1]:.4g} at step {last[0]}{restarts}</text>')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics")
    parser.add_argument("--out", required=True)
    parser.add_argument("--field", action="append", default=[], help="more fields to draw (default: loss)")
    parser.add_argument("--title", default="")
    parser.add_argument("--hline", nargs=2, action="append", default=[], metavar=("VALUE", "LABEL"))
    args = parser.parse_args()
    fields = ["loss"] + [f for f in args.field if f != "loss"]

    rows = [json.loads(line) for line in open(args.metrics) if line.strip()]
    series = {f: [(r["step"], r[f]) for r in rows if f in r and r[f] is not None] for f in fields}
    series = {f: points for f, points in series.items() if points}
    if "loss" not in series:
        sys.exit(f"{args.metrics}: no 'loss' values")
    hlines = [(float(v), label) for v, label in args.hline]
    losses = {f: p for f, p in series.items() if f in LOSS_FIELDS}
    others = {f: p for f, p in series.items() if f not in LOSS_FIELDS}
    height = HEIGHT + len(others) * (PANEL_HEIGHT + 20)
    x_ticks = nice_ticks(0, max(x for points in series.values() for x, _ in points))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    if args.title:
        out.append(f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{args.title}</text>')
    draw_panel(out, TOP, HEIGHT - TOP - BOTTOM, x_ticks, losses, hlines, "nats / token", 0)
    top = HEIGHT - BOTTOM + 20
    for i, (name, points) in enumerate(others.items()):
        draw_panel(out, top, PANEL_HEIGHT, x_ticks, {name: points}, [], name, len(losses) + i)
        top += PANEL_HEIGHT + 20
    x0, x1 = x_ticks[0], x_ticks[-1]
    for t in x_ticks:
        x = LEFT + (t - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
        out.append(f'<text x="{x:.1f}" y="{top - 2}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{top + 14}" text-anchor="middle">step</text>')
    out.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {args.out}: {', '.join(f'{n} ({len(p)} points)' for n, p in series.items())}")


if __name__ == "__main__":
    main()
