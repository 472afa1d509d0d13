"""The task environment installs everything its tasks import.

Every task declares, in task.toml `requirements`, the import names its evaluator and starter
code need. Checked three ways: the declarations cover what the task's code imports (read with
ast); each declared module imports in the task venv (`mlgym env setup`, built from
tasks/requirements.txt); and in the docker task image (`mlgym image build`, built from the same
file). An import that fails on a dependency nobody declared (gymnax needs `six`) fails here."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require
from mlgym.tasks import registry

# Imports each module in turn; prints {module: "ExceptionType: message"} for those that fail.
PROBE = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def declared() -> list[str]:
    tasks = [registry.load_task(tid) for tid in registry.task_ids()]
    return sorted({m for task in tasks for m in task.spec.requirements})


def _imports(path: Path, *, top_level: bool = False) -> set[str]:
    """Modules `path` imports; with top_level, only at module level (a shared helper's lazy
    import inside a function, like evalkit's pandas for CSV tasks, is its callers' business)."""
    out = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = ast.iter_child_nodes(tree) if top_level else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def task_imports(task_dir: Path) -> set[str]:
    """Third-party modules imported by a task's sandboxed code (evaluator, starter code, the
    shared tasks/_common modules they use); prepare.py runs with the framework's Python."""
    common = {p.stem: p for p in (registry.TASKS_ROOT / "_common").glob("*.py")}
    local = ({p.stem for p in task_dir.rglob("*.py")}
             | {p.name for p in task_dir.rglob("*") if p.is_dir()})
    todo = [p for p in task_dir.rglob("*.py") if p.name != "prepare.py"]
    seen: set[Path] = set()
    found: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, top_level=path.parent.name == "_common"):
            if name in common:
                todo.append(common[name])
            elif name not in local and name not in sys.stdlib_module_names and name != "mlgym":
                found.add(name)
    return found


def probe(argv: list[str]) -> dict[str, str]:
    proc = subprocess.run([*argv, "-c", PROBE, *declared()], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_task_declares_what_its_code_imports():
    missing = {}
    for tid in registry.task_ids():
        task = registry.load_task(tid)
        undeclared = task_imports(task.dir) - set(task.spec.requirements)
        if undeclared:
            missing[tid] = sorted(undeclared)
    assert not missing, f"imported but not in task.toml requirements: {missing}"
    assert {"gymnax", "torch", "sklearn", "yaml"} <= set(declared())  # the scan saw real tasks


@pytest.mark.timeout(900)
def test_task_venv_imports_every_declared_requirement():
    from mlgym.env_server import taskenv

    state = taskenv.check()
    require(state["up_to_date"], f"the task venv {state['path']} is missing or older than "
                                 "tasks/requirements.txt: run `mlgym env setup`")
    # -I: isolated, so only the venv's own site-packages count (no PYTHONPATH, no user site)
    failed = probe([str(taskenv.python()), "-I"])
    assert not failed, f"in the task venv: {failed}"


@pytest.mark.timeout(1800)
def test_docker_task_image_imports_every_declared_requirement():
    """Builds mlgym/task:latest from tasks/requirements.txt when it is missing or stale (the
    first build takes minutes; an up-to-date image is confirmed in seconds)."""
    from mlgym.env_server import image as img

    require(img.engine_reachable(), "docker engine not reachable (start dockerd)")
    built = img.build_image(img.FULL_TAG)
    print(f"{built.tag}: {'up to date' if built.cached else 'built'} in {built.seconds:.1f}s")
    failed = probe(["docker", "run", "--rm", "--network", "none", built.tag, "python", "-I"])
    assert not failed, f"in the docker image {built.tag}: {failed}"
