"""What the environment server needs to know about a task, on top of its spec: how to lay out
a fresh workspace and which files to pin read-only. Task knowledge itself lives in
mlgym.tasks.registry; this is the server's thin view of it."""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from mlgym.env_server.sandbox import WORKSPACE
from mlgym.tasks import registry
from mlgym.tasks.spec import TaskSpec


_template_locks: dict[str, threading.Lock] = {}


class TaskNotFound(LookupError):
    pass


@dataclass
class TaskHandle:
    task: registry.Task
    prepared: registry.PreparedTask

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec

    def template(self, root: Path) -> tuple[Path, list[tuple[Path, str]]]:
        """A populated workspace to copy sessions from, and the read-only mounts (pristine
        copies placed over their workspace paths), made once per task under `root`."""
        base = root / self.spec.id
        ws, pristine, done = base / "workspace", base / "pristine", base / ".ready"
        with _template_locks.setdefault(str(base), threading.Lock()):
            if not done.exists():
                self._make_template(base, ws, pristine, done)
        mounts = [(copy, f"{WORKSPACE}/{copy.relative_to(pristine).as_posix()}")
                  for copy in sorted(pristine.rglob("*")) if copy.is_file()] if pristine.exists() else []
        return ws, mounts

    def _make_template(self, base: Path, ws: Path, pristine: Path, done: Path) -> None:
        shutil.rmtree(base, ignore_errors=True)
        readonly = registry.populate_workspace(self.task, self.prepared, ws)
        for path in readonly:
            copy = pristine / path.relative_to(ws)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            os.chmod(copy, 0o444)
            os.chmod(path, 0o444)  # the workspace copy too: no writer may change it
        done.write_text("")

    @staticmethod
    def copy_template(template: Path, dest: Path) -> None:
        """Fill a session workspace from the task template (writable by the sandbox user, but
        the task's read-only files, which keep no write permission)."""
        shutil.copytree(template, dest, dirs_exist_ok=True)
        for path in [dest, *dest.rglob("*")]:
            try:
                mode = path.stat().st_mode
                write = 0o222 if mode & 0o200 else 0
                os.chmod(path, 0o777 if path.is_dir() else 0o444 | write | (mode & 0o111))
            except OSError:
                pass


def tree_mb(root: Path) -> int:
    """Disk used by the files under `root` (a server-made template), in MB, rounded up."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return -(-total // 2**20)


def load(task_id: str) -> TaskHandle:
    """The task, with its data prepared (cached after the first time)."""
    try:
        task = registry.load_task(task_id)
    except registry.UnknownTask as exc:
        raise TaskNotFound(str(exc)) from None
    return TaskHandle(task=task, prepared=registry.prepare(task))


def task_python_env() -> Path | None:
    """The dedicated task virtual environment, if `mlgym env setup` has built it."""
    from mlgym.env_server import taskenv

    path = taskenv.path()
    return path if (path / "bin" / "python").exists() else None
