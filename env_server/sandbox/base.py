"""The sandbox interface every backend implements (`local` bubblewrap, `docker`).

A sandbox is one isolated place where an agent's commands run: its workspace (a host folder)
appears read-write at WORKSPACE, a few host paths appear read-only, and everything else of the
host is invisible. Commands go to ONE persistent shell (cwd and environment persist between
commands); long jobs run in the background with their output kept in a log. `run_isolated` runs a
one-off process in a FRESH sandbox, never in the agent's shell: the evaluation sandbox uses it.

See docs/sandbox.md.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import importlib
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jobs.py builds on this module
    from mlgym.env_server.sandbox.jobs import JobManager

HOME = "/home/agent"
WORKSPACE = "/home/agent/workspace"  # same inside every backend, as in MLGym
STATE = "/home/agent/.mlgym"  # inside path of config.state_dir: command and job logs

OutputCallback = Callable[[str], Awaitable[None] | None]


class SandboxError(Exception):
    """A sandbox operation failed (not started, backend broken, bad argument)."""


class SandboxPathError(SandboxError):
    """A path names something outside the workspace (or through a symlink leading out)."""


@dataclass
class Mount:
    """A host path shown inside the sandbox at `target` (read-only unless `writable`)."""

    source: Path
    target: str
    writable: bool = False


@dataclass
class SandboxConfig:
    workspace: Path  # host folder, read-write at WORKSPACE
    readonly: list[tuple[Path, str]] = field(default_factory=list)  # (host path, inside path)
    python_env: Path | None = None  # task venv: read-only, its bin/ first on PATH
    network: bool = False
    memory_mb: int = 4096  # address-space / memory limit of the sandbox's processes
    cpu_seconds: int = 0  # CPU time per process, 0 = unlimited
    max_processes: int = 256  # processes+threads alive in the sandbox at once
    file_size_mb: int = 8192  # largest file a process may write
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables
    output_limit: int = 100_000  # chars of output kept per command (head + tail)
    stream_limit: int = 1_000_000  # chars of live output passed to on_output per command/job
    state_dir: Path | None = None  # host folder for logs, at STATE inside; None = temporary
    gpus: bool = True  # show the host's GPUs (if any) inside
    image: str = ""  # docker backend only


@dataclass
class ExecResult:
    output: str  # merged stdout+stderr, progress bars collapsed, cut to output_limit
    exit_code: int  # 128+N when killed by signal N; -1 when unknown (shell lost)
    timed_out: bool = False
    cut_chars: int = 0  # characters left out of `output`
    duration_s: float = 0.0
    cwd: str = WORKSPACE  # inside path, after the command
    full_output_path: str | None = None  # inside path of the whole output when cut
    interrupted: bool = False  # stopped by interrupt() (or the timeout)
    shell_restarted: bool = False  # the shell died or hung and a fresh one replaced it
    warning: str | None = None  # e.g. running WITHOUT isolation (fallback)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sandbox(abc.ABC):
    """One agent's sandbox. Use `async with` or call start()/stop()."""

    name: str = "abstract"

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.warning: str | None = None  # set when isolation is weaker than asked

    # -- lifecycle ---------------------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Create the sandbox and its persistent shell (cwd = WORKSPACE)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Kill everything running in the sandbox and release it. Idempotent."""

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the persistent shell ----------------------------------------------------------
    @abc.abstractmethod
    async def exec(
        self, command: str, timeout: float | None = None, on_output: OutputCallback | None = None
    ) -> ExecResult:
        """Run `command` in the ONE persistent shell (one at a time; callers queue). stdin is
        /dev/null. On timeout the command's whole process group is killed; the shell lives."""

    @abc.abstractmethod
    async def interrupt(self) -> None:
        """Kill the command running now in the shell (like Ctrl-C, but certain)."""

    # -- background jobs (both backends keep them in a JobManager, jobs.py) -----------------
    jobs: JobManager | None = None

    def _need_jobs(self) -> JobManager:
        """The job manager, once the sandbox is started (backends may check more first)."""
        if self.jobs is None:
            raise SandboxError("the sandbox is not started")
        return self.jobs

    async def start_background(self, command: str, on_output: OutputCallback | None = None) -> str:
        """Start `command` detached from the shell (training runs); returns a job id. Its output
        is streamed to on_output and kept in a log under STATE/jobs/."""
        return await self._need_jobs().start(command, on_output)

    async def job_status(self, job: str) -> dict[str, Any]:
        """{"job", "command", "running", "exit_code" (None while running), "started",
        "ended", "output_bytes", "log_path" (inside path)}."""
        return await self._need_jobs().status(job)

    async def job_output(self, job: str, offset: int = 0, limit: int = 100_000) -> str:
        """Up to `limit` bytes of the job's log from byte `offset`, decoded."""
        return await self._need_jobs().output(job, offset, limit)

    async def kill_job(self, job: str) -> None:
        """Kill the job's whole process group. No error if it already ended."""
        await self._need_jobs().kill(job)

    # -- files (inside paths, confined to the workspace) -----------------------------------
    async def read_file(self, path: str) -> bytes:
        return await asyncio.to_thread(read_confined, self.config.workspace, self._as_inside(path))

    async def write_file(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(write_confined, self.config.workspace, self._as_inside(path), data)

    def _as_inside(self, path: str) -> str:
        """A path under `workspace_inside` where that is not WORKSPACE (the plain fallback)
        is taken relative to the workspace, as WORKSPACE/... is everywhere."""
        root = self.workspace_inside.rstrip("/")
        if root != WORKSPACE and (path == root or path.startswith(root + "/")):
            return path[len(root):].lstrip("/") or "."
        return path

    # -- one-off process in a fresh sandbox ------------------------------------------------
    @abc.abstractmethod
    async def run_isolated(
        self,
        argv: list[str],
        timeout: float,
        mounts: Sequence[Mount] = (),
        cwd: str = WORKSPACE,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run argv in a NEW sandbox with ONLY `mounts` (plus the system, the task venv and the
        config's limits; never the agent's workspace unless mounted here; no network). Used to
        evaluate submissions against pristine task files."""

    # -- reporting -------------------------------------------------------------------------
    @property
    def workspace_inside(self) -> str:
        """The workspace's path as the sandbox's commands see it: WORKSPACE, except in the
        local backend's plain fallback (no namespaces), where it is the host folder."""
        return WORKSPACE

    @property
    def isolated(self) -> bool:
        return self.warning is None

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "isolated": self.isolated, "warning": self.warning}


def create(backend: str, config: SandboxConfig, **kwargs: Any) -> Sandbox:
    """A sandbox of the named backend ("local" or "docker"); backends import lazily."""
    modules = {"local": "LocalSandbox", "docker": "DockerSandbox"}
    if backend not in modules:
        raise SandboxError(f"unknown sandbox backend {backend!r}; choose one of {sorted(modules)}")
    module = importlib.import_module(f"mlgym.env_server.sandbox.{backend}")
    return getattr(module, modules[backend])(config, **kwargs)


# -- path confinement --------------------------------------------------------------------
def inside_relative(path: str) -> PurePosixPath:
    """The workspace-relative form of an inside path (relative paths are taken relative to
    WORKSPACE). Refuses paths that leave the workspace lexically."""
    p = PurePosixPath(path)
    if p.is_absolute():
        try:
            p = p.relative_to(WORKSPACE)
        except ValueError:
            raise SandboxPathError(f"{path}: outside the workspace {WORKSPACE}") from None
    parts: list[str] = []
    for part in p.parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise SandboxPathError(f"{path}: leaves the workspace {WORKSPACE}")
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts)


def host_path(workspace: Path, path: str) -> Path:
    """The host path of an inside path, symlinks resolved, refused unless it stays within the
    workspace. (The open itself re-checks with O_NOFOLLOW to defeat symlink swaps.)"""
    root = Path(os.path.realpath(workspace))
    rel = inside_relative(path)
    real = Path(os.path.realpath(root / rel))
    if real != root and root not in real.parents:
        raise SandboxPathError(f"{path}: resolves outside the workspace (symlink?)")
    return real


def _open_beneath(workspace: Path, path: str, flags: int, mode: int = 0o644,
                  make_parents: bool = False) -> int:
    """Open an inside path by walking from the workspace one component at a time with
    O_NOFOLLOW, so no symlink (even one created between check and use) can lead out."""
    root = Path(os.path.realpath(workspace))
    real = host_path(workspace, path)
    rel = real.relative_to(root).parts
    if not rel:
        raise SandboxPathError(f"{path}: is the workspace folder itself")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in rel[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not make_parents:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        try:
            return os.open(rel[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SandboxPathError(f"{path}: is a symlink that changed while opening") from None
            raise
    finally:
        os.close(fd)


def read_confined(workspace: Path, path: str) -> bytes:
    fd = _open_beneath(workspace, path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise SandboxError(f"{path}: not a regular file")
        return f.read()


def write_confined(workspace: Path, path: str, data: bytes) -> None:
    fd = _open_beneath(workspace, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, make_parents=True)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
