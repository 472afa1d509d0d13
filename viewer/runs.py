"""One run folder as the viewer describes it: its configuration (run.json), its result
(result.json, docs/results-format.md), whether it is still going, and which of the files that
other tools add are there. Every file may be missing or malformed (a run that is starting, a
crash, an older or newer writer): what cannot be read is left out and said, never fatal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mlgym.viewer.index import RunIndex

MAX_JSON = 16 * 1024 * 1024
LIVE = ("starting", "running")


def load_json(path: Path) -> tuple[Any, str]:
    """(the decoded file, "") or (None, why not)."""
    try:
        if path.stat().st_size > MAX_JSON:
            return None, f"{path.name} is larger than {MAX_JSON // 2**20} MiB"
        return json.loads(path.read_bytes()), ""
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: {exc}"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_of(run_dir: Path, run: dict[str, Any] | None, result: dict[str, Any] | None) -> str:
    """finished, running, starting, stopped (resumable), interrupted (its supervisor is gone
    without writing a result), or unknown (a folder with an event log only)."""
    if run is None:
        return "finished" if result is not None else "unknown"
    status = str(run.get("status") or "unknown")
    if status in LIVE:
        pids, _ = load_json(run_dir / "pids.json")
        sup = pids.get("supervisor") if isinstance(pids, dict) else None
        if sup is not None and not _alive(sup):
            return "interrupted"
    return status


def members_of(run: dict[str, Any] | None) -> dict[str, str]:
    team = run.get("team") if isinstance(run, dict) else None
    agents = team.get("agents") if isinstance(team, dict) else None
    if not isinstance(agents, list):
        return {}
    return {
        str(a.get("name")): str(a.get("role", ""))
        for a in agents
        if isinstance(a, dict) and a.get("name")
    }


def _models(run: dict[str, Any] | None) -> list[str]:
    team = run.get("team") if isinstance(run, dict) else None
    agents = team.get("agents") if isinstance(team, dict) else []
    return sorted(
        {str(a.get("model")) for a in agents or [] if isinstance(a, dict) and a.get("model")}
    )


def _relative(score: float | None, base: float | None, direction: str) -> float | None:
    """How much better than the baseline, as a fraction of it (positive: better)."""
    if score is None or base is None or not base:
        return None
    gain = (score - base) if direction != "min" else (base - score)
    return gain / abs(base)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def files_of(run_dir: Path) -> dict[str, Any]:
    """Which of a run's optional files are there."""
    traj = run_dir / "trajectories"
    analysis = run_dir / "analysis"
    return {
        "log": (run_dir / "events.sqlite").is_file(),
        "result": (run_dir / "result.json").is_file(),
        "trajectories": sorted(p.name for p in traj.glob("*.traj")) if traj.is_dir() else [],
        "artefacts": (run_dir / "artefacts").is_dir(),
        "analysis": analysis.is_dir() and any(analysis.iterdir()),
        "logs": sorted(p.name for p in run_dir.glob("*.log") if p.is_file())
        + sorted(f"logs/{p.name}" for p in (run_dir / "logs").glob("*.log") if p.is_file()),
    }


def describe(name: str, run_dir: Path, idx: RunIndex | None = None) -> dict[str, Any]:
    """The run list's row for one run (and the head of its page)."""
    run, run_err = load_json(run_dir / "run.json")
    result, result_err = load_json(run_dir / "result.json")
    run = run if isinstance(run, dict) else None
    result = result if isinstance(result, dict) else None
    status = status_of(run_dir, run, result)
    team = (run or {}).get("team")
    metric = (result or {}).get("metric") or {}
    tl = idx.timeline if idx is not None else None
    info = tl.info if tl is not None else {}
    metric_name = str(metric.get("name") or info.get("metric") or "")
    direction = str(
        metric.get("direction") or (info.get("directions") or {}).get(metric_name) or "max"
    )
    baseline = _num(((result or {}).get("baseline") or info.get("baseline") or {}).get(metric_name))
    final = _num(
        (((result or {}).get("final_submission") or {}).get("scores") or {}).get(metric_name)
    )
    best = _num((result or {}).get("best_attempt"))
    if best is None and tl is not None:
        best = tl.best()
    score = final if final is not None else best
    row: dict[str, Any] = {
        "name": name,
        "run_id": (run or result or {}).get("run_id") or run_dir.name,
        "task": (run or result or {}).get("task") or info.get("task") or "",
        "team": (team.get("name") if isinstance(team, dict) else None)
        or (result or {}).get("team")
        or info.get("team")
        or "",
        "method": (result or {}).get("method") or (run or {}).get("method") or "",
        "models": _models(run),
        "status": status,
        "live": status in LIVE,
        "has_result": result is not None,
        "exit_status": (result or {}).get("exit_status") or (run or {}).get("exit_status") or "",
        "metric": metric_name,
        "direction": direction,
        "score": score,
        "final": final,
        "best": best,
        "baseline": baseline,
        "vs_baseline": _relative(score, baseline, direction),
        "steps": (result or {}).get("steps"),
        "tokens": (result or {}).get("tokens"),
        "cost_usd": (result or {}).get("cost_usd"),
        "seconds": _num((result or {}).get("seconds")) or _num((run or {}).get("elapsed_s")),
        "started": None,
        "errors": [e for e in (run_err, result_err) if e],
    }
    if tl is not None and tl.count:
        if result is None:
            row.update(steps=tl.steps, tokens=tl.tokens, cost_usd=round(tl.cost, 6))
        row["started"] = tl.first_ts
        if row["live"]:
            row["seconds"] = round(time.time() - tl.first_ts, 1)
    if row["started"] is None and run is not None and _num(run.get("updated")) is not None:
        row["started"] = round(float(run["updated"]) - float(_num(run.get("elapsed_s")) or 0.0), 3)
    if row["started"] is None:
        try:
            row["started"] = round(run_dir.stat().st_mtime, 3)
        except OSError:
            pass
    return row


def config(run_dir: Path) -> dict[str, Any]:
    """run.json and result.json as they are (None when missing), with what could not be read."""
    run, run_err = load_json(run_dir / "run.json")
    result, result_err = load_json(run_dir / "result.json")
    return {"run": run, "result": result, "errors": [e for e in (run_err, result_err) if e]}
