"""The three repeated games: published baselines reproduced (10,000 games x 10 rounds), clear
errors for bad strategies, and agent code that cannot reach the secret opponent."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from mlgym.tasks import registry
from mlgym.tasks.spec import load_spec

PUBLISHED = {"prisonersDilemma": 2.3716301918029785, "battleOfSexes": 1.0226699113845825,
             "blotto": -0.24797001481056213}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    old = os.environ.get("MLGYM_HOME")
    os.environ["MLGYM_HOME"] = str(tmp_path_factory.mktemp("mlgym-home"))
    yield
    if old is None:
        os.environ.pop("MLGYM_HOME", None)
    else:
        os.environ["MLGYM_HOME"] = old


def task_with(tmp: Path, task_id: str, **params) -> registry.Task:
    """A copy of the task with some [params] changed (short limits for the time-out tests)."""
    dest = tmp / "tasks" / task_id
    shutil.copytree(registry.TASKS_ROOT / task_id, dest)
    shutil.copytree(registry.COMMON_DIR, dest.parent / "_common")  # the layout evaluators expect
    text = (dest / "task.toml").read_text()
    for key, value in params.items():
        lines = [f"{key} = {value}" if line.startswith(f"{key} = ") else line for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    (dest / "task.toml").write_text(text)
    return registry.Task(load_spec(dest), dest)


def evaluate(task: registry.Task, code: str | Path, tmp: Path, name: str = "e", seed: int = 0) -> dict:
    work = tmp / name
    work.mkdir(parents=True)
    if isinstance(code, Path):
        strategy = code
    else:
        strategy = work / "strategy.py"
        strategy.write_text(textwrap.dedent(code))
    prepared = registry.prepare(task)
    return registry.evaluate_unsandboxed(task, prepared, strategy, work, python=sys.executable, seed=seed)


@pytest.mark.parametrize("task_id", sorted(PUBLISHED))
def test_baseline_reproduces_published_score(home, tmp_path, task_id):
    task = registry.load_task(task_id)
    res = evaluate(task, task.dir / "workspace" / "strategy.py", tmp_path)
    assert "scores" in res, res
    assert res["details"]["games"] == 10_000 and res["details"]["rounds"] == 10
    assert res["details"]["isolation"].startswith("landlock")
    assert abs(res["scores"]["Score"] - PUBLISHED[task_id]) <= 0.02, res


def test_deterministic_given_seed(home, tmp_path):
    task = registry.load_task("prisonersDilemma")
    base = task.dir / "workspace" / "strategy.py"
    a = evaluate(task, base, tmp_path, "a", seed=7)["scores"]["Score"]
    b = evaluate(task, base, tmp_path, "b", seed=7)["scores"]["Score"]
    assert a == b


def test_known_strategies_score_what_the_rules_say(home, tmp_path):
    # always defect vs the 11-strategy mixture, and BoS "always 0" vs the 0.8/0.2 follower: exact
    # expectations by hand are 5 * P(col 0) + 1 * P(col 1) and so on; a loose band checks wiring.
    pd_task = registry.load_task("prisonersDilemma")
    res = evaluate(pd_task, "def row_strategy(history):\n    return 1\n", tmp_path, "defect")
    assert 1.5 < res["scores"]["Score"] < 3.5
    bos = registry.load_task("battleOfSexes")
    # round 1: column plays 1 -> payoff 0; later rounds it copies our first move (0) w.p. 0.8 -> 2*0.8
    res = evaluate(bos, "def row_strategy(history):\n    return 0\n", tmp_path, "zero")
    assert res["scores"]["Score"] == pytest.approx(0.9 * 0.8 * 2, abs=0.01)


@pytest.mark.parametrize(("task_id", "body", "code", "needle"), [
    ("prisonersDilemma", "return 2", "illegal_move", "must be 0 or 1"),
    ("prisonersDilemma", "return 0.5", "illegal_move", "expected an integer"),
    ("battleOfSexes", "return '1'", "illegal_move", "expected an integer"),
    ("prisonersDilemma", "return 0 if len(history) != 2 else 1 // 0", "strategy_exception", "round 3"),
    # Blotto's validation is MLGym's: Python ints only (numpy integers refused), none
    # negative, at most 120 soldiers
    ("blotto", "return [20, 20, 20, 20, 20, 21]", "illegal_move",
     "Total number of soldiers must not exceed 120"),
    ("blotto", "return [-1, 25, 25, 25, 25, 1]", "illegal_move",
     "All allocations must be non-negative integers"),
    ("blotto", "return [60, 60]", "illegal_move", "list of 6 integers"),
    ("blotto", "return [20.0] * 6", "illegal_move", "All allocations must be non-negative integers"),
    ("blotto", "import numpy as np\n    return list(np.full(6, 20))", "illegal_move",
     "All allocations must be non-negative integers (got [np.int64(20)"),
    ("blotto", "import numpy as np\n    return np.full(6, 20)", "illegal_move",
     "of int64; convert with int()"),
    ("prisonersDilemma", "import numpy as np\n    return np.int64(2)", "illegal_move",
     "must be 0 or 1"),
    ("prisonersDilemma", "import time\n    time.sleep(5)\n    return 0", "strategy_timeout", "longer than 1 s"),
    ("prisonersDilemma", "while True:\n        pass", "strategy_timeout", "row_strategy took longer"),
])
def test_bad_strategies_get_specific_errors(home, tmp_path, task_id, body, code, needle):
    task = registry.load_task(task_id)
    res = evaluate(task, f"def row_strategy(history):\n    {body}\n", tmp_path)
    assert res.get("error", {}).get("code") == code, res
    assert needle in res["error"]["message"], res


def test_missing_function_and_import_errors(home, tmp_path):
    task = registry.load_task("prisonersDilemma")
    res = evaluate(task, "def strategy(history):\n    return 0\n", tmp_path, "name")
    assert res["error"]["code"] == "strategy_import_error" and "row_strategy" in res["error"]["message"]
    res = evaluate(task, "def row_strategy(history)\n    return 0\n", tmp_path, "syntax")
    assert res["error"]["code"] == "strategy_import_error" and "SyntaxError" in res["error"]["message"]
    res = evaluate(task, tmp_path / "nothing.py", tmp_path, "missing")
    assert res["error"]["code"] == "missing_submission"


def test_hangs_are_stopped(home, tmp_path):
    task = task_with(tmp_path, "prisonersDilemma", import_timeout_s=2, total_timeout_s=4)
    res = evaluate(task, "while True:\n    pass\n", tmp_path, "import")
    assert res["error"]["code"] == "strategy_timeout" and "importing" in res["error"]["message"]
    # a strategy that swallows the per-call alarm is stopped by the parent's deadline
    swallow = """
    def row_strategy(history):
        while True:
            try:
                while True:
                    pass
            except BaseException:
                pass
    """
    res = evaluate(task, swallow, tmp_path, "swallow")
    assert res["error"]["code"] == "strategy_timeout" and "the worker was stopped" in res["error"]["message"]


def test_crash_and_memory_hog(home, tmp_path):
    task = task_with(tmp_path, "prisonersDilemma", worker_memory_mb=512)
    res = evaluate(task, "import os\ndef row_strategy(history):\n    os._exit(3)\n", tmp_path, "exit")
    assert res["error"]["code"] == "strategy_crashed" and "exit status 3" in res["error"]["message"]
    res = evaluate(task, "def row_strategy(history):\n    x = bytearray(2 * 1024**3)\n    return 0\n",
                   tmp_path, "hog")
    assert res["error"]["code"] == "strategy_exception" and "MemoryError" in res["error"]["message"]


def test_strategy_cannot_read_the_opponent(home, tmp_path):
    task = registry.load_task("prisonersDilemma")
    prepared = registry.prepare(task)
    work = tmp_path / "e"
    targets = [work / "eval" / "secret" / "opponent.py",  # the evaluation layout evaluate() builds
               prepared.secret_dir / "opponent.py", task.dir / "secret" / "opponent.py",
               work / "eval" / "tasks" / "prisonersDilemma" / "secret" / "opponent.py"]
    code = f"""
    SECRETS = {[str(t) for t in targets]!r}
    text = open(SECRETS[0]).read()
    def row_strategy(history):
        return 0
    """
    res = evaluate(task, code, tmp_path)
    assert res["error"]["code"] == "strategy_import_error"
    assert "PermissionError" in res["error"]["message"]
    assert all(Path(t).is_file() for t in targets[:3])  # they exist; the strategy just cannot read them

    probe = f"""
    import os, subprocess
    SECRETS = {[str(t) for t in targets]!r}
    LEAK = {str(tmp_path / "leak.txt")!r}
    stolen = []
    for path in SECRETS:
        try:
            stolen.append(open(path).read())
        except OSError:
            pass
    try:
        stolen.append(subprocess.run(["cat"] + SECRETS, capture_output=True, text=True).stdout)
    except OSError:
        pass
    try:
        with open(LEAK, "w") as fh:
            fh.write("".join(stolen))
    except OSError:
        pass
    try:
        os.kill(os.getppid(), 9)
    except OSError:
        pass
    CAUGHT = any("column_moves" in s for s in stolen)
    def row_strategy(history):
        return 1 if CAUGHT else 0   # defecting would reveal a successful read
    """
    res = evaluate(task, probe, tmp_path, "probe")
    assert "scores" in res, res
    always_cooperate = evaluate(task, "def row_strategy(history):\n    return 0\n", tmp_path, "coop")
    assert res["scores"]["Score"] == always_cooperate["scores"]["Score"]
    assert not (tmp_path / "leak.txt").exists()


def test_public_evaluate_script_runs(tmp_path):
    for task_id in PUBLISHED:
        ws = tmp_path / task_id
        shutil.copytree(registry.TASKS_ROOT / task_id / "workspace", ws)
        import subprocess

        out = subprocess.run([sys.executable, "evaluate.py", "--games", "50"], cwd=ws, capture_output=True,
                             text=True, check=True).stdout
        assert "mean payoff per round" in out
