"""`mlgym agent` started on its own joins a run: the supervisor starts everything but the
external agent, which finds the run's endpoints and session on the bus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import external_agent_run, assert_beats_baseline


@pytest.mark.timeout(150)
def test_mlgym_agent_joins_a_run(tmp_path):
    env = {**os.environ, "MLGYM_OFFLINE": "1"}
    run_dir = tmp_path / "run"
    with external_agent_run(tmp_path, env) as (sup, run_info):
        run_id = run_info["run_id"]
        agent = subprocess.run([sys.executable, "-m", "mlgym.cli", "agent", "--role", "single", "--name", "agent",
                                "--run", run_id, "--bus", str(run_dir), "--model", "scripted:auto"],
                               capture_output=True, text=True, env=env, timeout=120)
        assert agent.returncode == 0, agent.stderr[-3000:]
        assert json.loads(agent.stdout.strip().splitlines()[-1]) == {"agent": "agent", "exit_status": "submitted"}
        out, _ = sup.communicate(timeout=60)
    assert sup.returncode == 0, (tmp_path / "sup.log").read_text()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["exit_status"] == "submitted"
    assert_beats_baseline(result, 1.0227)
    assert not (run_dir / "logs" / "agent.log").exists()  # the supervisor did not start it


def test_an_agent_on_a_bus_without_a_run_says_so(tmp_path):
    from mlgym.bus.broker import spawn

    with spawn(tmp_path / "run") as broker:
        # no RunInfo on this bus at all: the agent says so instead of hanging
        r = subprocess.run([sys.executable, "-c",
                            "import asyncio; from mlgym.agents.runtime import Agent, Options;"
                            f"a = Agent(Options(name='x', role='coder', run='r', bus='{broker.url}', "
                            "model='scripted:auto', info_timeout_s=1.0)); asyncio.run(a.run())"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no RunInfo" in r.stderr
