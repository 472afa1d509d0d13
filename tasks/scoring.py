"""Scores across runs: Best Attempt / Best Submission, performance profiles and AUP, computed
the way MLGym-Bench's published table was (docs/scoring.md has the derivation).

- Best Attempt of a run = its best priority-metric score over all validate/submit results;
  Best Submission = the score of its final submission. For a method and a task, each is the
  best over that method's runs. The baseline is one more method ("Baseline").
- Infeasible: missing, negative, or worse than the task's baseline score.
- best_t = best feasible score on task t; r = best_t / s (higher is better) or s / best_t
  (lower is better); an infeasible method gets r = (1 + eps) * worst feasible r on t.
- Each task bounds the ratios it can produce: ceil((1 + eps) * worst feasible r on t). ONE
  tau range serves every profile scored together: tau_max = log10 of the largest bound over
  the tasks of all profiles, rounded up to one decimal; tau has `points` evenly spaced values
  in [0, tau_max]. rho_m(tau) = share of tasks with log10(r) <= tau;
  AUP_m = sum_i (tau_{i+1} - tau_i) * rho_m(tau_i), summed in order.
A task without any feasible score has no best_t; it is left out of the profiles and listed
under `excluded`. A ratio that would divide by a zero score is infinite: it is given the
infeasible ratio, and a note says so.

Report rendering (Markdown, CSV, JSON, plots) lives in mlgym.tasks.score_report.
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

BASELINE = "Baseline"
MEASURES = ("best_attempt", "best_submission")
RESULT_SUFFIXES = (".result.json", ".jsonl", ".jsonl.gz", ".json.gz")


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
class FixedScores:
    """A method's per-task scores given as numbers rather than runs (the paper's models)."""

    method: str
    best_attempt: dict[str, float | None]  # task -> score
    best_submission: dict[str, float | None]
    runs: dict[str, int]


@dataclass
class Profile:
    measure: str
    tasks: list[str]
    methods: list[str]
    ratios: dict[str, dict[str, float]]  # task -> method -> r
    feasible: dict[str, dict[str, bool]]
    bounds: dict[str, int]  # task -> ceil((1 + eps) * worst feasible ratio)
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
    tau_max: float = 0.0
    notes: list[str] = field(default_factory=list)  # warnings for the reader (stderr, JSON)


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


def _is_result_file(p: Path) -> bool:
    return p.name in ("result.json", "results.json") or p.name.endswith(RESULT_SUFFIXES)


def _files(path: Path) -> list[Path]:
    """The result files in a file or folder. A run folder (one with run.json) gives its own
    result.json only: nothing below it is read, for its environment sessions hold files the
    agent wrote (an exported workspace could hold a forged `x.result.json`) and the server's
    session journals."""
    if path.is_file():
        return [path]
    found = []
    for folder, dirs, files in os.walk(path):
        here = Path(folder)
        if "run.json" in files:
            dirs.clear()
            if (here / "result.json").is_file():
                found.append(here / "result.json")
            continue
        dirs.sort()
        found += [here / f for f in files if _is_result_file(here / f) and (here / f).is_file()]
    found.sort()
    if not found:
        raise ResultsError(f"{path}: no result.json, *.result.json, *.jsonl or MLGym "
                           "results.json files inside")
    return found


def _read_file(f: Path) -> list[tuple[RunResult, str]]:
    """Runs in one file, each with where it came from (file, or file:line)."""
    from mlgym.tasks import mlgym_results

    if f.name == "results.json":
        return [(mlgym_results.read_run(f), str(f))]
    data = f.read_bytes()
    if f.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ResultsError(f"{f}: not gzip: {exc}") from None
    if f.name.endswith((".jsonl", ".jsonl.gz")):
        return [(r, f"{f}:{n}") for n, line in enumerate(data.splitlines(), 1) if line.strip()
                for r in _decode(line, f"{f}:{n}")]
    return [(r, str(f)) for r in _decode(data, str(f))]


def load_results(paths: list[Path], notes: list[str] | None = None) -> list[RunResult]:
    """Run results from files (JSON object, JSON array, JSON lines, gzipped or not), folders,
    and MLGym trajectory folders (`results.json`). A run id seen twice with the same content
    counts once (a note names both places); with different content it is an error."""
    notes = notes if notes is not None else []
    runs: list[RunResult] = []
    seen: dict[str, tuple[bytes, str]] = {}
    for path in paths:
        for f in _files(Path(path)):
            for r, where in _read_file(f):
                body = msgspec.json.encode(r)
                if r.run_id in seen:
                    first_body, first_where = seen[r.run_id]
                    if body != first_body:
                        raise ResultsError(f"run id {r.run_id!r} appears twice with different "
                                           f"contents: {first_where} and {where}")
                    notes.append(f"run {r.run_id} appears twice ({first_where} and {where}); "
                                 "counted once")
                    continue
                seen[r.run_id] = (body, where)
                runs.append(r)
    stopped = [r.run_id for r in runs if r.partial]
    runs = [r for r in runs if not r.partial]
    if not runs:
        more = (f" (only stopped runs, not scored until resumed to their end: "
                f"{', '.join(stopped)})" if stopped else "")
        raise ResultsError(f"no runs found{more}")
    for r in runs:
        if r.method == BASELINE:
            raise ResultsError(f"run {r.run_id}: the method name {BASELINE!r} is reserved "
                               "for the baseline")
    return runs


# ---------------------------------------------------------------------------------- scores


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "max" else a < b


def _best(values: list[float | None], direction: str) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return max(vals) if direction == "max" else min(vals)


def _spec_metric(task: str) -> tuple[str, str, float] | None:
    from mlgym.tasks.registry import UnknownTask, load_task
    from mlgym.tasks.spec import TaskSpecError

    try:
        spec = load_task(task).spec
    except (UnknownTask, TaskSpecError):
        return None
    return spec.priority_metric, spec.priority.direction, spec.baseline_score


def task_info(runs: list[RunResult], task: str, baseline_source: str = "spec",
              notes: list[str] | None = None) -> TaskInfo:
    """Priority metric, direction and baseline score of a task: from the spec when the task is
    registered, else from the runs' `metric` and `baseline`. A run whose `metric` disagrees
    gets a note naming it. `baseline_source="measured"` uses the median of the runs' measured
    baselines when they have one."""
    notes = notes if notes is not None else []
    mine = [r for r in runs if r.task == task]
    metric = direction = None
    baseline: float | None = None
    source = "the task spec"
    spec = _spec_metric(task)
    if spec is not None:
        metric, direction, baseline = spec
    for r in mine:
        if r.metric is None:
            continue
        if metric is None:
            metric, direction, source = r.metric.name, r.metric.direction, f"run {r.run_id}"
        elif (r.metric.name, r.metric.direction) != (metric, direction):
            notes.append(f"run {r.run_id} ({task}) names the metric {r.metric.name} "
                         f"({r.metric.direction}); {metric} ({direction}) from {source} is used")
    if metric is None or direction is None:
        raise ResultsError(f"task {task!r} is not registered and its runs do not name their metric")
    measured = [r.baseline[metric] for r in mine if r.baseline and metric in r.baseline]
    if measured and (baseline_source == "measured" or baseline is None):
        baseline = float(np.median(measured))
    if baseline is None:
        raise ResultsError(f"task {task!r}: no baseline score (not registered, no measured "
                           "baseline in its runs)")
    return TaskInfo(metric, direction, float(baseline))


def run_scores(run: RunResult, info: TaskInfo) -> tuple[float | None, float | None]:
    """(best attempt, final submission) of one run on the priority metric."""
    attempt_vals = [a.scores.get(info.metric) for a in run.attempts if a.scores]
    final = None
    if run.final_submission is not None and run.final_submission.scores:
        final = run.final_submission.scores.get(info.metric)
        attempt_vals.append(final)  # a submission is an attempt too
    return _best(attempt_vals, info.direction), _best([final], info.direction)


def collect(runs: list[RunResult], baseline_source: str = "spec",
            fixed: list[FixedScores] = (), tasks: list[str] | None = None,
            notes: list[str] | None = None) -> Report:
    """Per-task, per-method scores. `fixed` adds methods known by their scores only; `tasks`
    (default: every task with a run or a fixed score) limits the table."""
    notes = notes if notes is not None else []
    if tasks is None:
        tasks = sorted({r.task for r in runs} | {t for f in fixed for t in f.best_attempt})
    infos = {t: task_info(runs, t, baseline_source, notes) for t in tasks}
    run_methods = sorted({r.method for r in runs if r.task in infos})
    methods = [*run_methods, *(f.method for f in fixed), BASELINE]
    scores: dict[str, dict[str, dict[str, float | None]]] = {m: {} for m in MEASURES}
    counts: dict[str, dict[str, int]] = {}
    for t in tasks:
        info = infos[t]
        counts[t] = {}
        for measure in MEASURES:
            scores[measure][t] = {}
        for m in run_methods:
            mine = [run_scores(r, info) for r in runs if r.task == t and r.method == m]
            counts[t][m] = len(mine)
            scores["best_attempt"][t][m] = _best([a for a, _ in mine], info.direction)
            scores["best_submission"][t][m] = _best([b for _, b in mine], info.direction)
        for f in fixed:
            counts[t][f.method] = f.runs.get(t, 0)
            scores["best_attempt"][t][f.method] = f.best_attempt.get(t)
            scores["best_submission"][t][f.method] = f.best_submission.get(t)
        for measure in MEASURES:
            scores[measure][t][BASELINE] = info.baseline
        counts[t][BASELINE] = 0
    return Report(infos, methods, scores, counts, notes=notes)


# ---------------------------------------------------------------------------------- profiles


def feasible(score: float | None, info: TaskInfo) -> bool:
    if score is None or not math.isfinite(score) or score < 0:
        return False
    return not _better(info.baseline, score, info.direction)


def ceil1(x: float) -> float:
    """Round up to one decimal, ignoring float noise (log10(100) is exactly 2.0)."""
    return math.ceil(round(x * 10, 9)) / 10


def _ratio(best: float, s: float, direction: str) -> float:
    if s == best:
        return 1.0
    num, den = (best, s) if direction == "max" else (s, best)
    return num / den if den != 0 else math.inf


@dataclass
class TaskRatios:
    ratios: dict[str, float]
    feasible: dict[str, bool]
    bound: int  # the largest ratio this task lets a profile need
    infinite: list[str]  # methods whose ratio divided by a zero score


def task_ratios(row: dict[str, float | None], info: TaskInfo, methods: list[str],
                epsilon: float) -> TaskRatios | None:
    """Ratios of one task (None when no method, baseline included, is feasible)."""
    ok = {m: feasible(row.get(m), info) for m in methods}
    good = [row[m] for m in methods if ok[m]]
    if not good:
        return None
    best = _best(good, info.direction)
    assert best is not None
    r = {m: _ratio(best, row[m], info.direction)  # type: ignore[arg-type]
         for m in methods if ok[m]}
    infinite = [m for m, v in r.items() if not math.isfinite(v)]
    worst = max(v for v in r.values() if math.isfinite(v))
    for m in methods:
        if not ok[m] or m in infinite:
            r[m] = (1 + epsilon) * worst
    return TaskRatios(r, ok, math.ceil((1 + epsilon) * worst), infinite)


def _aup(tau: np.ndarray, rho: np.ndarray) -> float:
    """Left Riemann sum, added up step by step in order (as the published figures were)."""
    total = 0.0
    for i in range(len(tau) - 1):
        total += (tau[i + 1] - tau[i]) * rho[i]
    return float(total)


def profiles(report: Report, epsilon: float = 0.05, points: int = 500) -> dict[str, Profile]:
    """Both measures' profiles over one shared tau range (see the module docstring)."""
    per: dict[str, dict[str, TaskRatios]] = {}
    excluded: dict[str, list[str]] = {}
    for measure in MEASURES:
        per[measure], excluded[measure] = {}, []
        for t, row in report.scores[measure].items():
            tr = task_ratios(row, report.tasks[t], report.methods, epsilon)
            if tr is None:
                excluded[measure].append(t)
                continue
            per[measure][t] = tr
            for m in tr.infinite:
                report.notes.append(f"{measure} {t}: {m} scored {row[m]:g}, a ratio against the "
                                    "best divides by zero; it gets the infeasible ratio")
    bounds = [tr.bound for by_task in per.values() for tr in by_task.values()]
    tau_max = ceil1(math.log10(max(bounds))) if bounds else 0.0
    report.tau_max = tau_max
    tau = np.linspace(0.0, tau_max, points)
    out: dict[str, Profile] = {}
    for measure in MEASURES:
        tasks = sorted(per[measure])
        ratios = {t: per[measure][t].ratios for t in tasks}
        rho: dict[str, np.ndarray] = {}
        aup: dict[str, float] = {}
        for m in report.methods:
            logs = np.log10(np.array([ratios[t][m] for t in tasks], dtype=float))
            counts = (logs[None, :] <= tau[:, None]).sum(axis=1) if tasks else np.zeros(points)
            rho[m] = counts / len(tasks) if tasks else np.zeros(points)
            aup[m] = _aup(tau, rho[m]) if tasks else 0.0
        out[measure] = Profile(measure, tasks, report.methods, ratios,
                               {t: per[measure][t].feasible for t in tasks},
                               {t: per[measure][t].bound for t in tasks}, tau, rho, tau_max, aup,
                               excluded[measure])
    return out


def score_runs(runs: list[RunResult], epsilon: float = 0.05, points: int = 500,
               baseline_source: str = "spec", fixed: list[FixedScores] = (),
               tasks: list[str] | None = None, notes: list[str] | None = None) -> Report:
    report = collect(runs, baseline_source, fixed, tasks, notes)
    report.epsilon, report.points = epsilon, points
    report.profiles = profiles(report, epsilon, points)
    return report
