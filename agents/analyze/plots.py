"""The figures of `mlgym analyze`, each as PNG and SVG: a run's communication graph and its
timeline; for a folder of runs, score against tokens and against wall clock by team design."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlgym.agents.analyze.metrics import Analysis

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
    from matplotlib.patches import FancyArrowPatch

    names = [n for n in a.members if n != "supervisor"]
    roles = list(dict.fromkeys(a.members[n].role for n in names))
    colour = {r: ROLE_COLOURS[i % len(ROLE_COLOURS)] for i, r in enumerate(roles)}
    fig, ax = _figure(6.4, 5.6, left=0.02, right=0.98, bottom=0.02, top=0.92)
    n = max(len(names), 1)
    pos = {
        m: (
            math.cos(math.pi / 2 - 2 * math.pi * i / n),
            math.sin(math.pi / 2 - 2 * math.pi * i / n),
        )
        for i, m in enumerate(names)
    }
    if n == 1:
        pos = {names[0]: (0.0, 0.0)} if names else {}
    top = max((e["count"] for e in a.edges.values()), default=1)
    tokens = max((a.members[m].tokens for m in names), default=1) or 1
    for (s, r), e in a.edges.items():
        if s not in pos or r not in pos:
            continue
        arrow = FancyArrowPatch(
            pos[s],
            pos[r],
            arrowstyle="-|>",
            mutation_scale=14,
            connectionstyle="arc3,rad=0.18",
            shrinkA=26,
            shrinkB=26,
            linewidth=0.8 + 3.5 * e["count"] / top,
            color="#555555",
            alpha=0.8,
        )
        ax.add_patch(arrow)
        (x1, y1), (x2, y2) = pos[s], pos[r]
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        dx, dy = x2 - x1, y2 - y1
        ax.text(  # on the arc: a quadratic curve's middle is half its bend from the chord's
            mx + 0.09 * dy,
            my - 0.09 * dx,
            f"{e['count']} / {_kb(e['bytes'])}",
            fontsize=7,
            ha="center",
            va="center",
            color="#333333",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    for m, (x, y) in pos.items():
        mem = a.members[m]
        size = 900 + 1800 * (mem.tokens / tokens)
        ax.scatter([x], [y], s=size, color=colour[mem.role], zorder=3, edgecolors="white")
        r = math.sqrt(size / math.pi) + 4  # the label outside the circle, away from the centre
        ax.annotate(
            f"{m}\n{mem.role}, {_tokens(mem.tokens)} tokens",
            (x, y),
            xytext=(r * x, r * y) if n > 1 else (0, -r),
            textcoords="offset points",
            ha="center" if abs(x) < 0.3 or n == 1 else ("left" if x > 0 else "right"),
            va="center" if abs(y) < 0.3 and n > 1 else ("bottom" if y > 0 and n > 1 else "top"),
            fontsize=8,
            zorder=4,
        )
    msgs = sum(e["count"] for e in a.edges.values())
    ax.set_title(
        f"{a.team or 'team'} on {a.task}: {msgs} messages "
        f"({_kb(sum(e['bytes'] for e in a.edges.values()))})",
        fontsize=10,
    )
    ax.set_xlim(-1.9, 1.9)
    ax.set_ylim(-1.7, 1.7)
    ax.set_aspect("equal")
    ax.axis("off")
    return _save(fig, out, "comm_graph")


def timeline(a: Analysis, out: Path) -> list[Path]:
    """One row per member: alive (blue), idle waiting for a message (grey), blocked in `wait`
    (amber); validations as triangles (filled: an improvement), the final submission as a star."""
    names = [n for n in a.members if n in a.intervals]
    height = 1.2 + 0.45 * max(len(names), 1)
    left = min(0.4, 0.03 + 0.011 * max((len(n) for n in names), default=4))
    fig, ax = _figure(7.5, height, left=left, right=0.98, bottom=0.55 / height + 0.02,
                      top=1 - 0.35 / height)
    for i, m in enumerate(names):
        for state in ("alive", "waiting", "blocked"):
            spans = [(b, e - b) for b, e, k in a.intervals[m] if k == state and e > b]
            if spans:
                ax.broken_barh(
                    spans,
                    (i - 0.35, 0.7),
                    color=STATE_COLOURS[state],
                    label=state if i == 0 or state != "alive" else None,
                )
    row = {m: i for i, m in enumerate(names)}
    for improved in (False, True):  # one scatter per kind: a long run has hundreds
        pts = [
            (v.t_s, row[v.author])
            for v in a.validations
            if v.author in row and v.improved == improved
        ]
        if pts:
            ax.scatter(
                *zip(*pts),
                marker="^",
                s=40,
                zorder=3,
                color="#2a9d3a" if improved else "white",
                edgecolors="#2a9d3a",
            )
    f = a.final_submission or {}
    if f.get("author") in row:
        ax.scatter([f["t_s"]], [row[f["author"]]], marker="*", s=140, color="#c44e52", zorder=4)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("seconds since the run started")
    ax.set_title(
        "who did what when (triangles: validations authored, filled = improvement; "
        "star: the final)",
        fontsize=8,
    )
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    names_legend = {"alive": "working", "waiting": "idle (no work)", "blocked": "blocked in wait"}
    ax.legend(
        [seen[k] for k in seen],
        [names_legend.get(k, k) for k in seen],
        fontsize=7,
        loc="upper right",
    )
    ax.invert_yaxis()
    return _save(fig, out, "timeline")


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
