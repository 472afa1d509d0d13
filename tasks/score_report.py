"""A scored report as Markdown, JSON, CSV tables and performance-profile plots."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

from mlgym.tasks.scoring import BASELINE, Report

# 12 colours that stay apart on white; the baseline is always black and dashed. Method i gets
# colour i % 12, dash (i // 12) % 4 and marker i % 8: the first 48 methods differ in colour or
# dash, and every method in its (colour, dash, marker) triple.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#000080", "#b8860b")
DASHES = ("-", (0, (5, 2)), (0, (5, 2, 1, 2)), (0, (1, 1.5)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_styles(methods: list[str]) -> dict[str, dict[str, Any]]:
    """matplotlib line styles, one per method, distinct for at least 48 methods."""
    out: dict[str, dict[str, Any]] = {}
    others = [m for m in methods if m != BASELINE]
    for i, m in enumerate(others):
        out[m] = {"color": COLOURS[i % len(COLOURS)],
                  "linestyle": DASHES[(i // len(COLOURS)) % len(DASHES)],
                  "marker": MARKERS[i % len(MARKERS)]}
    if BASELINE in methods:
        out[BASELINE] = {"color": "black", "linestyle": "--", "marker": None}
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if abs(x) >= 1e4 else f"{x:.{digits}f}"


def report_json(report: Report) -> dict[str, Any]:
    return {
        "tasks": {t: {"metric": i.metric, "direction": i.direction, "baseline": i.baseline}
                  for t, i in report.tasks.items()},
        "methods": report.methods,
        "runs": report.runs,
        "scores": report.scores,
        "epsilon": report.epsilon,
        "points": report.points,
        "tau_max": report.tau_max,
        "notes": report.notes,
        "profiles": {
            m: {"tau_max": p.tau_max, "aup": {k: round(v, 3) for k, v in p.aup.items()},
                "aup_exact": p.aup, "ratios": p.ratios, "feasible": p.feasible,
                "bounds": p.bounds, "excluded": p.excluded}
            for m, p in report.profiles.items()
        },
    }


def markdown_report(report: Report) -> str:
    lines = ["## Scores (priority metric; best over runs)", "",
             "| task | metric | method | runs | best attempt | best submission |",
             "|---|---|---|---|---|---|"]
    for t, info in report.tasks.items():
        for m in report.methods:
            ba = report.scores["best_attempt"][t].get(m)
            bs = report.scores["best_submission"][t].get(m)
            lines.append(f"| {t} | {info.metric} ({info.direction}) | {m} | "
                         f"{report.runs[t].get(m, 0)} | {_fmt(ba)} | {_fmt(bs)} |")
    lines += ["", "## AUP (performance profiles)", "",
              "| method | AUP best attempt | AUP best submission |", "|---|---|---|"]
    ranked = sorted(report.methods, key=lambda m: -report.profiles["best_attempt"].aup[m])
    for m in ranked:
        lines.append(f"| {m} | {report.profiles['best_attempt'].aup[m]:.3f} | "
                     f"{report.profiles['best_submission'].aup[m]:.3f} |")
    lines += ["", f"tau_max = {report.tau_max:g} (shared by both profiles), "
                  f"epsilon = {report.epsilon:g}, {report.points} points"]
    for measure, p in report.profiles.items():
        lines.append(f"{measure}: tasks = {len(p.tasks)}"
                     + (f", excluded (no feasible score): {', '.join(p.excluded)}"
                        if p.excluded else ""))
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_outputs(report: Report, out_dir: Path) -> list[Path]:
    """scores.csv, ratios.csv, aup.csv, report.md, report.json, profile_<measure>.{png,svg}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ba, bs = report.scores["best_attempt"], report.scores["best_submission"]
    written = [
        _write_csv(out_dir / "scores.csv",
                   ["task", "metric", "direction", "method", "runs", "best_attempt",
                    "best_submission"],
                   [[t, i.metric, i.direction, m, report.runs[t].get(m, 0), ba[t].get(m),
                     bs[t].get(m)] for t, i in report.tasks.items() for m in report.methods]),
        _write_csv(out_dir / "ratios.csv", ["measure", "task", "method", "ratio", "feasible"],
                   [[measure, t, m, p.ratios[t][m], p.feasible[t][m]]
                    for measure, p in report.profiles.items() for t in p.tasks
                    for m in p.methods]),
        _write_csv(out_dir / "aup.csv", ["method", "aup_best_attempt", "aup_best_submission"],
                   [[m, f"{report.profiles['best_attempt'].aup[m]:.3f}",
                     f"{report.profiles['best_submission'].aup[m]:.3f}"]
                    for m in report.methods]),
    ]
    (out_dir / "report.md").write_text(markdown_report(report))
    (out_dir / "report.json").write_text(json.dumps(report_json(report), indent=2) + "\n")
    written += [out_dir / "report.md", out_dir / "report.json"]
    written += plot_profiles(report, out_dir)
    return written


def plot_profiles(report: Report, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = method_styles(report.methods)
    written = []
    for measure, p in report.profiles.items():
        if not p.tasks:
            continue
        fig, ax = plt.subplots(figsize=(7.2, 4.8))
        order = sorted(p.methods, key=lambda m: -p.aup[m])
        for k, m in zip(itertools.count(), order):
            st = styles[m]
            ax.step(p.tau, p.rho[m], where="post", label=f"{m} (AUP {p.aup[m]:.3f})",
                    color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                    markevery=(k * 7 % 50, 50), markersize=4, linewidth=1.3)
        ax.set_xlabel(r"$\tau$ (log$_{10}$ of the ratio to the best score)")
        ax.set_ylabel(r"$\rho(\tau)$: share of tasks")
        ax.set_title(f"Performance profile: {measure.replace('_', ' ')}")
        ax.set_xlim(0, p.tau_max)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7 if len(order) > 10 else 8,
                  ncol=2 if len(order) > 14 else 1)
        fig.tight_layout()
        for ext in ("png", "svg"):
            path = out_dir / f"profile_{measure}.{ext}"
            fig.savefig(path, dpi=150 if ext == "png" else None)
            written.append(path)
        plt.close(fig)
    return written
