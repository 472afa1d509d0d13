"""The figures of `mlgym analyze`, each as PNG and SVG: a run's communication graph and its
timeline (drawn on agents/analyze/canvas.py: fast enough for the 2 s target); for a folder of
runs, score against tokens and against wall clock by team design (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlgym.agents.analyze.canvas import Canvas
from mlgym.agents.analyze.metrics import Analysis
from mlgym.files import atomic_write

ROLE_COLOURS = [
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
]
STATE_COLOURS = {"alive": "#4c72b0", "waiting": "#d9d9d9", "blocked": "#f2b134"}


def _figure(width: float, height: float, **margins: float) -> tuple[Any, Any]:
    """A figure and its axes, without pyplot (no GUI backend, no global figure list: faster
    to import, nothing to close), with fixed margins (a layout engine draws everything twice:
    `mlgym analyze` must stay within 2 s on a 10,000-event run)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(**{"left": 0.1, "right": 0.97, "bottom": 0.12, "top": 0.9, **margins})
    return fig, fig.subplots()


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    import matplotlib

    paths = []
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: smaller and faster
        for ext in ("png", "svg"):
            p = out / f"{stem}.{ext}"
            fig.savefig(p, dpi=110 if ext == "png" else None)
            paths.append(p)
    return paths


def _tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} B"


def comm_graph(a: Analysis, out: Path) -> list[Path]:
    """Members on a circle (size: tokens; colour: role), one arrow per direction of each
    edge (width: messages), labelled with the count and the bytes."""
    names = [n for n in a.members if n != "supervisor"]
    roles = list(dict.fromkeys(a.members[n].role for n in names))
    colour = {r: ROLE_COLOURS[i % len(ROLE_COLOURS)] for i, r in enumerate(roles)}
    c = Canvas(680, 600)
    cx, cy, radius = 340, 320, 190
    n = max(len(names), 1)
    angle = {m: math.pi / 2 - 2 * math.pi * i / n for i, m in enumerate(names)}
    pos = {m: (cx + radius * math.cos(t), cy - radius * math.sin(t)) for m, t in angle.items()}
    if n == 1 and names:
        pos = {names[0]: (cx, cy)}
    tokens = max((a.members[m].tokens for m in names), default=1) or 1
    size = {m: 20 + 20 * a.members[m].tokens / tokens for m in names}
    top = max((e["count"] for e in a.edges.values()), default=1)
    labels = []
    for (s, r), e in a.edges.items():
        if s not in pos or r not in pos:
            continue
        mid = c.curve(pos[s], pos[r], 0.12, width=1.0 + 4.0 * e["count"] / top, colour="#6b6b6b",
                      shrink1=size[s] + 3, shrink2=size[r] + 3)
        labels.append((mid, f"{e['count']} / {_kb(e['bytes'])}"))
    for (x, y), text in labels:  # over every curve
        c.text(x, y, text, size=9, colour="#333333", box=True)
    for m, (x, y) in pos.items():
        mem = a.members[m]
        c.circle(x, y, size[m], colour[mem.role])
        dx, dy = (x - cx) / radius, (y - cy) / radius
        off = size[m] + 6
        c.text(x + dx * off, y + dy * off if n > 1 else y + off, f"{m}\n{mem.role}, "
               f"{_tokens(mem.tokens)} tokens", size=10,
               anchor="middle" if abs(dx) < 0.3 else ("start" if dx > 0 else "end"),
               baseline="middle" if abs(dy) < 0.3 and n > 1 else ("bottom" if dy < 0 else "top"))
    msgs = sum(e["count"] for e in a.edges.values())
    c.text(cx, 22, f"{a.team or 'team'} on {a.task}: {msgs} messages "
           f"({_kb(sum(e['bytes'] for e in a.edges.values()))})", size=13)
    return _write(c, out, "comm_graph")


def timeline(a: Analysis, out: Path) -> list[Path]:
    """One row per member: alive (blue), idle waiting for a message (grey), blocked in `wait`
    (amber); validations as triangles (filled: an improvement), the final submission as a star."""
    names = [n for n in a.members if n in a.intervals]
    row_h = 34
    width = 820
    left = 24 + 7 * max((len(n) for n in names), default=4)
    right, top = width - 20, 52
    height = top + row_h * max(len(names), 1) + 56
    end = max([e for spans in a.intervals.values() for _, e, _ in spans] + [1e-9])
    scale = (right - left) / end
    c = Canvas(width, height)
    c.text(width / 2, 16, "who did what when (triangles: validations authored, filled = an "
           "improvement; star: the final submission)", size=11)
    for i, (state, label) in enumerate((("alive", "working"), ("waiting", "idle (no work)"),
                                        ("blocked", "blocked in wait"))):
        x = left + 150 * i
        c.rect(x, 30, 14, 10, STATE_COLOURS[state])
        c.text(x + 20, 35, label, size=10, anchor="start")
    row = {m: top + row_h * i + row_h / 2 for i, m in enumerate(names)}
    for m, y in row.items():
        c.text(left - 8, y, m, size=10, anchor="end")
        for state in ("alive", "waiting", "blocked"):
            for b, e, k in a.intervals[m]:
                if k == state and e > b:
                    c.rect(left + b * scale, y - 11, max((e - b) * scale, 0.5), 22,
                           STATE_COLOURS[state])
    for v in a.validations:
        if v.author in row:
            c.marker(left + v.t_s * scale, row[v.author], "^", 6,
                     "#2a9d3a" if v.improved else "white", "#2a9d3a")
    f = a.final_submission or {}
    if f.get("author") in row:
        c.marker(left + f["t_s"] * scale, row[f["author"]], "*", 10, "#c44e52", "#7a1f22")
    axis = top + row_h * len(names) + 6
    c.line(left, axis, right, axis)
    step = _nice_step(end)
    t = 0.0
    while t <= end + 1e-9:
        x = left + t * scale
        c.line(x, axis, x, axis + 5)
        c.text(x, axis + 8, f"{t:g}", size=10, baseline="top")
        t += step
    c.text((left + right) / 2, axis + 34, "seconds since the run started", size=11)
    return _write(c, out, "timeline")


def _nice_step(span: float) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about six ticks."""
    raw = span / 6 if span > 0 else 1.0
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _write(c: Canvas, out: Path, stem: str) -> list[Path]:
    svg, png = out / f"{stem}.svg", out / f"{stem}.png"
    c.png(png)
    atomic_write(svg, c.svg())
    return [png, svg]


def design_scatter(
    rows: list[dict[str, Any]], out: Path, x: str, xlabel: str, stem: str, normalised: bool
) -> list[Path]:
    """Score (or baseline-normalised score) against `x`, one colour per team design."""
    fig, ax = _figure(6.4, 4.4, left=0.12, bottom=0.12, top=0.92)
    designs = sorted({r["design"] for r in rows})
    for i, d in enumerate(designs):
        pts = [
            (r[x], r["normalised" if normalised else "final"])
            for r in rows
            if r["design"] == d
            and r.get(x) is not None
            and r.get("normalised" if normalised else "final") is not None
        ]
        if pts:
            ax.scatter(*zip(*pts), label=d, color=ROLE_COLOURS[i % len(ROLE_COLOURS)], alpha=0.85)
    if normalised:
        ax.axhline(1.0, color="#888888", linestyle="--", linewidth=1, label="baseline")
    else:
        base = next((r["baseline"] for r in rows if r.get("baseline") is not None), None)
        if base is not None:
            ax.axhline(base, color="#888888", linestyle="--", linewidth=1, label="baseline")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final score / baseline" if normalised else "final score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"score against {xlabel} by team design", fontsize=10)
    return _save(fig, out, stem)
