"""What an attempt's end means for the sweep: a run that ended on its merits (`done`, whatever
its score), an infrastructure failure worth another attempt (`infra`), a set-up error no retry
can mend (`config`), or a stop the sweep asked for (`interrupted`, resumed next time).

Read from the run folder (run.json, result.json: docs/results-format.md) first, the process's
exit second: a run whose worker died after it had finished is finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlgym.sweep.attempt import AttemptExit

# agents' typed exits (docs/results-format.md): the model's service failed, not the agent
INFRA_EXITS = ("model_unreachable", "rate_limited")
# no retry mends these: a key, a model name, a request the server refuses
CONFIG_EXITS = ("auth_error", "bad_request")

Kind = Literal["done", "infra", "config", "interrupted"]


@dataclass
class Outcome:
    kind: Kind
    reason: str  # short: submitted, env_failed, model_unreachable, killed, node_lost, ...
    detail: str = ""
    score: float | None = None  # the final submission's, priority metric
    best: float | None = None  # the best attempt's
    cost_usd: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.kind, "reason": self.reason, "detail": self.detail[-800:],
                "score": self.score, "best": self.best, "cost_usd": self.cost_usd,
                "run_seconds": self.seconds}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """result.json of a run whose run.json says finished; None otherwise."""
    state = read_json(run_dir / "run.json")
    if state is None or state.get("status") != "finished":
        return None
    return read_json(run_dir / "result.json")


def from_result(result: dict[str, Any]) -> Outcome:
    metric = (result.get("metric") or {}).get("name")
    final = result.get("final_submission") or {}
    score = (final.get("scores") or {}).get(metric) if metric else None
    out = Outcome("done", str(result.get("end_reason") or result.get("exit_status") or "finished"),
                  score=score, best=result.get("best_attempt"), cost_usd=float(result.get("cost_usd") or 0.0),
                  seconds=float(result.get("seconds") or 0.0))
    if result.get("end_reason") == "env_failed" or result.get("exit_status") == "env_failed":
        out.kind, out.reason = "infra", "env_failed"
        out.detail = "the environment server kept crashing"
        return out
    agents = result.get("agents") or {}
    for kinds, kind in ((INFRA_EXITS, "infra"), (CONFIG_EXITS, "config")):
        hit = {n: a for n, a in agents.items() if isinstance(a, dict) and a.get("exit") in kinds}
        if hit:
            name, a = next(iter(hit.items()))
            out.kind, out.reason = kind, str(a["exit"])
            out.detail = f"{name}: {a.get('exit_detail', '')}".strip()
            return out
    return out


def classify(run_dir: Path | None, ex: AttemptExit) -> Outcome:
    """The outcome of one attempt, from its run folder (None: it never came back) and exit."""
    seconds = ex.child_s
    if run_dir is not None:
        result = finished_result(run_dir)
        if result is not None:
            return from_result(result)
        state = read_json(run_dir / "run.json")
    else:
        state = None
    if ex.lost:
        return Outcome("infra", "node_lost" if _is_lost_worker(ex.lost) else "attempt_failed", ex.lost,
                       seconds=seconds)
    status = (state or {}).get("status")
    if ex.interrupted and status in (None, "stopped", "starting"):
        return Outcome("interrupted", "interrupted", "stopped by the sweep; it resumes next time",
                       seconds=seconds)
    if state is not None:
        how = f"exit {ex.returncode}" if (ex.returncode or 0) >= 0 else f"signal {-(ex.returncode or 0)}"
        return Outcome("infra", "killed", f"the run stopped unfinished ({status}, {how}): {_last_line(ex.log_tail)}",
                       seconds=seconds)
    return Outcome("infra", "start_failed", _last_line(ex.log_tail) or f"exit {ex.returncode}", seconds=seconds)


def _is_lost_worker(text: str) -> bool:
    return any(w in text for w in ("WorkerCrashed", "NodeDied", "OwnerDied", "ObjectLost", "ActorDied",
                                   "LocalRayletDied", "RaySystemError", "Unschedulable"))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or [""])[-1][:500]
