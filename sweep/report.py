"""A sweep's results: `mlgym score` over its finished runs, one method per design x model set,
and a Markdown report shaped like MLGym-Bench's tables (tasks x methods, Best Attempt and Best
Submission, AUP), with the spread over seeds, cost and time per method, the failures, and plots.

    SWEEP/report/report.md       the report
    SWEEP/report/results.jsonl   the finished runs, methods named design/models: `mlgym score` input
    SWEEP/report/score/          `mlgym score --out`: CSVs, report.json, profile plots
    SWEEP/report/scores_by_task.{png,svg}
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import msgspec

from mlgym.sweep.folder import Folder, records, run_state
from mlgym.sweep.outcome import finished_result, read_json
from mlgym.sweep.spec import Plan, SweepError

REPORT_DIR = "report"


def method(design: str, models: str) -> str:
    return f"{design}/{models}"


def run_table(folder: str | Path) -> list[dict[str, Any]]:
    """One row per planned run: where it stands, its attempts, last reason, score."""
    f = Folder(folder)
    plan = f.load_plan()
    recs = records(f.journal())
    rows = []
    for p in plan.runs:
        rec = recs.get(p.id)
        last = (rec.last if rec else None) or {}
        state = run_state(rec, plan.sweep.retry.max_attempts) if rec else "pending"
        if state == "pending":
            run_json = read_json(f.run_dir(p.id) / "run.json")
            if rec is not None and rec.open_attempt is not None:
                state = "running"
            elif run_json is not None and run_json.get("status") != "finished":
                state = "stopped"
            elif last.get("outcome") == "infra":
                state = "retry"
            else:
                state = "todo"
        rows.append({"id": p.id, "task": p.task, "design": p.design, "models": p.models,
                     "method": method(p.design, p.models), "seed": p.seed, "repeat": p.repeat, "state": state,
                     "attempts": rec.attempts if rec else 0, "infra_failures": rec.infra_failures if rec else 0,
                     "reason": str(last.get("reason") or ""), "detail": str(last.get("detail") or ""),
                     "score": last.get("score"), "best": last.get("best"),
                     "cost_usd": float(last.get("cost_usd") or 0.0), "run_seconds": last.get("run_seconds")})
    return rows


def _results(f: Folder, plan: Plan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished runs' result.json, method renamed design/models, sweep fields added."""
    out = []
    for row in rows:
        if row["state"] != "done":
            continue
        result = finished_result(f.run_dir(row["id"]))
        if result is None:
            continue
        result.update({"method": row["method"], "sweep": plan.sweep.name, "sweep_run": row["id"],
                       "design": row["design"], "models": row["models"], "seed": row["seed"],
                       "repeat": row["repeat"]})
        out.append(result)
    return out


def write_report(folder: str | Path) -> dict[str, Any]:
    """Write SWEEP/report/ and return the numbers (the JSON line of `mlgym sweep report`)."""
    from mlgym.tasks import score_report as score_files
    from mlgym.tasks import scoring

    f = Folder(Path(folder).resolve())
    plan = f.load_plan()
    rows = run_table(f.root)
    out_dir = f.root / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results = _results(f, plan, rows)
    results_path = out_dir / "results.jsonl"
    results_path.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in results))
    score_report = None
    if results:
        try:
            runs = [msgspec.convert(r, scoring.RunResult) for r in results]
            score_report = scoring.score_runs(runs)
        except (msgspec.ValidationError, scoring.ResultsError) as exc:
            raise SweepError(f"{folder}: the finished runs cannot be scored: {exc}") from None
        score_files.write_outputs(score_report, out_dir / "score")
        _plot_scores(rows, score_report, out_dir)
    md = _markdown(plan, rows, score_report, results_path)
    report_path = out_dir / "report.md"
    report_path.write_text(md)
    counts = _counts(rows)
    line: dict[str, Any] = {"sweep": plan.sweep.name, "dir": str(f.root), "runs": len(rows), **counts,
                            "spend_usd": round(sum(r["cost_usd"] for r in rows), 6),
                            "report": str(report_path), "results": str(results_path)}
    if score_report is not None:
        line["tasks"] = sorted(score_report.tasks)
        line["methods"] = score_report.methods
        line["aup"] = {m: {k: round(v, 4) for k, v in p.aup.items()} for m, p in score_report.profiles.items()}
        line["best_attempt"] = score_report.scores["best_attempt"]
    return line


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out = {k: 0 for k in ("done", "failed", "stopped", "retry", "running", "todo")}
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
    return out


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.4g}"


def _markdown(plan: Plan, rows: list[dict[str, Any]], rep: Any, results_path: Path) -> str:
    counts = _counts(rows)
    s = plan.sweep
    lines = [f"# Sweep `{s.name}`", "",
             f"{len(rows)} runs planned ({len({r['task'] for r in rows})} tasks x "
             f"{len({r['design'] for r in rows})} designs x {len({r['models'] for r in rows})} model sets x "
             f"{len({r['seed'] for r in rows})} seeds x {s.repeats} repeats): "
             + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
             + f"; spend ${sum(r['cost_usd'] for r in rows):.4f}. Backend `{s.backend}`; "
             f"sweep file `{plan.source}`.", ""]
    if rep is None:
        lines += ["No run has finished yet.", ""]
    else:
        lines += _score_tables(rep)
        lines += _spread_table(rows)
    lines += _failures(rows)
    if rep is not None:
        lines += ["## Plots", "",
                  "![scores by task](scores_by_task.png)", "",
                  "![performance profile, best attempt](score/profile_best_attempt.png)", "",
                  "![performance profile, best submission](score/profile_best_submission.png)", ""]
    lines += ["## Reproduce", "", "```",
              f"mlgym sweep run {plan.source}     # finished runs are skipped",
              f"mlgym score {results_path}", "```", ""]
    return "\n".join(lines)


def _score_tables(rep: Any) -> list[str]:
    """MLGym-Bench's shape: a row per task, a column per method, the baseline beside them."""
    from mlgym.tasks.scoring import BASELINE

    methods = [m for m in rep.methods if m != BASELINE]
    out = []
    for measure, title in (("best_attempt", "Best Attempt"), ("best_submission", "Best Submission")):
        out += [f"## {title} (priority metric, best over seeds and repeats)", "",
                "| task | metric | " + " | ".join(methods) + f" | {BASELINE} |",
                "|---|---|" + "---|" * (len(methods) + 1)]
        for t, info in rep.tasks.items():
            row = rep.scores[measure][t]
            arrow = "↑" if info.direction == "max" else "↓"
            out.append(f"| {t} | {info.metric} {arrow} | " + " | ".join(_fmt(row.get(m)) for m in methods)
                       + f" | {_fmt(row.get(BASELINE))} |")
        out.append("")
    out += ["## AUP (performance profiles, MLGym-Bench's aggregate)", "",
            "| method | AUP best attempt | AUP best submission |", "|---|---|---|"]
    for m in rep.methods:
        out.append(f"| {m} | {rep.profiles['best_attempt'].aup[m]:.3f} | "
                   f"{rep.profiles['best_submission'].aup[m]:.3f} |")
    excluded = sorted(set(rep.profiles["best_attempt"].excluded) | set(rep.profiles["best_submission"].excluded))
    if excluded:
        out += ["", f"Left out of the profiles (no feasible score): {', '.join(excluded)}."]
    return out + [""]


def _spread_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per task and method: runs, final score mean and standard deviation over seeds and
    repeats, runs that submitted nothing, mean cost and time."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["state"] == "done":
            groups.setdefault((r["task"], r["method"]), []).append(r)
    out = ["## Spread over seeds and repeats (final submission)", "",
           "| task | method | runs | mean | std | min | max | no score | mean $ | mean s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for (task, m), rs in sorted(groups.items()):
        vals = [r["score"] for r in rs if isinstance(r["score"], (int, float))]
        mean = statistics.fmean(vals) if vals else None
        std = statistics.stdev(vals) if len(vals) > 1 else None
        secs = [r["run_seconds"] for r in rs if isinstance(r["run_seconds"], (int, float))]
        out.append(f"| {task} | {m} | {len(rs)} | {_fmt(mean)} | {_fmt(std)} | "
                   f"{_fmt(min(vals) if vals else None)} | {_fmt(max(vals) if vals else None)} | "
                   f"{len(rs) - len(vals)} | {statistics.fmean(r['cost_usd'] for r in rs):.4f} | "
                   f"{_fmt(statistics.fmean(secs) if secs else None)} |")
    return out + [""]


def _failures(rows: list[dict[str, Any]]) -> list[str]:
    bad = [r for r in rows if r["state"] != "done"]
    retried = [r for r in rows if r["state"] == "done" and r["infra_failures"]]
    out = []
    if bad:
        out += ["## Not done", "", "| run | state | attempts | last reason | detail |", "|---|---|---|---|---|"]
        for r in bad:
            detail = r["detail"].replace("|", "/").replace("\n", " ")[:160]
            out.append(f"| {r['id']} | {r['state']} | {r['attempts']} | {r['reason']} | {detail} |")
        out.append("")
    if retried:
        out += [f"{len(retried)} run(s) finished after infrastructure failures: "
                + ", ".join(f"{r['id']} ({r['infra_failures']})" for r in retried) + ".", ""]
    return out


def _plot_scores(rows: list[dict[str, Any]], rep: Any, out_dir: Path) -> list[Path]:
    """One panel per task: every run's final score by method, the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlgym.tasks.scoring import BASELINE

    tasks = list(rep.tasks)
    methods = [m for m in rep.methods if m != BASELINE]
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        info = rep.tasks[t]
        for i, m in enumerate(methods):
            vals = [r["score"] for r in rows if r["task"] == t and r["method"] == m and r["state"] == "done"
                    and isinstance(r["score"], (int, float))]
            xs = [i + 0.08 * (k - (len(vals) - 1) / 2) for k in range(len(vals))]
            ax.scatter(xs, vals, s=18, alpha=0.8)
        ax.axhline(info.baseline, linestyle="--", color="grey", linewidth=1, label="baseline")
        ax.set_xlim(-0.5, len(methods) - 0.5)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=7)
        ax.set_title(f"{t} ({info.metric}, {'higher' if info.direction == 'max' else 'lower'} is better)",
                     fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    written = []
    for ext in ("png", "svg"):
        path = out_dir / f"scores_by_task.{ext}"
        fig.savefig(path, dpi=130 if ext == "png" else None)
        written.append(path)
    plt.close(fig)
    return written
