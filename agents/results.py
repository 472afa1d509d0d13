"""A finished run's files, derived from the event log: `result.json` in the format `mlgym
score` reads (docs/results-format.md) and one MLGym-style `.traj` per agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlgym.agents.events import events
from mlgym.agents.ledger import AgentUsage, Ledger
from mlgym.files import atomic_write_json
from mlgym.bus import protocol as P

RESULT_FILE = "result.json"
TRAJ_DIR = "trajectories"


def result_dict(*, task: str, method: str, run_id: str, ledger: Ledger, exit_status: str,
                baseline: dict[str, float], auto_submitted: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    attempts = []
    for a in ledger.attempts:
        item: dict[str, Any] = {"step": a.run_step, "action": "validate" if a.action == "validate" else "submit"}
        if a.scores:
            item["scores"] = a.scores
        if a.seed:
            item["seed"] = a.seed
        if a.error:
            item["error"] = {"code": "evaluation_failed", "message": a.error}
        attempts.append(item)
    final = None
    if ledger.submitted is not None:
        s = ledger.submitted
        final = {"step": s.run_step, "auto": auto_submitted or s.action == "autosubmit"}
        if s.scores:
            final["scores"] = s.scores
        if s.seed:
            final["seed"] = s.seed
        if s.error:
            final["error"] = {"code": "evaluation_failed", "message": s.error}
    out = {
        "format": "mlgym-run-result/1",
        "task": task,
        "method": method,
        "run_id": run_id,
        "attempts": attempts,
        "final_submission": final,
        "exit_status": exit_status,
        "cost_usd": round(ledger.cost, 6),
        "steps": ledger.steps,
        "tokens": ledger.tokens,
        "baseline": baseline,
        "metric": {"name": ledger.metric, "direction": ledger.direction},
        "best_attempt": ledger.best_score(),
        "agents": {n: _agent_result(u) for n, u in ledger.agents.items()},
    }
    out.update(extra or {})
    return out


def _agent_result(u: AgentUsage) -> dict[str, Any]:
    out = {"role": u.role, "model": u.model, "implementation": u.implementation,
           "turns": u.turns, "env_steps": u.env_steps, "tokens": u.tokens,
           "cached_tokens": u.cached_tokens, "cost_usd": round(u.cost_usd, 6),
           "restarts": u.restarts, "exit": u.exit}
    if u.exit_detail:
        out["exit_detail"] = u.exit_detail
    return out


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    return atomic_write_json(run_dir / RESULT_FILE, result, allow_nan=False)


def trajectories(run_dir: Path, *, exit_status: str, submission: str | None,
                 scores: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per agent, MLGym's trajectory layout: environment, trajectory (action, observation,
    response, thought, execution_time, state), history (the messages), info."""
    steps: dict[str, dict[int, P.AgentStep]] = {}
    declared: dict[str, P.AgentStatus] = {}  # the latest status that says what the agent is
    for env in events(run_dir, ["agents/", "status/"]):
        if isinstance(env.body, P.AgentStep):
            steps.setdefault(env.body.agent, {})[env.body.step] = env.body  # a re-recorded step replaces
        elif isinstance(env.body, P.AgentStatus) and (env.body.model or env.body.implementation):
            declared[env.body.agent] = env.body
    out = {}
    for agent, by_step in steps.items():
        ordered = [by_step[k] for k in sorted(by_step)]
        traj, history = [], []
        for s in ordered:
            state = {"open_file": s.state.get("open_file") or "n/a", "working_dir": s.state.get("cwd", "")}
            traj.append({"action": s.action, "observation": s.observation, "response": s.response,
                         "thought": s.thought, "execution_time": round(s.execution_time, 4),
                         "state": json.dumps(state)})
            for m in s.messages:
                h = {k: v for k, v in m.items() if not k.startswith("_")}
                h["agent"] = agent
                history.append(h)
        sent = sum(s.prompt_tokens for s in ordered)
        cached = sum(s.cached_tokens for s in ordered)
        received = sum(s.completion_tokens for s in ordered)
        cost = sum(s.cost_usd for s in ordered)
        out[agent] = {
            "environment": "mlgym_bus",
            "trajectory": traj,
            "history": history,
            "info": {
                "exit_status": exit_status,
                "submission": submission,
                "score": scores,
                "role": ordered[0].role if ordered else "",
                "model": declared[agent].model if agent in declared else "",
                "implementation": declared[agent].implementation if agent in declared else "",
                "model_stats": {"total_cost": round(cost, 6), "instance_cost": round(cost, 6),
                                "tokens_sent": sent, "tokens_cached": cached,
                                "tokens_received": received, "api_calls": len(ordered)},
            },
        }
    return out


def write_trajectories(run_dir: Path, trajs: dict[str, dict[str, Any]]) -> list[Path]:
    d = run_dir / TRAJ_DIR
    d.mkdir(exist_ok=True)
    paths = []
    for agent, data in trajs.items():
        paths.append(atomic_write_json(d / f"{agent}.traj", data))
    return paths
