"""Writing `mlgym analyze`'s outputs: for a run, `<run>/analysis/` (or --out) holds
analysis.json, report.md, comm_graph.{png,svg} and timeline.{png,svg}; for a folder of runs,
`<folder>/analysis/` holds analysis.json, report.md, score_vs_tokens.{png,svg} and
score_vs_wall_clock.{png,svg}, and each run gets its own analysis as above. File names and
JSON keys are documented in docs/teams.md (viewers rely on them)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import msgspec

from mlgym.agents.analyze import plots
from mlgym.agents.analyze.metrics import START, Analysis
from mlgym.files import atomic_write

ANALYSIS_DIR = "analysis"
JSON_FILE = "analysis.json"
REPORT_FILE = "report.md"


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if not isinstance(v, float):
        return str(v)
    if abs(v) >= 1e4 or 0 < abs(v) < 1e-3:
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return out


def _json(obj: Any) -> bytes:
    """Indented JSON (msgspec: a tenth of the json module's time on a long run's analysis)."""
    return msgspec.json.format(msgspec.json.encode(obj), indent=1) + b"\n"


# --------------------------------------------------------------------------- one run


def run_markdown(a: Analysis, d: dict[str, Any]) -> str:
    lines = [
        f"# Analysis of run {a.run}",
        "",
        f"Team `{a.team}` on `{a.task}`: {a.exit_status or 'not ended'}. {a.metric} "
        f"({a.direction}): final {_f(a.final)}, best validated {_f(a.best)}, baseline "
        f"{_f(a.baseline)}. {a.steps} environment steps, {a.tokens} tokens, "
        f"${a.cost_usd:.4f}, {a.seconds:.1f} s, {a.events} events.",
        "",
        "## Members",
        "",
    ]
    rows = []
    for n, m in a.members.items():
        rows.append(
            [
                n,
                m.role,
                m.turns,
                m.tokens,
                round(m.cost_usd, 4),
                m.env_steps,
                m.messages_sent,
                m.messages_received,
                round(m.busy_s, 1),
                round(m.waiting_s, 1),
                round(m.blocked_s, 1),
                f"{m.validations} ({m.improvements})",
                "yes" if m.wrote_final else "",
            ]
        )
    lines += _table(
        [
            "member",
            "role",
            "turns",
            "tokens",
            "$",
            "env steps",
            "msgs sent",
            "msgs received",
            "busy s",
            "waiting s",
            "blocked s",
            "validations (improving)",
            "wrote the final",
        ],
        rows,
    )
    lines += [
        "",
        "Busy: alive and not idle nor in `wait` (model calls, commands, the framework); "
        "waiting: idle with no work in hand; blocked: in `wait`, mid-task, for a teammate.",
        "",
        "## Communication",
        "",
        "![communication graph](comm_graph.png)",
        "",
    ]
    comm = d["communication"]
    lines += _table(
        ["from", "to", "messages", "bytes", "kinds"],
        [
            [
                e["from"],
                e["to"],
                e["count"],
                e["bytes"],
                ", ".join(f"{k} {v}" for k, v in e["kinds"].items()),
            ]
            for e in comm["edges"]
        ],
    )
    refused = {n: m.refused for n, m in a.members.items() if m.refused}
    if refused:
        lines += [
            "",
            "Refused by the team's channels: " + ", ".join(f"{n} {c}" for n, c in refused.items()),
        ]
    lines += ["", "## Contribution", "", "![timeline](timeline.png)", ""]
    lines += _table(
        [
            "t (s)",
            "session",
            "step",
            "run step",
            a.metric,
            "author",
            "work item",
            "assigned by",
            "improved",
            "duplicate",
        ],
        [
            [
                round(v.t_s, 1),
                v.session,
                v.step,
                v.run_step,
                v.score,
                v.author,
                v.item,
                v.assigned_by,
                "yes" if v.improved else "",
                v.duplicate,
            ]
            for v in a.validations
        ],
    )
    f = a.final_submission
    if f:
        via = f.get("validated_at") or {}
        lines += [
            "",
            f"Final submission: {a.metric} {_f(f['score'])}, written by **{f['author']}**"
            + (f" (work item {f['item']} from {f['assigned_by']})" if f.get("item") else "")
            + f", submitted by {f['by']}"
            + (
                f", the artefact validated at step {via.get('step')} of {via.get('session')}"
                if via
                else ""
            )
            + ".",
        ]
    if a.copies:
        lines += [
            "",
            "Copies between sessions: "
            + "; ".join(
                f"{c['by']} copied {c['author']}'s artefact ({c['from_session']} step "
                f"{c['from_step']}) into {c['to_session']}"
                for c in a.copies
            ),
        ]
    shares = [f"{n} {m.improvement_share:.0%}" for n, m in a.members.items() if m.improvement_share]
    if shares:
        lines += ["", "Share of the improvement over the baseline: " + ", ".join(shares) + "."]
    fi = a.first_improvement
    lines += ["", "## First improvement over the baseline", ""]
    lines += [
        f"{fi['by']} at {fi['t_s']:.1f} s, after {fi['run_steps']} steps and {fi['tokens']} "
        f"tokens: {a.metric} {_f(fi['score'])}."
        if fi
        else "None: no validation beat the baseline."
    ]
    w = a.waste
    lines += [
        "",
        "## Wasted work",
        "",
        f"- validations that did not improve on the best so far (and were not submitted): "
        f"{w['not_improving']} of {w['validations']}, {w['steps_on_not_improving']} steps spent "
        "on them",
        f"- duplicate evaluations: {w['duplicate_evaluations']} ({w['repeats']} of an unchanged "
        f"artefact, {w['same_results']} with the same scores as an earlier one)",
        f"- members whose edits reached no improvement and not the final: "
        f"{', '.join(w['members_without_contribution']) or 'none'} "
        f"({w['steps_of_members_without_contribution']} steps, "
        f"{w['tokens_of_members_without_contribution']} tokens)",
        "",
    ]
    return "\n".join(lines)


def write_run(a: Analysis, out: Path, *, figures: bool = True) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    d = a.as_dict()
    files = {"json": JSON_FILE, "report": REPORT_FILE}
    if figures:
        for p in plots.comm_graph(a, out) + plots.timeline(a, out):
            files[p.stem + "_" + p.suffix[1:]] = p.name
    d["files"] = files
    atomic_write(out / REPORT_FILE, run_markdown(a, d))
    atomic_write(out / JSON_FILE, _json(d))
    return d


# --------------------------------------------------------------------------- a folder of runs


def relative(score: float | None, baseline: float | None, direction: str) -> float | None:
    """1 at the baseline, 2 when the score is better by |baseline| (any sign of baseline)."""
    if score is None or baseline is None or not baseline:
        return None
    gain = (score - baseline) if direction == "max" else (baseline - score)
    return 1.0 + gain / abs(baseline)


def run_row(d: dict[str, Any]) -> dict[str, Any]:
    m = d["metric"]
    fi = d.get("first_improvement") or {}
    return {
        "run": d["run"],
        "run_dir": d["run_dir"],
        "design": d["team"],
        "task": d["task"],
        "final": d["final"],
        "best": d["best"],
        "baseline": d["baseline"],
        "normalised": relative(d["final"], d["baseline"], m["direction"]),
        "tokens": d["tokens"],
        "seconds": d["seconds"],
        "steps": d["steps"],
        "cost_usd": d["cost_usd"],
        "messages": d["communication"]["messages"],
        "first_improvement_s": fi.get("t_s"),
        "first_improvement_steps": fi.get("run_steps"),
        "wasted_steps": d["waste"]["steps_on_not_improving"],
        "duplicates": d["waste"]["duplicate_evaluations"],
        "exit_status": d["exit_status"],
    }


def _median(vals: list[Any]) -> float | None:
    vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(vals) if vals else None


def designs(rows: list[dict[str, Any]], aup: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for design in sorted({r["design"] for r in rows}):
        mine = [r for r in rows if r["design"] == design]
        out[design] = {
            "runs": len(mine),
            "tasks": sorted({r["task"] for r in mine}),
            "beat_baseline": sum(1 for r in mine if (r["normalised"] or 0) > 1.0),
            "normalised_median": _median([r["normalised"] for r in mine]),
            "tokens_median": _median([r["tokens"] for r in mine]),
            "seconds_median": _median([r["seconds"] for r in mine]),
            "steps_median": _median([r["steps"] for r in mine]),
            "cost_usd_median": _median([r["cost_usd"] for r in mine]),
            "messages_median": _median([r["messages"] for r in mine]),
            "first_improvement_s_median": _median([r["first_improvement_s"] for r in mine]),
            "wasted_steps_median": _median([r["wasted_steps"] for r in mine]),
            "duplicates_median": _median([r["duplicates"] for r in mine]),
            "aup_best_attempt": aup.get("best_attempt", {}).get(design),
            "aup_best_submission": aup.get("best_submission", {}).get(design),
        }
    return out


def folder_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Team designs compared ({len(summary['runs'])} runs)",
        "",
        "![score against tokens](score_vs_tokens.png) ![score against wall clock]"
        "(score_vs_wall_clock.png)",
        "",
        "## By design",
        "",
    ]
    rows = [
        [
            d,
            v["runs"],
            ", ".join(v["tasks"]),
            f"{v['beat_baseline']}/{v['runs']}",
            v["normalised_median"],
            v["tokens_median"],
            v["seconds_median"],
            v["steps_median"],
            v["messages_median"],
            v["first_improvement_s_median"],
            v["wasted_steps_median"],
            v["aup_best_attempt"],
            v["aup_best_submission"],
        ]
        for d, v in summary["designs"].items()
    ]
    lines += _table(
        [
            "design",
            "runs",
            "tasks",
            "beat baseline",
            "final (1 = baseline)",
            "tokens",
            "wall s",
            "steps",
            "messages",
            "first improvement s",
            "wasted steps",
            "AUP attempt",
            "AUP submission",
        ],
        rows,
    )
    lines += [
        "",
        "Medians over runs. Final (1 = baseline): 1 + (score - baseline) / |baseline| "
        "(turned round for lower-is-better metrics). AUP from `mlgym score`'s code, each "
        "design a method.",
        "",
        "## Runs",
        "",
    ]
    lines += _table(
        [
            "run",
            "design",
            "task",
            "final",
            "best",
            "baseline",
            "tokens",
            "wall s",
            "steps",
            "messages",
            "first improvement s",
            "exit",
        ],
        [
            [
                r["run"],
                r["design"],
                r["task"],
                r["final"],
                r["best"],
                r["baseline"],
                r["tokens"],
                round(r["seconds"], 1),
                r["steps"],
                r["messages"],
                r["first_improvement_s"],
                r["exit_status"],
            ]
            for r in summary["runs"]
        ],
    )
    return "\n".join(lines) + "\n"


def write_folder(summary: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    normalised = len({r["task"] for r in rows}) > 1
    files = {"json": JSON_FILE, "report": REPORT_FILE}
    for x, label, stem in (
        ("tokens", "tokens", "score_vs_tokens"),
        ("seconds", "wall clock (s)", "score_vs_wall_clock"),
    ):
        for p in plots.design_scatter(rows, out, x, label, stem, normalised):
            files[p.stem + "_" + p.suffix[1:]] = p.name
    summary["files"] = files
    atomic_write(out / REPORT_FILE, folder_markdown(summary))
    atomic_write(out / JSON_FILE, _json(summary))
    return summary


__all__ = ["START", "write_folder", "write_run"]
