"""An agent written in another language joins a run: agents/examples/agent.mjs (Node.js, on the
bus client of examples/js) plays battleOfSexes through the wire protocol only; the supervisor
accounts for it, exports its trajectory like any other agent's, and credits the model it
declared (result.json, run.json, .traj, `mlgym score`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import external_agent_run, require

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "examples" / "js"
AGENT = ROOT / "agents" / "examples" / "agent.mjs"
MODEL = "fixed-strategy:always-zero"  # what the JS agent declares it runs


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node is not None and npm is not None, "Node.js and npm are not installed")
    if not (JS_DIR / "node_modules" / "zeromq").exists():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
                              timeout=540)
        require(done.returncode == 0, f"npm ci failed (offline?): {done.stderr[-2000:]}")
    return node


@pytest.mark.timeout(600)
def test_a_javascript_agent_plays_a_run(node, tmp_path):
    env = {**os.environ, "MLGYM_OFFLINE": "1"}
    run_dir = tmp_path / "run"
    strategy = tmp_path / "always_zero.py"
    strategy.write_text('def row_strategy(history):\n    """Always 0."""\n    return 0\n')
    with external_agent_run(tmp_path, env) as (sup, run_info):
        bus_url = run_info["bus"]
        js = subprocess.run([node, str(AGENT), "--bus", bus_url, "--name", "agent", "--strategy-file", str(strategy),
                             "--model", MODEL], capture_output=True, text=True, timeout=120)
        assert js.returncode == 0, js.stderr[-3000:]
        last = json.loads(js.stdout.strip().splitlines()[-1])
        assert last["exit_status"] == "submitted" and last["scores"]["Score"] > 1.0227
        out, _ = sup.communicate(timeout=60)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["exit_status"] == "submitted"
    assert result["final_submission"]["scores"]["Score"] == last["scores"]["Score"]
    assert result["agents"]["agent"]["env_steps"] == 4
    traj = json.loads((run_dir / "trajectories" / "agent.traj").read_text())
    firsts = [t["action"].split("\n")[0].split(":")[0] for t in traj["trajectory"]]
    assert firsts == ['open "strategy.py"', "edit 1", "validate", "submit"]
    # credited as what it declared, not as the team file's default model (scripted:auto)
    me = result["agents"]["agent"]
    assert me["model"] == MODEL and me["implementation"].startswith("javascript/agent.mjs (node v")
    assert result["method"] == f"single/{MODEL}"
    assert json.loads((run_dir / "run.json").read_text())["members"]["agent"] == {
        "role": "single", "external": True, "model": MODEL, "implementation": me["implementation"]}
    assert (traj["info"]["model"], traj["info"]["implementation"]) == (MODEL, me["implementation"])
    scored = subprocess.run([sys.executable, "-m", "mlgym.cli", "score", str(run_dir), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout.strip().splitlines()[-1])
    assert report["methods"] == [f"single/{MODEL}", "Baseline"]
