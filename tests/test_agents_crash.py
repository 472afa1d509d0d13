"""Crashes mid-run: an agent killed with SIGKILL is restarted and resumes from the event log;
a killed environment server is restarted and takes its session over; a killed supervisor's run
is continued by `mlgym resume`. Each run completes, and the event log has no gap."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_beats_baseline

from mlgym.agents import config as C
from mlgym.agents.events import events, gaps
from mlgym.agents.supervisor import resume_run, run_team
from mlgym.bus import protocol as P


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")


def env_commands(run_dir: Path, agent: str | None = None) -> int:
    try:
        return sum(1 for e in events(run_dir, ["env/"])
                   if isinstance(e.body, P.CommandEvent) and (agent is None or e.body.agent == agent))
    except FileNotFoundError:
        return 0


async def kill_after(run_dir: Path, who: str, n: int, agent: str | None = None) -> int:
    """SIGKILL `who` ("env" or an agent name) once `n` environment commands were logged."""
    while env_commands(run_dir, agent) < n:
        await asyncio.sleep(0.05)
    pids = json.loads((run_dir / "pids.json").read_text())
    pid = pids["env"] if who == "env" else pids["agents"][who]
    os.kill(pid, signal.SIGKILL)
    return pid


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def agent_steps(run_dir: Path, name: str) -> list[P.AgentStep]:
    return [e.body for e in events(run_dir, [f"agents/{name}/"]) if isinstance(e.body, P.AgentStep)]


@pytest.mark.timeout(150)
async def test_sigkill_of_an_agent_mid_run(tmp_path):
    run_dir = tmp_path / "run"
    killer = asyncio.create_task(kill_after(run_dir, "coder", 3, agent="coder"))
    result = await run_team("prisonersDilemma", C.load_team("default"), run_dir=run_dir, progress=False)
    assert killer.done() and killer.result() > 0
    assert result["exit_status"] == "submitted"
    assert result["final_submission"]["scores"]["Score"] > 2.3716
    assert result["agents"]["coder"]["restarts"] == 1
    assert gaps(run_dir) == []
    # the restarted coder went on from its logged turns: no turn number twice with different
    # actions, and it finished both work items
    steps = agent_steps(run_dir, "coder")
    by_step: dict[int, set[str]] = {}
    for s in steps:
        by_step.setdefault(s.step, set()).add(s.action)
    assert sorted(by_step) == list(range(1, max(by_step) + 1))
    assert sum(1 for s in steps if s.action.startswith("done ")) == 2
    assert "--- start 2:" in (run_dir / "logs" / "coder.log").read_text()


@pytest.mark.timeout(150)
async def test_sigkill_of_the_environment_server_mid_run(tmp_path):
    run_dir = tmp_path / "run"
    killer = asyncio.create_task(kill_after(run_dir, "env", 3))
    result = await run_team("prisonersDilemma", C.load_team("default"), run_dir=run_dir, progress=False)
    assert killer.done()
    assert result["env_restarts"] == 1
    assert result["exit_status"] == "submitted"
    assert result["final_submission"]["scores"]["Score"] > 2.3716
    infos = [e.body for e in events(run_dir, ["run/info"])]
    # the restarted server took the session over, workspace as the agents left it
    assert [i.generation for i in infos] == [1, 2] and infos[0].session == infos[1].session
    assert gaps(run_dir) == []


@pytest.mark.timeout(180)
async def test_killed_supervisor_run_is_resumed(tmp_path):
    run_dir = tmp_path / "run"
    sup = subprocess.Popen([sys.executable, "-m", "mlgym.cli", "run", "--task", "battleOfSexes", "--team", "single",
                            "--run-dir", str(run_dir), "--no-progress"],
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "sup.log", "wb"))
    try:
        deadline = time.monotonic() + 90
        while env_commands(run_dir) < 4:
            assert sup.poll() is None and time.monotonic() < deadline, (tmp_path / "sup.log").read_text()[-3000:]
            await asyncio.sleep(0.05)
        sup.kill()
        sup.wait()
    finally:
        if sup.poll() is None:
            sup.kill()
    pids = json.loads((run_dir / "pids.json").read_text())
    children = [pids["broker"], pids["env"], *pids["agents"].values()]
    deadline = time.monotonic() + 30
    while any(alive(p) for p in children):  # they die with their parent (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, f"children still alive: {[p for p in children if alive(p)]}"
        await asyncio.sleep(0.05)
    before = agent_steps(run_dir, "agent")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    result = await resume_run(run_dir, progress=False)
    assert result["exit_status"] == "submitted"
    assert_beats_baseline(result, 1.0227)
    after = agent_steps(run_dir, "agent")
    assert len(after) > len(before) and after[: len(before)] == before
    assert gaps(run_dir) == []
    epochs = {e.epoch for e in events(run_dir)}
    assert len(epochs) == 2  # a second broker epoch, sequence numbers going on
    with pytest.raises(Exception, match="already"):
        await resume_run(run_dir, progress=False)
