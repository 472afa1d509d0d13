"""Scores across runs: Best Attempt / Best Submission, performance profiles and AUP.

Definitions (MLGym-Bench; docs/scoring.md):
- Best Attempt of a run = its best priority-metric score over all validate/submit results;
  Best Submission = the score of its final submission. For a method and a task, each is the
  best over that method's runs. The baseline is one more method ("Baseline").
- Infeasible: missing, negative, or worse than the task's baseline score.
- best_t = best feasible score on task t; r = best_t / s (higher is better) or s / best_t
  (lower is better); an infeasible method gets r = (1 + eps) * worst feasible r on t.
- rho_m(tau) = share of tasks with log10(r) <= tau, tau on `points` evenly spaced values in
  [0, tau_max]; tau_max = log10(max over tasks of ceil(1.05 * worst r of the task)),
  rounded up to one decimal. AUP_m = sum_i (tau_{i+1} - tau_i) * rho_m(tau_i).
A task without any feasible score has no best_t; it is left out of the profiles and listed
under `excluded`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

BASELINE = "Baseline"
MEASURES = ("best_attempt", "best_submission")


class ResultsError(ValueError):
    """A results file that cannot be used; the message names the file (and line)."""


class Attempt(msgspec.Struct, kw_only=True):
    step: int
    action: Literal["validate", "submit"]
    scores: dict[str, float] | None = None
    error: dict[str, Any] | None = None


class Submission(msgspec.Struct, kw_only=True):
    step: int | None = None
    scores: dict[str, float] | None = None
    error: dict[str, Any] | None = None
    auto: bool = False  # submitted by the framework at the step/cost limit


class MetricRef(msgspec.Struct, kw_only=True):
    name: str
    direction: Literal["max", "min"]


class RunResult(msgspec.Struct, kw_only=True):
    """One agent run on one task (docs/results-format.md). Unknown keys are allowed."""

    task: str
    method: str
    run_id: str
    attempts: list[Attempt] = []
    final_submission: Submission | None = None
    exit_status: str = ""
    cost_usd: float = 0.0
    steps: int = 0
    baseline: dict[str, float] | None = None  # baseline scores measured in this run's set-up
    metric: MetricRef | None = None  # the priority metric; from the task spec when absent
    format: str = "mlgym-run-result/1"
    partial: bool = False  # a stopped run's result so far (`mlgym resume` finishes it): not scored


@dataclass
class TaskInfo:
    metric: str
    direction: str
    baseline: float


@dataclass
class Profile:
    measure: str
    tasks: list[str]
    methods: list[str]
    ratios: dict[str, dict[str, float]]  # task -> method -> r
    feasible: dict[str, dict[str, bool]]
    tau: np.ndarray
    rho: dict[str, np.ndarray]
    tau_max: float
    aup: dict[str, float]
    excluded: list[str]


@dataclass
class Report:
    tasks: dict[str, TaskInfo]
    methods: list[str]
    scores: dict[str, dict[str, dict[str, float | None]]]  # measure -> task -> method -> score
    runs: dict[str, dict[str, int]]  # task -> method -> number of runs
    profiles: dict[str, Profile] = field(default_factory=dict)
    epsilon: float = 0.05
    points: int = 500


# ---------------------------------------------------------------------------------- loading


def _decode(raw: bytes, where: str) -> list[RunResult]:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ResultsError(f"{where}: not JSON: {exc}") from None
    items = obj if isinstance(obj, list) else [obj]
    out = []
    for i, item in enumerate(items):
        try:
            out.append(msgspec.convert(item, RunResult))
        except msgspec.ValidationError as exc:
            at = f"{where}[{i}]" if isinstance(obj, list) else where
            raise ResultsError(f"{at}: {exc}") from None
    return out


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = [p for p in sorted(path.rglob("*")) if p.is_file()
             and (p.name == "result.json" or p.name.endswith(".result.json") or p.name.endswith(".jsonl"))]
    if not found:
        raise ResultsError(f"{path}: no result.json, *.result.json or *.jsonl files inside")
    return found


def load_results(paths: list[Path]) -> list[RunResult]:
    """Run results from files (JSON object, JSON array, or JSON lines) and folders."""
    runs: list[RunResult] = []
    for path in paths:
        for f in _files(Path(path)):
            data = f.read_bytes()
            if f.suffix == ".jsonl":
                for n, line in enumerate(data.splitlines(), 1):
                    if line.strip():
                        runs += _decode(line, f"{f}:{n}")
            else:
                runs += _decode(data, str(f))
    stopped = [r.run_id for r in runs if r.partial]
    runs = [r for r in runs if not r.partial]
    if not runs:
        more = (f" (only stopped runs, not scored until resumed to their end: "
                f"{', '.join(stopped)})" if stopped else "")
        raise ResultsError(f"no runs found{more}")
    for r in runs:
        if r.method == BASELINE:
            raise ResultsError(f"run {r.run_id}: the method name {BASELINE!r} is reserved for the baseline")
    return runs


# ---------------------------------------------------------------------------------- scores


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "max" else a < b


def _best(values: list[float], direction: str) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return max(vals) if direction == "max" else min(vals)


def task_info(runs: list[RunResult], task: str, baseline_source: str = "spec") -> TaskInfo:
    """Priority metric, direction and baseline score of a task: from the spec when the task is
    registered, else from the runs' `metric` and `baseline`. `baseline_source="measured"` uses
    the median of the runs' measured baselines when they have one."""
    mine = [r for r in runs if r.task == task]
    metric = direction = None
    baseline: float | None = None
    try:
        from mlgym.tasks.registry import load_task

        spec = load_task(task).spec
        metric, direction, baseline = spec.priority_metric, spec.priority.direction, spec.baseline_score
    except KeyError:
        pass
    for r in mine:
        if r.metric is not None and metric is None:
            metric, direction = r.metric.name, r.metric.direction
    if metric is None or direction is None:
        raise ResultsError(f"task {task!r} is not registered and its runs do not name their metric")
    measured = [r.baseline[metric] for r in mine if r.baseline and metric in r.baseline]
    if measured and (baseline_source == "measured" or baseline is None):
        baseline = float(np.median(measured))
    if baseline is None:
        raise ResultsError(f"task {task!r}: no baseline score (not registered, no measured baseline in its runs)")
    return TaskInfo(metric, direction, float(baseline))


def run_scores(run: RunResult, info: TaskInfo) -> tuple[float | None, float | None]:
    """(best attempt, final submission) of one run on the priority metric."""
    attempt_vals = [a.scores.get(info.metric) for a in run.attempts if a.scores]
    final = None
    if run.final_submission is not None and run.final_submission.scores:
        final = run.final_submission.scores.get(info.metric)
        attempt_vals.append(final)  # a submission is an attempt too
    return _best(attempt_vals, info.direction), _best([final], info.direction)


def collect(runs: list[RunResult], baseline_source: str = "spec") -> Report:
    tasks = sorted({r.task for r in runs})
    infos = {t: task_info(runs, t, baseline_source) for t in tasks}
    methods = sorted({r.method for r in runs}) + [BASELINE]
    scores: dict[str, dict[str, dict[str, float | None]]] = {m: {} for m in MEASURES}
    counts: dict[str, dict[str, int]] = {}
    for t in tasks:
        info = infos[t]
        counts[t] = {}
        for measure in MEASURES:
            scores[measure][t] = {}
        for m in methods[:-1]:
            mine = [run_scores(r, info) for r in runs if r.task == t and r.method == m]
            counts[t][m] = len(mine)
            scores["best_attempt"][t][m] = _best([a for a, _ in mine], info.direction)
            scores["best_submission"][t][m] = _best([b for _, b in mine], info.direction)
        for measure in MEASURES:
            scores[measure][t][BASELINE] = info.baseline
        counts[t][BASELINE] = 0
    return Report(infos, methods, scores, counts)


# ---------------------------------------------------------------------------------- profiles


def feasible(score: float | None, info: TaskInfo) -> bool:
    if score is None or not math.isfinite(score) or score < 0:
        return False
    return not _better(info.baseline, score, info.direction)


def ceil1(x: float) -> float:
    """Round up to one decimal, ignoring float noise (log10(100) is exactly 2.0)."""
    return math.ceil(round(x * 10, 9)) / 10


def profile(measure: str, table: dict[str, dict[str, float | None]], infos: dict[str, TaskInfo],
            methods: list[str], epsilon: float = 0.05, points: int = 500) -> Profile:
    ratios: dict[str, dict[str, float]] = {}
    feas: dict[str, dict[str, bool]] = {}
    excluded: list[str] = []
    for t, row in table.items():
        info = infos[t]
        ok = {m: feasible(row.get(m), info) for m in methods}
        good = [row[m] for m in methods if ok[m]]
        if not good:
            excluded.append(t)
            continue
        best = _best(good, info.direction)
        r = {m: (best / row[m] if info.direction == "max" else row[m] / best) for m in methods if ok[m]}
        worst = max(r.values())
        for m in methods:
            if not ok[m]:
                r[m] = (1 + epsilon) * worst
        ratios[t], feas[t] = r, ok
    tasks = sorted(ratios)
    if not tasks:
        return Profile(measure, [], methods, {}, {}, np.zeros(0), {}, 0.0, {m: 0.0 for m in methods}, excluded)
    worst_overall = max(math.ceil(1.05 * max(ratios[t].values())) for t in tasks)
    tau_max = ceil1(math.log10(worst_overall))
    tau = np.linspace(0.0, tau_max, points)
    logs = {m: np.array([math.log10(ratios[t][m]) for t in tasks]) for m in methods}
    rho = {m: (logs[m][None, :] <= tau[:, None] + 1e-12).sum(axis=1) / len(tasks) for m in methods}
    aup = {m: float(np.sum(np.diff(tau) * rho[m][:-1])) for m in methods}
    return Profile(measure, tasks, methods, ratios, feas, tau, rho, tau_max, aup, excluded)


def score_runs(runs: list[RunResult], epsilon: float = 0.05, points: int = 500,
               baseline_source: str = "spec") -> Report:
    report = collect(runs, baseline_source)
    report.epsilon, report.points = epsilon, points
    for measure in MEASURES:
        report.profiles[measure] = profile(measure, report.scores[measure], report.tasks, report.methods,
                                           epsilon, points)
    return report


# ---------------------------------------------------------------------------------- output


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if abs(x) >= 1e4 else f"{x:.{digits}f}"


def report_json(report: Report) -> dict[str, Any]:
    return {
        "tasks": {t: {"metric": i.metric, "direction": i.direction, "baseline": i.baseline} for t, i in report.tasks.items()},
        "methods": report.methods,
        "runs": report.runs,
        "scores": report.scores,
        "epsilon": report.epsilon,
        "points": report.points,
        "profiles": {
            m: {"tau_max": p.tau_max, "aup": {k: round(v, 3) for k, v in p.aup.items()},
                "aup_exact": p.aup, "ratios": p.ratios, "feasible": p.feasible, "excluded": p.excluded}
            for m, p in report.profiles.items()
        },
    }


def markdown_report(report: Report) -> str:
    lines = ["## Scores (priority metric; best over runs)", "",
             "| task | metric | method | runs | best attempt | best submission |", "|---|---|---|---|---|---|"]
    for t, info in report.tasks.items():
        for m in report.methods:
            ba = report.scores["best_attempt"][t].get(m)
            bs = report.scores["best_submission"][t].get(m)
            lines.append(f"| {t} | {info.metric} ({info.direction}) | {m} | {report.runs[t].get(m, 0)} | "
                         f"{_fmt(ba)} | {_fmt(bs)} |")
    lines += ["", "## AUP (performance profiles)", "", "| method | AUP best attempt | AUP best submission |",
              "|---|---|---|"]
    for m in report.methods:
        lines.append(f"| {m} | {report.profiles['best_attempt'].aup[m]:.3f} | "
                     f"{report.profiles['best_submission'].aup[m]:.3f} |")
    for measure, p in report.profiles.items():
        lines.append("")
        lines.append(f"{measure}: tau_max = {p.tau_max:g}, tasks = {len(p.tasks)}"
                     + (f", excluded (no feasible score): {', '.join(p.excluded)}" if p.excluded else ""))
    return "\n".join(lines) + "\n"


def write_outputs(report: Report, out_dir: Path) -> list[Path]:
    """scores.csv, ratios.csv, aup.csv, report.md, report.json, profile_<measure>.{png,svg}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    path = out_dir / "scores.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "metric", "direction", "method", "runs", "best_attempt", "best_submission"])
        for t, info in report.tasks.items():
            for m in report.methods:
                w.writerow([t, info.metric, info.direction, m, report.runs[t].get(m, 0),
                            report.scores["best_attempt"][t].get(m), report.scores["best_submission"][t].get(m)])
    written.append(path)
    path = out_dir / "ratios.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["measure", "task", "method", "ratio", "feasible"])
        for measure, p in report.profiles.items():
            for t in p.tasks:
                for m in p.methods:
                    w.writerow([measure, t, m, p.ratios[t][m], p.feasible[t][m]])
    written.append(path)
    path = out_dir / "aup.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "aup_best_attempt", "aup_best_submission"])
        for m in report.methods:
            w.writerow([m, f"{report.profiles['best_attempt'].aup[m]:.3f}",
                        f"{report.profiles['best_submission'].aup[m]:.3f}"])
    written.append(path)
    (out_dir / "report.md").write_text(markdown_report(report))
    (out_dir / "report.json").write_text(json.dumps(report_json(report), indent=2) + "\n")
    written += [out_dir / "report.md", out_dir / "report.json"]
    written += plot_profiles(report, out_dir)
    return written


def plot_profiles(report: Report, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for measure, p in report.profiles.items():
        if not p.tasks:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for m in p.methods:
            ax.step(p.tau, p.rho[m], where="post", label=f"{m} (AUP {p.aup[m]:.3f})",
                    linestyle="--" if m == BASELINE else "-")
        ax.set_xlabel(r"$\tau$ (log$_{10}$ of the ratio to the best score)")
        ax.set_ylabel(r"$\rho(\tau)$: share of tasks")
        ax.set_title(f"Performance profile: {measure.replace('_', ' ')}")
        ax.set_xlim(0, p.tau_max)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        for ext in ("png", "svg"):
            path = out_dir / f"profile_{measure}.{ext}"
            fig.savefig(path, dpi=150 if ext == "png" else None)
            written.append(path)
        plt.close(fig)
    return written
