"""The `local` backend: a bubblewrap sandbox on this machine.

Inside, the agent sees: its workspace read-write at /home/agent/workspace, the state folder
(logs) read-write at /home/agent/.mlgym, read-only system files (/usr and a few files of /etc),
the task venv and the Python installation it was made from (read-only, at their host paths),
and the config's extra read-only mounts. Nothing else of the host: no task folders or secret
files, no other workspace, no /root or /home. /tmp is private; /proc and /dev are the sandbox's
own; no network unless asked; user, pid, ipc, uts, cgroup and net namespaces are new; it runs as
uid 1000 without capabilities; it dies with the server. Limits: a cgroup when one can be made
(memory, process count), rlimits otherwise (see limits.py).

Without bubblewrap, nobwrap.py picks a stand-in: nsbox.py builds the same sandbox from Linux
namespaces where the machine allows it (same paths, observations and scores); where it allows
none, commands run as plain subprocesses with NO isolation, each workspace at its host path.
Either way a warning says what is missing: once in the log, in status() and in every ExecResult.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.env_server.sandbox.base import (
    DEFAULT_ENV,
    HOME,
    JOBS,
    STATE,
    WORKSPACE,
    ExecResult,
    Mount,
    OutputCallback,
    Sandbox,
    SandboxConfig,
    SandboxError,
    prepare_state,
    process_limit,
)
from mlgym.env_server.sandbox import nobwrap
from mlgym.env_server.sandbox.jobs import JobManager
from mlgym.env_server.sandbox.limits import Cgroup, Limits, create_cgroup, wrapper
from mlgym.env_server.sandbox.output import OutputCollector
from mlgym.env_server.sandbox.shell import LogDir, ShellDriver, ShellLost, kill_host_session

logger = log.get(__name__)

SANDBOX_UID = 1000
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# /etc entries programs need to run (dynamic linker, users, name service switch, certificates,
# Debian alternatives, fonts, time zone); never the whole of /etc.
ETC_ALWAYS = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "alternatives",
              "ssl", "ca-certificates", "ca-certificates.conf", "localtime", "timezone",
              "mime.types", "fonts", "hosts", "os-release", "debian_version", "login.defs"]
BWRAP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # all that bwrap and its wrapper get
ETC_NETWORK = ["resolv.conf", "gai.conf", "host.conf", "services", "protocols", "pip.conf"]


def find_bwrap(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The bubblewrap binary: `explicit` if given (None when it is not executable), else
    $MLGYM_BWRAP, else `bwrap` on PATH."""
    choice = str(explicit) if explicit is not None else os.environ.get("MLGYM_BWRAP")
    if choice:
        return choice if os.path.isfile(choice) and os.access(choice, os.X_OK) else None
    return shutil.which("bwrap")


@functools.cache
def _userns_works(bwrap: str) -> bool:
    """Whether bwrap may create a user namespace here (some kernels forbid it)."""
    try:
        r = subprocess.run(
            [bwrap, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
             "--ro-bind", "/", "/", "true"],
            capture_output=True, timeout=20, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def python_mounts(venv: Path | None) -> list[Path]:
    """The task venv and the Python installation it was made from (its pyvenv.cfg `home`):
    both must be visible inside for the venv's interpreter to start."""
    if venv is None:
        return []
    venv = venv.resolve()
    out = [venv]
    cfg = venv / "pyvenv.cfg"
    with contextlib.suppress(OSError):
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                prefix = Path(value.strip()).resolve().parent
                if not str(prefix).startswith("/usr/") and prefix != Path("/usr"):
                    out.append(prefix)
    return out


def _system_args(network: bool, etc_dir: Path, tmp_mb: int) -> list[str]:
    """bwrap arguments for the read-only system part of the sandbox."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    for name in ETC_ALWAYS + (ETC_NETWORK if network else []):
        p = Path("/etc") / name
        if p.exists():
            args += ["--ro-bind", str(p), str(p)]
    for name in ("passwd", "group"):  # only the sandbox user: host accounts stay private
        args += ["--ro-bind", str(etc_dir / name), f"/etc/{name}"]
    size = str(tmp_mb * 2**20)  # memory-backed: bounded by size (and the memory limit)
    args += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/tmp",
             "--size", size, "--tmpfs", "/var/tmp",
             "--dir", HOME]
    return args


def _gpu_args() -> list[str]:
    """NVIDIA device nodes, when the host has them (the driver's libraries are under /usr)."""
    args: list[str] = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(dev), str(dev)]
    return args


def _write_etc(etc_dir: Path) -> None:
    etc_dir.mkdir(parents=True, exist_ok=True)
    u = SANDBOX_UID
    (etc_dir / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"agent:x:{u}:{u}:agent:{HOME}:/bin/bash\n"
        f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (etc_dir / "group").write_text(f"root:x:0:\nagent:x:{u}:\nnogroup:x:65534:\n")


def sandbox_env(config: SandboxConfig, home: str = HOME, extra: dict[str, str] | None = None
                ) -> dict[str, str]:
    """The environment inside: a clean one, the task venv first on PATH."""
    path = SYSTEM_PATH
    env = {"HOME": home, "USER": "agent", "LOGNAME": "agent", "SHELL": "/bin/bash",
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb", "TMPDIR": "/tmp",
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "PAGER": "cat", "GIT_PAGER": "cat",
           **DEFAULT_ENV}
    if config.python_env is not None:
        venv = str(config.python_env.resolve())
        env["VIRTUAL_ENV"] = venv
        path = f"{venv}/bin:{path}"
    env["PATH"] = path
    env.update(config.env)
    env.update(extra or {})
    return env


class LocalSandbox(Sandbox):
    name = "local"

    def __init__(self, config: SandboxConfig, bwrap: str | os.PathLike[str] | None = None) -> None:
        super().__init__(config)
        self.bwrap = find_bwrap(bwrap)
        # without (a working) bubblewrap: why not; start() picks a stand-in (nobwrap.py)
        self._missing: str | None = None
        self._checked = False
        self.stand_in: nobwrap.StandIn | None = None
        if self.bwrap is None:
            self._missing = nobwrap.not_found(
                str(bwrap) if bwrap is not None else os.environ.get("MLGYM_BWRAP", "bwrap"))
            self.warning = self._missing
        self.limits = Limits(config.memory_mb, config.cpu_seconds, config.max_processes,
                             config.file_size_mb)
        self.enforcement: dict[str, str] = {}
        self.shell: ShellDriver | None = None
        self.jobs: JobManager | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._cgroup: Cgroup | None = None
        self._private: Path | None = None  # our own temp files (synthetic /etc, temp state)
        self._state: Path | None = None  # the server's files: read-only inside
        self._jobs: Path | None = None  # background jobs' logs: the agent's to write
        self._restarts = 0
        self._exec_lock = asyncio.Lock()  # one command at a time, recovery included
        self._stopping = False

    # -- paths ---------------------------------------------------------------------------------
    @property
    def workspace_inside(self) -> str:
        return WORKSPACE if self.bwrap else str(self.config.workspace.resolve())

    def _state_dir(self) -> LogDir:
        assert self._state is not None
        return LogDir(self._state, STATE if self.bwrap else str(self._state))

    def _jobs_dir(self) -> LogDir:
        assert self._jobs is not None
        return LogDir(self._jobs, JOBS if self.bwrap else str(self._jobs))

    # -- without bubblewrap (nobwrap.py) ------------------------------------------------------
    async def _take_stand_in(self) -> None:
        """No bubblewrap, or one that cannot make a sandbox here (a container): run nobwrap's
        stand-in in its place (`self.bwrap` = its launcher), or nothing (plain subprocesses)
        where no namespace can be made."""
        if self._checked:
            return
        if self._missing is None:
            assert self.bwrap is not None
            why = await asyncio.to_thread(nobwrap.unusable, self.bwrap)
            if not why:
                self._checked = True
                return
            self._missing = f"bubblewrap ({self.bwrap}) cannot make a sandbox here ({why})"
            self.bwrap = None
        try:
            self.stand_in = await asyncio.to_thread(nobwrap.stand_in, self._missing)
        except (RuntimeError, ValueError) as exc:
            raise SandboxError(str(exc)) from None
        self.bwrap, self.warning = self.stand_in.launcher, self.stand_in.warning
        self._checked = True
        nobwrap.announce(self.warning)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._proc is not None:
            return
        await self._take_stand_in()
        self._stopping = False
        ws = self.config.workspace
        if not ws.is_dir():
            raise SandboxError(f"workspace {ws} is not a folder")
        self._private = Path(tempfile.mkdtemp(prefix="mlgym-sbx-"))
        self._state = self.config.state_dir or self._private / "state"
        self._jobs = await asyncio.to_thread(prepare_state, self._state, self.config.jobs_dir)
        _write_etc(self._private / "etc")
        if not self.warning and not await asyncio.to_thread(_userns_works, self.bwrap):
            logger.warning("bwrap_no_user_namespace",
                           detail="user namespaces unavailable; the sandbox runs as the "
                                  "server's uid (capabilities still dropped)")
        await self._spawn_shell(self.workspace_inside)
        self.jobs = JobManager(self.shell, self._jobs_dir(), self.config.stream_limit)

    async def _spawn_shell(self, cwd: str) -> None:
        self._cgroup = await asyncio.to_thread(create_cgroup, self.limits)
        prefix, self.enforcement = wrapper(self.limits, self._cgroup)
        shell = ["bash", "--noprofile", "--norc"]
        if self.bwrap:
            args = await asyncio.to_thread(self._bwrap_args, self._shell_mounts(),
                                           self.config.network)
            proc = await self._exec_bwrap(prefix, args, shell)
        else:
            env = sandbox_env(self.config, home=str(self.config.workspace.resolve()))
            proc = await asyncio.create_subprocess_exec(
                *prefix, *shell, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=str(self.config.workspace), env=env,
                start_new_session=True)
        self._proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        self.shell = ShellDriver(proc.stdout, proc.stdin, self._state_dir(),
                                 self.config.output_limit, self.config.stream_limit,
                                 alive=lambda: proc.returncode is None,
                                 log_limit=self.config.full_output_limit_mb * 2**20,
                                 jobs_dir=self._jobs_dir().inside,
                                 process_limit=process_limit(self.config) if self.bwrap else 0,
                                 limit_hits=self._cgroup.limit_hits if self._cgroup else None)
        try:
            await self.shell.start(cwd)
        except SandboxError:
            await self._kill_shell()
            raise
        logger.info("sandbox_started", backend=self.name, isolated=self.isolated,
                    workspace=str(self.config.workspace), limits=self.enforcement)

    def _shell_mounts(self) -> list[Mount]:
        assert self._state is not None and self._jobs is not None
        mounts = [Mount(self.config.workspace, WORKSPACE, writable=True),
                  Mount(self._state, STATE), Mount(self._jobs, JOBS, writable=True)]
        mounts += [Mount(Path(src), dst) for src, dst in self.config.readonly]
        return mounts

    def _bwrap_args(self, mounts: Sequence[Mount], network: bool, cwd: str = WORKSPACE,
                    env: dict[str, str] | None = None) -> list[str]:
        """bwrap's options (the command goes separately)."""
        assert self.bwrap and self._private is not None
        args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--hostname", "sandbox"]
        if _userns_works(self.bwrap):
            args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        if network:
            args += ["--share-net"]
        args += _system_args(network, self._private / "etc", self.config.tmp_size_mb)
        for p in python_mounts(self.config.python_env):
            args += ["--ro-bind", str(p), str(p)]
        if self.config.gpus:
            args += _gpu_args()
        args += ["--dir", cwd]
        for m in mounts:
            if not Path(m.source).exists():
                raise SandboxError(f"mount source {m.source} does not exist")
            args += ["--bind" if m.writable else "--ro-bind", str(Path(m.source).resolve()),
                     m.target]
        args += ["--chdir", cwd, "--clearenv"]
        for k, v in sandbox_env(self.config, extra=env).items():
            args += ["--setenv", k, v]
        return args

    async def _exec_bwrap(self, prefix: list[str], args: list[str], command: list[str]
                          ) -> asyncio.subprocess.Process:
        """Start bwrap with its options passed through a pipe (`--args FD`), so host paths
        do not show in the sandbox's /proc/1/cmdline."""
        assert self.bwrap
        r, w = os.pipe()
        try:
            blob = b"".join(a.encode() + b"\0" for a in args)
            if len(blob) > 60_000:
                raise SandboxError("too many sandbox arguments")
            os.write(w, blob)
            os.close(w)
            w = -1
            # bwrap's own process becomes the sandbox's pid 1, whose /proc/1/environ the
            # agent can read: it starts with an empty environment, never the server's
            return await asyncio.create_subprocess_exec(
                *prefix, self.bwrap, "--args", str(r), "--", *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                pass_fds=(r,), start_new_session=True, env=BWRAP_ENV)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    async def _kill_shell(self) -> None:
        if self.shell is not None:
            self.shell.close()
        proc, self._proc = self._proc, None
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            await asyncio.to_thread(cgroup.kill_all)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if not self.bwrap:  # no pid namespace to take the leftovers down with it
                await asyncio.to_thread(kill_host_session, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await _reap(proc)
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)

    async def stop(self) -> None:
        self._stopping = True
        if self.jobs is not None:
            await self.jobs.close()
        await self._kill_shell()
        self.shell = None
        if self._private is not None:
            await asyncio.to_thread(shutil.rmtree, self._private, True)
            self._private = None
        logger.info("sandbox_stopped", backend=self.name)

    def _need_shell(self) -> ShellDriver:
        if self.shell is None:
            raise SandboxError("the sandbox is not started")
        return self.shell

    # -- shell -------------------------------------------------------------------------------
    async def exec(self, command: str, timeout: float | None = None,
                   on_output: OutputCallback | None = None) -> ExecResult:
        async with self._exec_lock:
            shell = self._need_shell()
            cgroup = self._cgroup
            oom_before = cgroup.oom_kills() if cgroup else 0
            try:
                result = await shell.run(command, timeout, on_output)
            except ShellLost as exc:
                if self._stopping:
                    raise SandboxError("the sandbox was stopped while the command ran") from None
                result = await self._recover(exc)
        if cgroup is not None and cgroup is self._cgroup and cgroup.oom_kills() > oom_before:
            result.output += (f"\n[a process was killed for exceeding the sandbox memory limit "
                              f"of {self.config.memory_mb} MB]")
        result.warning = self.warning
        return result

    async def _recover(self, exc: ShellLost) -> ExecResult:
        """The shell died or hung: start a fresh sandbox in the same workspace and cwd."""
        cwd = self.shell.cwd if self.shell else self.workspace_inside
        self._restarts += 1
        logger.warning("sandbox_shell_lost", reason=str(exc), restarts=self._restarts)
        await self._kill_shell()
        if self.jobs is not None:
            self.jobs.mark_lost()
        await self._spawn_shell(self.workspace_inside)
        assert self.shell is not None and self.jobs is not None
        self.jobs.shell = self.shell
        if cwd != self.workspace_inside:
            await self.shell.run(f"cd {shlex.quote(cwd)} 2>/dev/null", timeout=10)
        note = (f"\n[{exc}; a fresh shell was started in {self.shell.cwd}: environment variables,"
                " /tmp and background jobs of the old one are gone]")
        return ExecResult(output=exc.partial + note, exit_code=-1, cwd=self.shell.cwd,
                          shell_restarted=True, interrupted=True)

    async def interrupt(self) -> None:
        if self.shell is not None:
            await self.shell.interrupt()

    # -- jobs (start_background, job_status, ... in base.Sandbox) ----------------------------
    def _need_jobs(self) -> JobManager:
        self._need_shell()
        return super()._need_jobs()

    # -- evaluation --------------------------------------------------------------------------
    async def run_isolated(self, argv: list[str], timeout: float, mounts: Sequence[Mount] = (),
                           cwd: str = WORKSPACE, env: dict[str, str] | None = None
                           ) -> ExecResult:
        if not argv:
            raise SandboxError("run_isolated needs a command")
        await self._take_stand_in()
        private_made = self._private is None
        if private_made:
            self._private = Path(tempfile.mkdtemp(prefix="mlgym-sbx-"))
            _write_etc(self._private / "etc")
        cgroup = await asyncio.to_thread(create_cgroup, self.limits)
        prefix, _ = wrapper(self.limits, cgroup)
        started = time.monotonic()
        try:
            if self.bwrap:
                args = await asyncio.to_thread(self._bwrap_args, list(mounts), False, cwd, env)
                proc = await self._exec_bwrap(prefix, args, argv)
            else:
                argv, cwd, env = _translate(argv, cwd, env, mounts)
                proc = await asyncio.create_subprocess_exec(
                    *prefix, *argv, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd,
                    env=sandbox_env(self.config, home=cwd, extra=env), start_new_session=True)
            if proc.stdin is not None:
                proc.stdin.close()
            collector = OutputCollector(self.config.output_limit)
            reader = asyncio.create_task(_pump(proc, collector))
            done, _ = await asyncio.wait({reader}, timeout=timeout)
            timed_out = not done
            if timed_out:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if not self.bwrap:
                    await asyncio.to_thread(kill_host_session, proc.pid)
                if cgroup is not None:
                    await asyncio.to_thread(cgroup.kill_all)
                await reader
            code = await proc.wait()
            output, cut, _ = await collector.finish()
            if timed_out:
                output += f"\n[timed out after {timeout:g} s and killed]"
            if cgroup is not None and cgroup.oom_kills():
                output += (f"\n[a process was killed for exceeding the memory limit of "
                           f"{self.config.memory_mb} MB]")
            return ExecResult(output=output, exit_code=128 + 9 if timed_out else _code(code),
                              timed_out=timed_out, cut_chars=cut, cwd=cwd,
                              duration_s=round(time.monotonic() - started, 3),
                              warning=self.warning)
        finally:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            if private_made and self._private is not None:
                await asyncio.to_thread(shutil.rmtree, self._private, True)
                self._private = None

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(
            bwrap=self.bwrap,
            stand_in=self.stand_in.mode if self.stand_in else None,
            limits=dict(self.enforcement),
            running=self._proc is not None and self._proc.returncode is None,
            shell_restarts=self._restarts,
            network=self.config.network,
        )
        return out


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for a killed process and drain its pipes, so its transport closes in this loop."""
    if proc.stdin is not None:
        proc.stdin.close()
    await proc.wait()
    if proc.stdout is not None:
        with contextlib.suppress(TimeoutError, OSError):
            while await asyncio.wait_for(proc.stdout.read(65_536), 2):
                pass


async def _pump(proc: asyncio.subprocess.Process, collector: OutputCollector) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert proc.stdout is not None
    while data := await proc.stdout.read(65_536):
        await collector.feed(decoder.decode(data))
    await collector.feed(decoder.decode(b"", final=True))


def _code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _translate(argv: list[str], cwd: str, env: dict[str, str] | None, mounts: Sequence[Mount]
               ) -> tuple[list[str], str, dict[str, str] | None]:
    """Without bubblewrap there are no mounts: rewrite inside paths to their host sources."""
    table = sorted(((m.target.rstrip("/"), str(Path(m.source).resolve())) for m in mounts),
                   key=lambda t: -len(t[0]))

    def fix(s: str) -> str:
        for target, source in table:
            if s == target or s.startswith(target + "/"):
                return source + s[len(target):]
        return s

    new_env = {k: fix(v) for k, v in env.items()} if env else env
    cwd = fix(cwd)
    if not os.path.isdir(cwd):
        cwd = tempfile.gettempdir()
    return [fix(a) for a in argv], cwd, new_env

