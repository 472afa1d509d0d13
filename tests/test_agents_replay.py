"""A recorded run replays action for action (`replay:` backend, from the run directory or from
its .traj file), and the exported .traj files have MLGym's layout."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from mlgym.agents import config as C
from mlgym.agents.events import events
from mlgym.agents.supervisor import run_team
from mlgym.bus import protocol as P
from mlgym.env_server.sandbox import WORKSPACE


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLGYM_OFFLINE", "1")
        result = asyncio.run(run_team("prisonersDilemma", C.load_team("single"), run_dir=run_dir, progress=False))
    return run_dir, result


def actions(run_dir: Path, agent: str = "agent") -> list[str]:
    return [e.body.action for e in events(run_dir, [f"agents/{agent}/"]) if isinstance(e.body, P.AgentStep)]


def observations(run_dir: Path, agent: str = "agent") -> list[str]:
    """The agent's observations, its session's workspace named /home/agent/workspace even where
    the sandbox had no namespaces (then commands see the workspace at its host folder, which
    differs from run to run: sandbox/nobwrap.py)."""
    host = re.compile(re.escape(str(run_dir.resolve() / "env" / "sessions")) + r"/[^/\s]+/workspace")
    return [host.sub(WORKSPACE, e.body.observation) for e in events(run_dir, [f"agents/{agent}/"])
            if isinstance(e.body, P.AgentStep)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("source", ["run_dir", "traj"])
async def test_replay_reproduces_the_recorded_actions(recorded, source, tmp_path, monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")
    run_dir, first = recorded
    src = run_dir if source == "run_dir" else run_dir / "trajectories" / "agent.traj"
    team = C.override_models(C.load_team("single"), f"replay:{src}")
    again = tmp_path / "again"
    result = await run_team("prisonersDilemma", team, run_dir=again, progress=False)
    assert actions(again) == actions(run_dir) and len(actions(again)) == 8
    # the environment is deterministic too: same outputs for the file and score commands
    a, b = observations(run_dir), observations(again)
    assert [x for x in a if "Evaluation Score" in x] == [y for y in b if "Evaluation Score" in y]
    assert result["final_submission"]["scores"] == first["final_submission"]["scores"]
    assert result["method"] == f"single/replay:{src}"


def test_traj_has_mlgyms_layout(recorded):
    run_dir, result = recorded
    data = json.loads((run_dir / "trajectories" / "agent.traj").read_text())
    assert set(data) >= {"environment", "trajectory", "history", "info"}
    assert len(data["trajectory"]) == 8
    for step in data["trajectory"]:
        assert set(step) >= {"action", "observation", "response", "thought", "execution_time", "state"}
        assert isinstance(step["execution_time"], float)
        state = json.loads(step["state"])
        assert set(state) == {"open_file", "working_dir"}
        assert "```" in step["response"] and step["action"] in step["response"]
    assert data["trajectory"][-1]["action"] == "submit"
    roles = [m["role"] for m in data["history"]]
    assert roles[:2] == ["system", "user"] and roles.count("assistant") == 8
    assert "COMMANDS:" in data["history"][0]["content"] and "DISCUSSION" in data["history"][0]["content"]
    info = data["info"]
    assert info["exit_status"] == "submitted" and info["submission"] == "strategy.py"
    stats = info["model_stats"]
    assert stats["api_calls"] == 8 and stats["tokens_sent"] > stats["tokens_received"] > 0
    assert set(stats) >= {"total_cost", "instance_cost", "tokens_sent", "tokens_received", "api_calls"}
    assert info["score"][-1] == result["final_submission"]["scores"]
