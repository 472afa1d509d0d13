"""The task virtual environment: the Python that sandboxed programs (starter code, baselines,
evaluators) run with. Separate from the framework's own venv, so tasks get their own pinned
libraries and never see mlgym's. Built from tasks/requirements.txt by `mlgym env setup`.

Idempotent: the hash of the requirements (and of the base Python's version) is stored in the
venv; building again does nothing until the requirements change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgym import paths
from mlgym.files import atomic_write

STAMP = ".mlgym-requirements.sha256"

Progress = Callable[[str], None]


class TaskEnvError(RuntimeError):
    pass


def path() -> Path:
    """Where the task venv lives: $MLGYM_TASKENV, else ~/.mlgym/taskenv."""
    env = os.environ.get("MLGYM_TASKENV")
    return Path(env).expanduser() if env else paths.home() / "taskenv"


def requirements_file() -> Path:
    return paths.REPO_ROOT / "tasks" / "requirements.txt"


def base_python() -> Path:
    """The real interpreter behind whatever venv runs us: the task venv is made from it, so it
    does not chain to (or depend on) the framework's venv."""
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return candidate
    return Path(sys.executable)


def python() -> Path:
    return path() / "bin" / "python"


def fingerprint(requirements: str, interpreter: Path) -> str:
    h = hashlib.sha256()
    h.update(requirements.encode())
    h.update(f"\0{interpreter.resolve()}\0{sys.version_info[:3]}".encode())
    return h.hexdigest()


def _requirements_text(requirements: Path | None) -> str:
    req = requirements or requirements_file()
    try:
        return req.read_text()
    except FileNotFoundError:
        raise TaskEnvError(f"requirements file {req} not found") from None


def check(requirements: Path | None = None) -> dict[str, Any]:
    """Where the venv stands: exists, up to date with the requirements, which Python."""
    venv = path()
    text = _requirements_text(requirements)
    wanted = fingerprint(text, base_python())
    stamp = venv / STAMP
    stored = stamp.read_text().strip() if stamp.exists() else None
    exists = python().exists()
    return {
        "path": str(venv),
        "exists": exists,
        "python": str(python()) if exists else None,
        "requirements": str(requirements or requirements_file()),
        "packages": [ln.strip() for ln in text.splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")],
        "up_to_date": exists and stored == wanted,
        "stored_hash": stored,
        "wanted_hash": wanted,
    }


@contextlib.contextmanager
def _locked(venv: Path, say: Progress):
    """One build at a time per venv (two sessions may call ensure() together)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build of {venv} to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure(requirements: Path | None = None, progress: Progress | None = None,
           force: bool = False, interpreter: Path | None = None) -> Path:
    """Build or update the task venv when its requirements changed; returns its path.
    Blocking (it runs pip): call it from a thread in async code."""
    say = progress or (lambda line: print(line, file=sys.stderr))
    venv = path()
    with _locked(venv, say):
        return _ensure(venv, requirements, say, force, interpreter)


def _ensure(venv: Path, requirements: Path | None, say: Progress, force: bool,
            interpreter: Path | None) -> Path:
    interpreter = interpreter or base_python()
    text = _requirements_text(requirements)
    wanted = fingerprint(text, interpreter)
    stamp = venv / STAMP
    if not force and python().exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        say(f"task environment {venv} is up to date")
        return venv
    if venv.exists() and not (venv / "pyvenv.cfg").exists():
        raise TaskEnvError(f"{venv} exists and is not a virtual environment; move it away")
    stamp.unlink(missing_ok=True)  # a failed build must not look finished
    if not python().exists() or force:
        say(f"[1/2] creating the task environment {venv} from {interpreter}")
        if force and venv.exists():
            shutil.rmtree(venv)
        _run([str(interpreter), "-m", "venv", str(venv)], say)
    else:
        say(f"[1/2] task environment {venv} exists; updating it")
    req_path = venv / "requirements.txt"
    req_path.write_text(text)
    n = len([ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")])
    say(f"[2/2] installing {n} requirements (large ones, like torch, take minutes)")
    if n:
        _run([str(python()), "-m", "pip", "install", "--progress-bar", "off", "-r",
              str(req_path)], say)
    atomic_write(stamp, wanted + "\n")
    say(f"task environment ready: {python()}")
    return venv


def _run(argv: list[str], say: Progress) -> None:
    """Run a build step, passing its output on line by line (pip can take minutes)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            say(f"    {line}")
            tail = (tail + [line])[-20:]
    if proc.wait() != 0:
        raise TaskEnvError(f"`{' '.join(argv[:4])} ...` failed ({proc.returncode}):\n"
                           + "\n".join(tail))
