"""A folder of runs, compared by team design: every run analysed (and its analysis written
beside it), one row per run, aggregates per design, and AUP per design computed by `mlgym
score`'s code (tasks/scoring.py) with each design as a method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from mlgym.agents.analyze import report
from mlgym.agents.analyze.log import read
from mlgym.agents.analyze.metrics import Analysis, analyse
from mlgym.bus.broker import LOG_FILE

MAX_DEPTH = 3


def find_runs(folder: Path) -> list[Path]:
    """Run folders (holding an event log) under `folder`, at most MAX_DEPTH levels down."""
    out: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        if (d / LOG_FILE).is_file():
            out.append(d)
            return
        if depth >= MAX_DEPTH:
            return
        for child in sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink()):
            if child.name not in (report.ANALYSIS_DIR, "env", "logs", "artefacts", "trajectories"):
                walk(child, depth + 1)

    walk(folder, 0)
    return out


def analyse_run(run_dir: Path) -> Analysis:
    return analyse(read(run_dir), str(run_dir))


def _result(run_dir: Path, d: dict[str, Any]) -> dict[str, Any]:
    """The run's result.json (what `mlgym score` reads), else one made from the analysis."""
    try:
        res = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        res = {
            "task": d["task"],
            "run_id": d["run"],
            "exit_status": d["exit_status"],
            "attempts": [
                {
                    "step": v["run_step"],
                    "action": "validate",
                    **({"scores": v["scores"]} if v["scores"] else {}),
                }
                for v in d["validations"]
            ],
            "final_submission": (
                {"scores": d["final_submission"]["scores"]} if d.get("final_submission") else None
            ),
            "metric": {"name": d["metric"]["name"], "direction": d["metric"]["direction"]},
            **(
                {"baseline": {d["metric"]["name"]: d["baseline"]}}
                if d["baseline"] is not None
                else {}
            ),
        }
    res["method"] = d["team"] or "?"  # compared by team design
    return res


def aup_by_design(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    from mlgym.tasks import scoring

    runs = []
    for r in results:
        if r.get("partial"):
            continue
        try:
            runs.append(msgspec.convert(r, scoring.RunResult))
        except msgspec.ValidationError:
            continue
    if not runs:
        return {}
    try:
        rep = scoring.score_runs(runs)
    except scoring.ResultsError:
        return {}
    return {m: {k: round(v, 3) for k, v in p.aup.items()} for m, p in rep.profiles.items()}


def analyse_folder(
    folder: Path,
    out: Path | None,
    *,
    figures: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """Analyse every run under `folder`; returns the folder's summary and the problems met
    (a run that cannot be read is named there, the others go on)."""
    rows, results, problems = [], [], []
    for run_dir in find_runs(folder):
        try:
            a = analyse_run(run_dir)
        except Exception as exc:  # one unreadable run must not hide the others
            problems.append(f"{run_dir}: {type(exc).__name__}: {exc}")
            continue
        dest = (out / run_dir.relative_to(folder)) if out else run_dir / report.ANALYSIS_DIR
        d = report.write_run(a, dest, figures=figures)
        rows.append(report.run_row(d))
        results.append(_result(run_dir, d))
    aup = aup_by_design(results)
    summary = {
        "format": "mlgym-analysis-folder/1",
        "folder": str(folder),
        "runs": rows,
        "designs": report.designs(rows, aup),
        "problems": problems,
    }
    target = out or folder / report.ANALYSIS_DIR
    if rows:
        report.write_folder(summary, rows, target)
    return summary, problems
