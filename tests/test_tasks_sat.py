"""3SATTime / 3SATTimeLite: deterministic labelled instances, the baseline heuristic solves
every instance correctly, wrong answers are caught and counted, heuristic faults are clear."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from mlgym.tasks import registry
from mlgym.tasks.spec import load_spec

sys.path.insert(0, str(registry.COMMON_DIR))
import sat_instances  # noqa: E402

HEURISTIC = registry.TASKS_ROOT / "3SATTime" / "workspace" / "heuristic.py"
FIRST_FREE = ("def heuristic_fn(c, a, n, h, l):\n"
              "    return next(abs(x) for cl in c for x in cl if abs(x) not in a), True\n")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    old = os.environ.get("MLGYM_HOME")
    os.environ["MLGYM_HOME"] = str(tmp_path_factory.mktemp("mlgym-home"))
    yield
    if old is None:
        os.environ.pop("MLGYM_HOME", None)
    else:
        os.environ["MLGYM_HOME"] = old


def evaluate(task, code: str | Path, tmp: Path, name: str = "e") -> dict:
    work = tmp / name
    work.mkdir(parents=True)
    if isinstance(code, Path):
        path = code
    else:
        path = work / "heuristic.py"
        path.write_text(textwrap.dedent(code))
    return registry.evaluate_unsandboxed(task, registry.prepare(task), path, work, python=sys.executable)


def test_instances_are_deterministic_mixed_and_labelled_right():
    a = sat_instances.generate(11, [[20, 6], [25, 4]], 4.26)
    b = sat_instances.generate(11, [[20, 6], [25, 4]], 4.26)
    assert a == b
    assert [x["n_vars"] for x in a] == [20] * 6 + [25] * 4
    assert sum(x["satisfiable"] for x in a) == 5
    for inst in a:
        assert len(inst["clauses"]) == round(4.26 * inst["n_vars"])
        assert all(len({abs(v) for v in c}) == 3 for c in inst["clauses"])
    # the labels agree with the task's own DPLL solver (an independent implementation)
    sys.path.insert(0, str(HEURISTIC.parent))
    try:
        import heuristic
        import solver
    finally:
        sys.path.remove(str(HEURISTIC.parent))
    for inst in a:
        sat, assignment = solver.solve(inst["clauses"], heuristic.heuristic_fn)
        assert sat == inst["satisfiable"]
    assert sat_instances.generate(12, [[20, 6]], 4.26) != a[:6]


def test_prepare_keeps_labels_secret(home):
    task = registry.load_task("3SATTime")
    prepared = registry.prepare(task)
    public = json.loads((prepared.public_dir / "data" / "instances.json").read_text())
    secret = json.loads((prepared.secret_dir / "instances.json").read_text())
    assert len(public) == len(secret) == sum(n for _, n in task.spec.params["sizes"])
    assert all("satisfiable" not in x for x in public)
    assert [x["clauses"] for x in public] == [x["clauses"] for x in secret]


def test_lite_baseline_solves_everything(home, tmp_path):
    task = registry.load_task("3SATTimeLite")
    res = evaluate(task, HEURISTIC, tmp_path)
    assert "scores" in res, res
    d = res["details"]
    assert d["correct"] == d["instances"] == 50 and d["satisfiable"] == 25
    assert res["scores"]["Time"] > 0 and d["cpu_s"] >= 0
    assert d["isolation"].startswith("landlock")


@pytest.mark.parametrize(("code", "error", "needle"), [
    # a "heuristic" that replaces the solver and answers UNSAT everywhere: caught and counted
    ("import solver\nsolver.solve = lambda clauses, fn: (False, None)\n" + FIRST_FREE,
     "wrong_answer", "25 of 50 instances answered wrongly"),
    ("import solver\nsolver.solve = lambda clauses, fn: (True, {1: True})\n" + FIRST_FREE,
     "wrong_answer", "assignment violates a clause"),
    ("def heuristic_fn(c, a, n, h, l):\n    return 'x'\n", "bad_heuristic_output", "must return (variable, value)"),
    ("def heuristic_fn(c, a, n, h, l):\n    return abs(c[0][0]), 1\n", "bad_heuristic_output", "must be a bool"),
    ("def heuristic_fn(c, a, n, h, l):\n    done = [abs(x) for cl in c for x in cl if abs(x) in a]\n"
     "    return (done[0] if done else abs(c[0][0])), True\n", "bad_heuristic_output",
     "assigned already"),
    ("def heuristic_fn(c, a, n, h, l):\n    return 10_000, True\n", "bad_heuristic_output", "does not occur"),
    ("def heuristic_fn(c, a, n, h, l):\n    raise KeyError('boom')\n", "strategy_exception", "KeyError"),
    ("def other(c, a, n, h, l):\n    return 1, True\n", "strategy_import_error", "heuristic_fn"),
])
def test_wrong_and_bad_heuristics(home, tmp_path, code, error, needle):
    res = evaluate(registry.load_task("3SATTimeLite"), code, tmp_path)
    assert res.get("error", {}).get("code") == error, res
    assert needle in res["error"]["message"], res


def test_slow_heuristic_and_label_theft(home, tmp_path):
    dest = tmp_path / "tasks" / "3SATTimeLite"
    shutil.copytree(registry.TASKS_ROOT / "3SATTimeLite", dest)
    shutil.copytree(registry.COMMON_DIR, dest.parent / "_common")  # the layout evaluators expect
    toml = (dest / "task.toml").read_text().replace("per_instance_timeout_s = 60", "per_instance_timeout_s = 1")
    (dest / "task.toml").write_text(toml)
    task = registry.Task(load_spec(dest), dest)
    res = evaluate(task, "def heuristic_fn(c, a, n, h, l):\n    while True:\n        pass\n", tmp_path, "loop")
    assert res["error"]["code"] == "strategy_timeout" and "instance 0" in res["error"]["message"]
    prepared = registry.prepare(task)
    theft = f"labels = open({str(prepared.secret_dir / 'instances.json')!r}).read()\n" + FIRST_FREE
    res = evaluate(task, theft, tmp_path, "theft")
    assert res["error"]["code"] == "strategy_import_error" and "PermissionError" in res["error"]["message"]


def test_local_evaluate_script(home, tmp_path):
    task = registry.load_task("3SATTimeLite")
    ws = tmp_path / "ws"
    registry.populate_workspace(task, registry.prepare(task), ws)
    import subprocess

    out = subprocess.run([sys.executable, "evaluate.py", "--limit", "10"], cwd=ws, capture_output=True, text=True,
                         check=True).stdout
    assert "10 instances" in out and "total time" in out


# MLGym's 3-SAT heuristics read their arguments as MLGym passes them: this one (in the style of
# the published trajectories) ranks variables by conflict_count.get(...) and looks at the last
# assignments and the decision levels; it also checks every argument's type and shape.
MLGYM_STYLE = """
import numpy as np

def heuristic_fn(clauses, assignments, conflict_count, assignment_history, level):
    assert isinstance(conflict_count, dict) and isinstance(level, list)
    assert all(isinstance(d, list) and d for d in level)
    assert all(isinstance(v, int) and v > 0 for v in assignment_history)
    assert all(len(c) == 3 for c in clauses)  # as given: false literals are still there
    for c in clauses:  # no clause shown is satisfied already
        assert not any(assignments.get(abs(x)) is (x > 0) for x in c)
    recent = set(assignment_history[-5:])
    scores = {}
    for c in clauses:
        free = [x for x in c if abs(x) not in assignments]
        for x in free:
            scores[abs(x)] = scores.get(abs(x), 0) + 1.0 / len(free) + conflict_count.get(abs(x), 0)
    var = max(scores, key=lambda v: (scores[v], v not in recent, -v))
    pos = sum(1 for c in clauses for x in c if x == var)
    neg = sum(1 for c in clauses for x in c if x == -var)
    if len(level) % 2:  # numpy ints and a negative literal are accepted, as in MLGym
        return np.int64(-var), bool(neg < pos)
    return var, pos >= neg
"""


def test_heuristic_gets_mlgyms_arguments(home, tmp_path):
    res = evaluate(registry.load_task("3SATTimeLite"), MLGYM_STYLE, tmp_path)
    assert "scores" in res, res
    assert res["details"]["correct"] == res["details"]["instances"] == 50


def test_heuristic_arguments_by_hand():
    sys.path.insert(0, str(HEURISTIC.parent))
    try:
        import solver
    finally:
        sys.path.remove(str(HEURISTIC.parent))
    calls = []

    def record(clauses, assignments, conflict_count, history, level):
        calls.append((clauses, dict(assignments), dict(conflict_count), list(history), level))
        free = sorted({abs(x) for c in clauses for x in c if abs(x) not in assignments})
        return free[0], False

    # two independent copies of a 3-variable formula that no literal satisfies alone
    g = [[1, 2, 3], [-1, 2, -3], [1, -2, 3], [-1, -2, -3]]
    f = g + [[x + (3 if x > 0 else -3) for x in c] for c in g]
    sat, assignment = solver.solve(f, record)
    assert sat and all(any(assignment.get(abs(x)) is (x > 0) for x in c) for c in f)
    clauses, assignments, conflicts, history, level = calls[0]
    assert clauses == f and assignments == {} and conflicts == {} and history == [] and level == []
    # x1 = False (decision), then x3 = True (pure): the first copy is satisfied
    clauses, assignments, conflicts, history, level = calls[1]
    assert assignments == {1: False, 3: True} and level == [[1, 3]] and history == [1, 3]
    assert clauses == f[4:]  # the clauses not satisfied yet, as given
    # giving up a branch (None) makes the formula look unsatisfiable, as in MLGym
    assert solver.solve(f, lambda *a: (None, True)) == (False, None)
