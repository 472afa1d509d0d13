"""Find, load and lay out tasks: the API the environment server and the CLI use.

    task = load_task("regressionKaggleHousePrice")     # Task(spec, dir)
    prepared = prepare(task)                            # PreparedTask(public_dir, secret_dir)
    ro = populate_workspace(task, prepared, ws_dir)     # starter files + public data
    layout = evaluation_layout(task, prepared, eval_dir)
    cmd = evaluation_command(task, layout, python, submission, out_json, seed)

The evaluation layout puts the pristine task folder and `tasks/_common/` side by side
(`<eval>/tasks/<id>/`, `<eval>/tasks/_common/`), because evaluators import their shared helpers
from `../_common`; the secret folder goes to `<eval>/secret/`. Nothing secret is ever placed
in the workspace: `populate_workspace` copies only the spec's workspace folder and the
prepared public files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlgym import log, paths
from mlgym.tasks import data
from mlgym.tasks.data import PreparedTask
from mlgym.tasks.spec import TaskSpec, TaskSpecError, load_spec

TASKS_ROOT = Path(__file__).resolve().parent
COMMON_DIR = TASKS_ROOT / "_common"
logger = log.get(__name__)

__all__ = ["Task", "TaskSpecError", "UnknownTask", "PreparedTask", "EvaluationLayout", "load_task",
           "list_tasks", "task_ids", "prepare", "populate_workspace", "read_only_paths",
           "evaluation_layout", "evaluation_command", "evaluate_unsandboxed", "TASKS_ROOT", "COMMON_DIR",
           "user_tasks_root", "task_roots"]


class UnknownTask(KeyError):
    def __str__(self) -> str:
        return f"unknown task {self.args[0]!r} (known: {', '.join(task_ids())})"


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    dir: Path

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class EvaluationLayout:
    root: Path
    task_dir: Path  # pristine copy of tasks/<id>/
    common_dir: Path  # tasks/_common/ beside it
    secret_dir: Path
    entry: Path  # the evaluator script inside task_dir


def user_tasks_root() -> Path:
    """The user's own task folder (`mlgym tasks import-mlgym` writes there): $MLGYM_TASKS, else
    <MLGYM_HOME>/tasks. Searched after the built-in tasks, which win on a clash of ids."""
    return Path(os.environ.get("MLGYM_TASKS") or paths.home() / "tasks")


def task_roots() -> list[Path]:
    return [TASKS_ROOT, user_tasks_root()]


def _ids(root: Path) -> list[str]:
    """Folders holding a task.toml; `_common` and hidden folders are not tasks."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")) and (p / "task.toml").is_file())


def task_ids(root: Path | None = None) -> list[str]:
    """Task ids under `root`, or under every task root (built-in first, then the user's)."""
    if root is not None:
        return _ids(root)
    return sorted({tid for r in task_roots() for tid in _ids(r)})


def load_task(task_id: str, root: Path | None = None) -> Task:
    for r in [root] if root is not None else task_roots():
        if task_id in _ids(r):
            return Task(load_spec(r / task_id), r / task_id)
    raise UnknownTask(task_id)


def list_tasks(suite: str | None = None, root: Path | None = None, strict: bool = False) -> list[Task]:
    """All valid tasks (in a suite when given). An invalid spec is logged and left out, so one
    broken task never hides the others (`strict=True` raises instead; `mlgym tasks validate`
    shows every error)."""
    tasks = []
    for tid in task_ids(root):
        try:
            tasks.append(load_task(tid, root))
        except TaskSpecError as exc:
            if strict:
                raise
            logger.error("invalid task spec left out", task=tid, error=str(exc))
    return [t for t in tasks if suite is None or suite in t.spec.suites]


def prepare(task: Task, force: bool = False) -> PreparedTask:
    """Idempotent and cached under ~/.mlgym/prepared/<id>/ (see mlgym.tasks.data)."""
    return data.prepare(task.spec, task.dir, force=force)


def read_only_paths(task: Task, workspace: Path) -> list[Path]:
    """Workspace files matching the spec's read-only globs (a folder match covers its files)."""
    out: list[Path] = []
    for pattern in task.spec.files.read_only:
        for p in sorted(workspace.glob(pattern)):
            out += [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return list(dict.fromkeys(out))


def populate_workspace(task: Task, prepared: PreparedTask, workspace: Path) -> list[Path]:
    """Copy the starter files, then the prepared public files, into `workspace`; return the
    paths that must be read-only for the agent (the caller enforces it in its sandbox)."""
    workspace.mkdir(parents=True, exist_ok=True)
    shutil.copytree(task.dir / task.spec.files.workspace, workspace, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(prepared.public_dir, workspace, dirs_exist_ok=True)
    for p in workspace.rglob("*"):  # the prepared cache is read-only; the copy need not be
        if p.is_file():
            p.chmod(0o644)
    return read_only_paths(task, workspace)


def evaluation_layout(task: Task, prepared: PreparedTask, dest: Path) -> EvaluationLayout:
    """Build `<dest>/tasks/<id>/`, `<dest>/tasks/_common/` and `<dest>/secret/` from pristine
    copies (never from the agent's workspace)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")

    def ignore_task(folder: str, names: list[str]) -> set[str]:
        """The shipped raw inputs (data/) are prepare's, not the evaluator's: left out."""
        skip = set(ignore(folder, names))
        return skip | ({data.SHIPPED_DIR} & set(names) if Path(folder) == task.dir else set())

    task_copy = dest / "tasks" / task.id
    common_copy = dest / "tasks" / "_common"
    shutil.copytree(task.dir, task_copy, dirs_exist_ok=True, ignore=ignore_task)
    shutil.copytree(COMMON_DIR, common_copy, dirs_exist_ok=True, ignore=ignore)
    secret = dest / "secret"
    shutil.copytree(prepared.secret_dir, secret, dirs_exist_ok=True)
    return EvaluationLayout(dest, task_copy, common_copy, secret, task_copy / task.spec.evaluation.entry)


def evaluation_command(task: Task, layout: EvaluationLayout, python: str, submission: Path,
                       out: Path, seed: int | None = None) -> list[str]:
    """The evaluator's argv (run with the task venv's python, cwd anywhere)."""
    return [python, str(layout.entry), "--submission", str(submission), "--secret", str(layout.secret_dir),
            "--task-dir", str(layout.task_dir), "--out", str(out),
            "--seed", str(task.spec.evaluation.seed if seed is None else seed)]


def evaluate_unsandboxed(task: Task, prepared: PreparedTask, submission: Path, work: Path,
                         python: str | None = None, seed: int | None = None,
                         timeout_s: float | None = None) -> dict:
    """Run the evaluator in a plain subprocess (no evaluation sandbox) and return its result
    object. For tests, baselines and development; the environment server uses its sandbox.
    Agent code run by an evaluator is still confined by the evaluator itself (Landlock)."""
    import json
    import subprocess
    import sys

    layout = evaluation_layout(task, prepared, work / "eval")
    out = work / "result.json"
    cmd = evaluation_command(task, layout, python or sys.executable, submission, out, seed)
    timeout = timeout_s or task.spec.evaluation.timeout_s
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)
    except subprocess.TimeoutExpired:
        return {"error": {"code": "evaluation_timeout", "message": f"the evaluator ran over {timeout:g} s"}}
    if not out.is_file():
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-10:])
        return {"error": {"code": "evaluator_crash", "message": f"no result file (exit {proc.returncode}): {tail}"}}
    return json.loads(out.read_text())
