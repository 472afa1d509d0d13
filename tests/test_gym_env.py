"""The Gymnasium client: registered ids, gymnasium's own checker, reward semantics."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from mlgym.bus.base import RpcError
from mlgym.env_server.gym_env import MLGymEnv  # registers mlgym/<taskId>-v0
from mlgym.env_server.sandbox import WORKSPACE
from conftest import require_local_sandbox

ALWAYS_DEFECT = "def row_strategy(history):\n    return 1\n"


@pytest.fixture(scope="module")
def env():
    require_local_sandbox()
    e = gymnasium.make("mlgym/prisonersDilemma-v0", max_steps=6)
    yield e
    e.close()


def test_registered_for_every_task():
    ids = [k for k in gymnasium.registry if k.startswith("mlgym/")]
    assert "mlgym/prisonersDilemma-v0" in ids and "mlgym/regressionKaggleHousePrice-v0" in ids


def test_passes_gymnasium_env_checker(env):
    check_env(env.unwrapped, skip_render_check=True)


def test_reset_step_reward_and_truncation(env):
    obs, info = env.reset(seed=0)
    assert "row_strategy" in obs and info["max_steps"] == 6
    obs, reward, terminated, truncated, info = env.step("ls")
    assert "strategy.py" in obs and "(Current Step: 1, Remaining Steps: 5)" in obs
    assert reward == 0.0 and not terminated and not truncated
    obs, reward, terminated, truncated, info = env.step("validate")
    # the starter strategy is the baseline: normalised score ~1.0, so the reward is ~0
    assert abs(reward) < 0.03 and info["scores"]["Score"] > 2.3
    first = info["scores"]["Score"]
    env.step(f"cat > strategy.py <<'EOF'\n{ALWAYS_DEFECT}EOF")
    obs, reward, terminated, truncated, info = env.step("validate")
    second = info["scores"]["Score"]
    assert reward == pytest.approx((second - first) / 2.3716301918029785, abs=1e-9)
    obs, reward, terminated, truncated, info = env.step("echo 5")
    assert not terminated and not truncated
    obs, reward, terminated, truncated, info = env.step("echo 6")  # budget of 6 steps reached
    assert truncated and not terminated and info["exit_status"] == "autosubmission"
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("ls")


def test_submit_terminates(env):
    env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step("submit")
    assert terminated and not truncated and info["exit_status"] == "submitted"


def test_files_and_session_info_are_not_steps(env):
    gym = env.unwrapped
    unopened = MLGymEnv("prisonersDilemma", endpoint="ipc:///nonexistent/env.sock")
    with pytest.raises(RuntimeError, match="reset"):
        unopened.session_info()
    unopened.close()
    env.reset(seed=2)
    info = gym.session_info()
    assert (info["step"], info["state"], info["task"]) == (0, "open", "prisonersDilemma")
    assert info["workspace"] in (WORKSPACE, info["workdir"])  # the latter: no namespaces here
    assert b"def row_strategy" in gym.read_file("strategy.py")
    assert gym.write_file("sub/strategy.py", ALWAYS_DEFECT) == len(ALWAYS_DEFECT)
    assert gym.write_file(f"{WORKSPACE}/strategy.py", ALWAYS_DEFECT.encode()) == len(ALWAYS_DEFECT)
    written = ALWAYS_DEFECT.encode()
    assert gym.read_file("strategy.py") == gym.read_file("sub/strategy.py") == written
    assert gym.read_file("strategy.py", max_bytes=3) == b"def"
    for bad in ("../../../etc/passwd", "/etc/passwd", "missing.py"):
        with pytest.raises(RpcError):
            gym.read_file(bad)
    assert gym.session_info()["step"] == 0  # none of that was a step
    _, reward, *_ = env.step("validate")
    info = gym.session_info()
    assert info["step"] == 1 and info["best_scores"]["Score"] > 2.3716 and reward > 0


EMBEDDED = ("import gymnasium, mlgym.env_server.gym_env\n"
            "e = gymnasium.make('mlgym/prisonersDilemma-v0'{kw})\n"
            "e.reset(seed=0); e.step('ls'); e.close()\n")


@pytest.mark.parametrize(("kw", "quiet"), [("", True), (", log_level='info'", False)])
def test_embedded_server_logs_warnings_only_unless_asked(kw, quiet):
    require_local_sandbox()
    env = {k: v for k, v in os.environ.items() if k != "MLGYM_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", EMBEDDED.format(kw=kw)], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    infos = [ln for ln in r.stderr.splitlines() if "[info" in ln]
    assert (infos == []) is quiet, r.stderr[-3000:]
    assert quiet or any("sandbox_started" in ln for ln in infos)
