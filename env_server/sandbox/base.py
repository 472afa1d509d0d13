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
import importlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mlgym.tools import safefs

if TYPE_CHECKING:  # jobs.py builds on this module
    from mlgym.env_server.sandbox.jobs import JobManager

HOME = "/home/agent"
WORKSPACE = "/home/agent/workspace"  # same inside every backend, as in MLGym
STATE = "/home/agent/.mlgym"  # inside path of config.state_dir: command and job logs
JOBS = STATE + "/jobs"  # inside path of config.jobs_dir: background jobs' logs
# the most one read_file returns, whatever the client asks: a reply stays within the wire
# protocol's 16 MiB frame even as JSON (bytes in base64)
MAX_READ_BYTES = 8 * 2**20
# Defaults for every sandboxed process (config.env overrides them). OpenMP threads (torch's)
# that wait for work sleep instead of spinning: on a machine shared with other jobs, spinning
# threads burned 3x the CPU of the work itself (the languageModelingCharLite evaluator: 35.6 s
# of CPU with spinning, 12.0 s without, same result, half the wall time at load 10).
DEFAULT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

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
    # host folder of the server's own files for this sandbox (full command outputs, the shell's
    # control FIFOs), READ-ONLY at STATE inside; None = a temporary one
    state_dir: Path | None = None
    # host folder where background jobs write their logs, read-write at STATE/jobs inside
    # (agent-writable: the server reads it only through tools/safefs.py); None = state_dir/jobs
    jobs_dir: Path | None = None
    full_output_limit_mb: int = 16  # the most of one command's output the server keeps on disk
    tmp_size_mb: int = 1024  # /tmp (memory-backed) holds at most this much
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
    file_owner: tuple[int, int] | None = None  # who files written for the agent belong to
    disk: Any = None  # the session disk its workspace lives on, when a pool made one for it

    async def read_file(self, path: str, limit: int = MAX_READ_BYTES) -> bytes:
        """At most `limit` bytes of a workspace file."""
        return (await self.read_file_head(path, limit))[0]

    async def read_file_head(self, path: str, limit: int = MAX_READ_BYTES, offset: int = 0
                             ) -> tuple[bytes, int]:
        """(at most `limit` bytes of a workspace file from `offset`, its whole size)."""
        return await asyncio.to_thread(read_confined, self.config.workspace,
                                       self._as_inside(path), limit, offset)

    async def write_file(self, path: str, data: bytes) -> None:
        """Write a workspace file; one mounted read-only inside (a pristine task file) is
        refused, so what the host writes is always what the sandbox sees."""
        await asyncio.to_thread(self._write_file, self._as_inside(path), data)

    def _write_file(self, path: str, data: bytes) -> None:
        rel = _relative(self.config.workspace, path)
        pinned = {str(inside_relative(target)) for _, target in self.config.readonly
                  if target.startswith(WORKSPACE + "/")}
        if rel in pinned:
            raise SandboxPathError(f"{path}: is a read-only task file")
        write_confined(self.config.workspace, path, data, self.file_owner)

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


def prepare_state(state: Path, jobs_dir: Path | None, owner: tuple[int, int] | None = None
                  ) -> Path:
    """Lay out a sandbox's state folder before anything runs in it: `state` (the server's,
    read-only inside) with `out/` and the `jobs` mount point, and the agent-writable jobs folder
    (given to `owner` when the sandbox user is not the server's). Returns the jobs folder."""
    for d in (state, state / "out", state / "jobs"):
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
        if d.is_symlink() or not d.is_dir():
            raise SandboxError(f"{d} is not a plain folder")
        d.chmod(0o755)  # the sandbox user reads it (a temporary folder starts 0700)
    jobs = jobs_dir or state / "jobs"
    jobs.mkdir(mode=0o755, parents=True, exist_ok=True)
    if owner is not None and os.geteuid() == 0:
        fd = safefs.open_dir(jobs)
        try:
            os.fchown(fd, *owner)
        finally:
            os.close(fd)
    return jobs


def process_limit(config: SandboxConfig) -> int:
    """The process count at which the shell treats the sandbox as fork-bombed: 90% of the
    sandbox's limit, so the shell can still act before forks start to fail for good."""
    return max(int(config.max_processes * 0.9), 8)


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


def _relative(workspace: Path, path: str) -> str:
    """The workspace-relative path of an inside path, symlinks inside the workspace resolved
    and refused when they lead out (the open below re-checks every component)."""
    root = Path(os.path.realpath(workspace))
    rel = host_path(workspace, path).relative_to(root)
    if not rel.parts:
        raise SandboxPathError(f"{path}: is the workspace folder itself")
    return str(rel)


def _confined(path: str, call):
    try:
        return call()
    except safefs.UnsafePath as exc:
        raise SandboxPathError(f"{path}: {exc.why}") from None


def read_confined(workspace: Path, path: str, limit: int = MAX_READ_BYTES, offset: int = 0
                  ) -> tuple[bytes, int]:
    """(at most `limit` bytes from `offset` of the regular file at inside `path`, its size).
    Never through a symlink, never a FIFO or device (tools/safefs.py)."""
    rel = _relative(workspace, path)

    def read() -> tuple[bytes, int]:
        fd = safefs.open_file(workspace, rel, os.O_RDONLY)
        try:
            return safefs.pread_all(fd, limit, max(offset, 0)), os.fstat(fd).st_size
        finally:
            os.close(fd)

    return _confined(path, read)


def write_confined(workspace: Path, path: str, data: bytes, owner: safefs.Owner = None) -> None:
    """Write the regular file at inside `path` (folders made as needed), given to `owner`."""
    rel = _relative(workspace, path)
    _confined(path, lambda: safefs.write(workspace, rel, data, make_parents=True, owner=owner))
