"""MLGym's own run folders as run results, so `mlgym score` reads them as they are.

MLGym writes one folder per run, named `<model>__<task>__<config>__t-..__p-..__c-..__install-N
[__suffix]_run_<k>`, holding `results.json` (`{"agent": [metrics of each evaluation, in order],
"baseline": {metrics}}`) and `<task>.traj` (whose `info.exit_status` says how the run ended).
The method is the folder's model field, the task its task field, the run id the folder name.
As MLGym's published scoring does, the last evaluation counts as the final submission (a run
that ran out of steps was auto-submitted; one that never produced a valid artefact has its
last validation as its last score).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec

from mlgym.tasks.scoring import Attempt, ResultsError, RunResult, Submission

FORMAT = "mlgym-trajectory-folder"
MAX_TRAJ_BYTES = 256 * 2**20  # a .traj larger than this is not read for its exit status


class _TrajInfo(msgspec.Struct):
    exit_status: str = ""


class _Traj(msgspec.Struct):
    info: _TrajInfo = msgspec.field(default_factory=_TrajInfo)


def parse_folder_name(name: str) -> tuple[str, str]:
    """(model, task) from an MLGym run folder name."""
    parts = name.split("__")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        raise ValueError(f"{name!r} is not an MLGym run folder name (<model>__<task>__<config>...)")
    return parts[0], parts[1]


def _numbers(obj: Any) -> dict[str, float]:
    if not isinstance(obj, dict):
        return {}
    out = {}
    for k, v in obj.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


def exit_status(folder: Path) -> str:
    """`info.exit_status` of the folder's .traj file ("" when there is none)."""
    for traj in sorted(folder.glob("*.traj")):
        if traj.stat().st_size > MAX_TRAJ_BYTES:
            return ""
        try:
            return msgspec.json.decode(traj.read_bytes(), type=_Traj).info.exit_status
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ""
    return ""


def read_run(results: Path) -> RunResult:
    """One MLGym run folder (given by its results.json) as a run result."""
    folder = results.parent
    try:
        model, task = parse_folder_name(folder.name)
    except ValueError as exc:
        raise ResultsError(f"{results}: {exc}") from None
    try:
        obj = json.loads(results.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{results}: not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("agent", []), list):
        raise ResultsError(f"{results}: not an MLGym results.json (expected {{\"agent\": [...], "
                           "\"baseline\": {...}})")
    evaluations = [_numbers(a) for a in obj.get("agent", [])]
    status = exit_status(folder)
    attempts = [Attempt(step=i, action="validate", scores=s) for i, s in enumerate(evaluations, 1)]
    final = None
    if attempts:
        if status.startswith(("submitted", "autosubmission")):
            attempts[-1].action = "submit"
        final = Submission(step=len(attempts), scores=evaluations[-1], auto=status != "submitted")
    return RunResult(task=task, method=model, run_id=folder.name, attempts=attempts,
                     final_submission=final, exit_status=status,
                     baseline=_numbers(obj.get("baseline")) or None, steps=0,
                     format=FORMAT)
