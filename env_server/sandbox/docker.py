"""The `docker` sandbox backend: one container per session, driven through the docker SDK.

The container runs the task image (`mlgym image build`) as a non-root user with no network,
memory/CPU/pids limits, a read-only root, tmpfs /tmp and $HOME, no capabilities and
no-new-privileges. The agent's workspace (and the log folder, STATE) are host folders
bind-mounted in, so file reads/writes happen on the host with path confinement (base.py).

The persistent shell is `bash` started with `docker exec` (stdin attached, no tty) whose hijacked
socket is handed to asyncio; docker multiplexes stdout/stderr on it with 8-byte frame headers,
which `_DemuxReader` strips before the backend-neutral ShellDriver (shell.py) sees the bytes.

Ownership: the container user is uid 1000 ("agent" in the image). When the server runs as root,
the workspace the host laid out is handed to 1000 before the container starts, the jobs folder
is made 1000's, and every file the server writes later (ACI edits, `write_file`) is given to
1000 on its open descriptor as it is written — never a recursive chown of a tree the agent can
rearrange. The state folder stays the server's (read-only inside). A non-root server runs the
container as its own uid instead, so host and container agree.

Every blocking SDK call goes through asyncio.to_thread. Containers carry labels (mlgym.managed,
mlgym.owner = host:pid:start-time, mlgym.session, mlgym.role) so `cleanup()` can remove the
leftovers of servers that died without stopping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount as DockerMount
from docker.types import Ulimit

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
from mlgym.env_server.sandbox.output import OutputCollector
from mlgym.env_server.sandbox.jobs import JobManager
from mlgym.env_server.sandbox.limits import Cgroup, cgroup_of
from mlgym.env_server.sandbox.shell import LogDir, ShellDriver, ShellLost
from mlgym.tools import safefs

logger = log.get(__name__)

DEFAULT_IMAGE = "mlgym/task:latest"
AGENT_UID = 1000
LABEL = "mlgym.managed"
SHELL_START_TIMEOUT = 30.0
RESTART_TRIES = 4
# The container's keeper process: with TERM/INT/HUP ignored (inherited through exec), an agent's
# `kill 1` (tini forwards it) cannot stop the container; tini still reaps orphans.
KEEPER = ["bash", "-c", "trap '' TERM INT HUP QUIT; exec sleep infinity"]

_client_lock = threading.Lock()
_client: docker.DockerClient | None = None


def client() -> docker.DockerClient:
    """One SDK client per process (its HTTP pool is thread-safe enough for to_thread calls)."""
    global _client
    with _client_lock:
        if _client is None:
            try:
                _client = docker.from_env(timeout=120, max_pool_size=64)
                _client.ping()
            except docker.errors.DockerException as exc:
                _client = None
                raise SandboxError(f"docker engine not reachable: {exc}") from None
        return _client


def owner_label() -> str:
    """host:pid:start-time of this process; the start time tells a reused pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid())}"


def _proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # not ours to judge
    return _proc_start(int(pid)) == start and start != "?"


def _ids() -> tuple[int, int]:
    """The uid:gid the container runs as (see module docstring)."""
    if os.geteuid() == 0:
        return AGENT_UID, AGENT_UID
    return os.getuid(), os.getgid()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        safefs.chown_tree(root, (uid, gid))


class _DemuxReader:
    """Reads the payload of docker's multiplexed attach stream (stdout and stderr merged)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._left = 0

    async def read(self, n: int = -1) -> bytes:
        while self._left == 0:
            try:
                header = await self._reader.readexactly(8)
            except (asyncio.IncompleteReadError, ConnectionError):
                return b""
            self._left = int.from_bytes(header[4:8], "big")
        want = self._left if n is None or n < 0 else min(n, self._left)
        try:
            data = await self._reader.read(want)
        except ConnectionError:
            return b""
        self._left -= len(data)
        return data


class _Shell:
    """One `docker exec` bash: the driver plus what is needed to close it."""

    def __init__(self, driver: ShellDriver, writer: asyncio.StreamWriter, exec_id: str,
                 keep: Any) -> None:
        self.driver = driver
        self.writer = writer
        self.exec_id = exec_id
        self._keep = keep  # the SDK's socket wrapper; closing it early would close the stream

    def close(self) -> None:
        self.driver.close()
        # The transport closes the socket once the SDK's wrapper lets go of it too.
        for closer in (self.writer.close, self._keep.close):
            try:
                closer()
            except Exception:  # noqa: BLE001
                pass


class DockerSandbox(Sandbox):
    """A session's container. kwargs: image, cpus (CPU cores), session (label), read_only_root."""

    name = "docker"

    def __init__(self, config: SandboxConfig, *, image: str | None = None, cpus: float = 2.0,
                 session: str | None = None, read_only_root: bool = True,
                 tmp_size_mb: int | None = None, home_size_mb: int = 256) -> None:
        super().__init__(config)
        self.image = image or config.image or DEFAULT_IMAGE
        self.cpus = cpus
        self.session = session or uuid.uuid4().hex[:12]
        self.read_only_root = read_only_root
        self.tmp_size_mb = tmp_size_mb or config.tmp_size_mb
        self.home_size_mb = home_size_mb
        self.uid, self.gid = _ids()
        # files the server writes for the agent (ACI edits, WriteFile) are made the container
        # user's as they are written, on the open descriptor: never a chown of the tree later
        self.file_owner = (self.uid, self.gid) if os.geteuid() == 0 else None
        self.container_id: str | None = None
        self._shell: _Shell | None = None
        self._state_host: Path | None = None  # the server's files: read-only inside
        self._jobs_host: Path | None = None  # background jobs' logs: the agent's to write
        self._own_state = False
        self.jobs: JobManager | None = None
        self._stopped = False
        self._cgroup: Cgroup | None = None  # the container's: OOM kills, fork bombs
        self._restart_lock = asyncio.Lock()
        self._purge_note = ""  # said with the next restart note: a bomb was purged
        if config.python_env is not None:
            logger.info("docker sandbox ignores python_env; the image's /opt/taskenv is used",
                        python_env=str(config.python_env))

    # -- container set-up ----------------------------------------------------------------
    def _limits(self) -> dict[str, Any]:
        c = self.config
        ulimits = [Ulimit(name="fsize", soft=c.file_size_mb * 2**20, hard=c.file_size_mb * 2**20)]
        if c.cpu_seconds:
            ulimits.append(Ulimit(name="cpu", soft=c.cpu_seconds, hard=c.cpu_seconds))
        kw: dict[str, Any] = dict(
            mem_limit=f"{c.memory_mb}m", memswap_limit=f"{c.memory_mb}m",
            pids_limit=c.max_processes, ulimits=ulimits,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
            read_only=self.read_only_root,
            tmpfs={
                "/tmp": f"rw,nosuid,nodev,size={self.tmp_size_mb}m,mode=1777",
                HOME: f"rw,nosuid,nodev,size={self.home_size_mb}m,uid={self.uid},"
                      f"gid={self.gid},mode=0755",
            },
        )
        if self.cpus:
            kw["nano_cpus"] = int(self.cpus * 1e9)
        return kw

    def _create_kwargs(self, mounts: list[DockerMount], role: str, network: bool,
                       command: list[str], workdir: str,
                       env: dict[str, str] | None = None) -> dict[str, Any]:
        return dict(
            image=self.image, command=command, detach=True,
            name=f"mlgym-{role}-{self.session}-{uuid.uuid4().hex[:6]}",
            user=f"{self.uid}:{self.gid}", working_dir=workdir, hostname="sandbox",
            environment={**DEFAULT_ENV, **self.config.env, **(env or {})},
            labels={LABEL: "1", "mlgym.owner": owner_label(), "mlgym.session": self.session,
                    "mlgym.role": role},
            network_mode="bridge" if network else "none",
            mounts=mounts, **self._limits(),
        )

    def _agent_mounts(self) -> list[DockerMount]:
        assert self._state_host is not None
        assert self._jobs_host is not None
        mounts = [
            DockerMount(WORKSPACE, str(self.config.workspace.resolve()), type="bind"),
            DockerMount(STATE, str(self._state_host.resolve()), type="bind", read_only=True),
            DockerMount(JOBS, str(self._jobs_host.resolve()), type="bind"),
        ]
        for src, target in self.config.readonly:
            mounts.append(DockerMount(target, str(Path(src).resolve()), type="bind",
                                      read_only=True))
        return mounts

    async def start(self) -> None:
        if self.container_id is not None:
            return
        self._stopped = False
        cli = await asyncio.to_thread(client)
        await self._check_image(cli)
        ws = self.config.workspace
        await asyncio.to_thread(ws.mkdir, parents=True, exist_ok=True)
        if self.config.state_dir is not None:
            self._state_host = self.config.state_dir
            await asyncio.to_thread(self._state_host.mkdir, parents=True, exist_ok=True)
        else:
            self._state_host = Path(await asyncio.to_thread(tempfile.mkdtemp,
                                                            prefix="mlgym-state-"))
            self._own_state = True
        self._jobs_host = await asyncio.to_thread(prepare_state, self._state_host,
                                                  self.config.jobs_dir, self.file_owner)
        # nothing of the agent's runs yet: hand it the workspace the host laid out
        await asyncio.to_thread(_chown_tree, self.config.workspace, self.uid, self.gid)
        kwargs = self._create_kwargs(self._agent_mounts(), "agent", self.config.network,
                                     KEEPER, WORKSPACE)
        try:
            container = await asyncio.to_thread(cli.containers.run, **kwargs)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not start the container: {exc}") from None
        self.container_id = container.id
        self._cgroup = await asyncio.to_thread(_container_cgroup, container.id)
        logger.info("docker sandbox started", container=container.short_id, image=self.image,
                    session=self.session)
        try:
            self._shell = await self._open_shell()
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        self.jobs = JobManager(self._job_shell(), self._jobs_dir(), self.config.stream_limit)

    async def _check_image(self, cli: docker.DockerClient) -> None:
        try:
            await asyncio.to_thread(cli.images.get, self.image)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"docker image {self.image!r} not found; build it with "
                               "`mlgym image build`") from None

    async def _open_shell(self) -> _Shell:
        cli = client()
        api = cli.api

        def create_and_attach() -> tuple[str, Any]:
            exec_id = api.exec_create(
                self.container_id, ["bash", "--noprofile", "--norc"], stdin=True, stdout=True,
                stderr=True, tty=False, user=f"{self.uid}:{self.gid}", workdir=WORKSPACE,
            )["Id"]
            return exec_id, api.exec_start(exec_id, socket=True)

        try:
            exec_id, sock_io = await asyncio.to_thread(create_and_attach)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not start the sandbox shell: {exc}") from None
        raw = getattr(sock_io, "_sock", sock_io)
        reader, writer = await asyncio.open_connection(sock=raw)
        driver = ShellDriver(_DemuxReader(reader), writer, logs=self._logdir(),
                             output_limit=self.config.output_limit,
                             stream_limit=self.config.stream_limit,
                             fifo_owner=self.file_owner,
                             log_limit=self.config.full_output_limit_mb * 2**20,
                             jobs_dir=JOBS, process_limit=process_limit(self.config),
                             limit_hits=self._cgroup.limit_hits if self._cgroup else None)
        shell = _Shell(driver, writer, exec_id, sock_io)
        try:
            await driver.start(WORKSPACE, timeout=SHELL_START_TIMEOUT)
        except BaseException:
            shell.close()
            raise
        return shell

    def _logdir(self) -> LogDir:
        assert self._state_host is not None
        return LogDir(self._state_host, STATE)

    def _job_shell(self) -> ShellDriver:
        assert self._shell is not None
        return self._shell.driver

    async def fix_ownership(self) -> None:
        """Hand the workspace the host just laid out to the container user. Only before the
        agent's first command (the warm pool calls it after filling a pooled workspace);
        later writes are owned as they are made (see the module docstring)."""
        await asyncio.to_thread(_chown_tree, self.config.workspace, self.uid, self.gid)

    def _jobs_dir(self) -> LogDir:
        assert self._jobs_host is not None
        return LogDir(self._jobs_host, JOBS)

    async def alive(self) -> bool:
        """Container running and shell usable (the pool checks this before handing out)."""
        if self.container_id is None or self._shell is None or self._shell.driver.lost:
            return False
        try:
            c = await asyncio.to_thread(client().containers.get, self.container_id)
        except docker.errors.DockerException:
            return False
        return c.status == "running"

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.jobs is not None:
            await self.jobs.close()
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        if self._cgroup is not None:
            self._cgroup.close()  # the counter files it held open
        cid, self.container_id = self.container_id, None
        if cid is not None:
            await asyncio.to_thread(_remove, cid)
            logger.info("docker sandbox stopped", container=cid[:12], session=self.session)
        if self._own_state and self._state_host is not None:
            await asyncio.to_thread(shutil.rmtree, self._state_host, True)

    # -- the persistent shell ------------------------------------------------------------
    def _driver(self) -> ShellDriver:
        if self.container_id is None:
            raise SandboxError("sandbox not started")
        if self._shell is None:
            raise SandboxError("the sandbox shell is gone and could not be restarted")
        return self._shell.driver

    async def exec(self, command: str, timeout: float | None = None,
                   on_output: OutputCallback | None = None) -> ExecResult:
        driver = self._driver()
        cwd, started = driver.cwd, time.monotonic()
        cgroup = self._cgroup
        oom_before = cgroup.oom_kills() if cgroup is not None else 0
        try:
            result = await driver.run(command, timeout=timeout, on_output=on_output)
            if cgroup is not None and cgroup.oom_kills() > oom_before:
                result.output += (f"\n[a process was killed for exceeding the sandbox memory "
                                  f"limit of {self.config.memory_mb} MB]")
            return result
        except ShellLost as exc:
            partial, reason = exc.partial, str(exc)
        if self._stopped:
            raise SandboxError("the sandbox was stopped while the command ran")
        logger.warning("docker sandbox shell lost", reason=reason, session=self.session)
        container_restarted = await self._restart_shell(driver)
        shell = self._driver()
        if cwd and cwd != WORKSPACE:
            await shell.run(f"cd {shlex.quote(cwd)} 2>/dev/null", timeout=10)
        gone = "environment variables"
        purged, self._purge_note = self._purge_note, ""
        if purged:
            reason = f"{reason}; {purged}"
        if container_restarted:
            gone += ", /tmp, $HOME and background jobs (the container had stopped)"
        note = f"\n[{reason}; a fresh shell was started in {shell.cwd}: {gone} of the old one are gone]"
        elapsed = time.monotonic() - started
        return ExecResult(output=partial + note, exit_code=-1, shell_restarted=True,
                          timed_out=timeout is not None and elapsed >= timeout,
                          interrupted=True, cwd=shell.cwd, duration_s=round(elapsed, 3))

    async def _restart_shell(self, lost: ShellDriver) -> bool:
        """A fresh shell; the container too when it stopped (e.g. its keeper was killed).
        Returns whether the container had to be started again (its jobs are then gone)."""
        async with self._restart_lock:
            if self._shell is not None and self._shell.driver is not lost:
                return False  # a queued command saw the same loss; already replaced
            restarted = await self._replace_shell()
            if self.jobs is not None:
                if restarted:
                    self.jobs.mark_lost()
                self.jobs.shell = self._job_shell()
            return restarted

    async def _replace_shell(self) -> bool:
        old, self._shell = self._shell, None
        if old is not None:
            old.close()
            await asyncio.to_thread(_kill_exec, old.exec_id)
        restarted = False
        for attempt in range(RESTART_TRIES):
            await self._purge_if_bombed()
            try:
                c = await asyncio.to_thread(client().containers.get, self.container_id)
                if c.status in ("exited", "created", "dead"):
                    logger.warning("container stopped, starting it again", status=c.status,
                                   container=c.short_id)
                    await asyncio.to_thread(c.start)
                    restarted = True
                self._shell = await self._open_shell()
                return restarted
            except (SandboxError, docker.errors.DockerException) as exc:
                if attempt == RESTART_TRIES - 1:
                    raise SandboxError(f"could not restart the sandbox shell: {exc}") from None
                await asyncio.sleep(0.5 * (attempt + 1))  # e.g. the container is stopping
        return restarted

    async def _purge_if_bombed(self) -> None:
        """A fork bomb can kill the shell itself (bash exits when a fork fails for good), and
        the shell's own purge dies with it; the bomb's processes would then starve the next
        shell. At the process limit, the host stops and kills every process of the agent's
        user in the container (its commands and jobs), sparing the container's init and
        keeper."""
        limit = process_limit(self.config)
        killed = await asyncio.to_thread(_purge_agent_processes, self.container_id or "",
                                         self._cgroup, self.uid, limit)
        if killed:
            logger.warning("fork bomb purged from the host", processes=killed,
                           session=self.session)
            self._purge_note = (f"the sandbox reached its limit of {limit} processes (a fork "
                                "bomb?): every process started by the commands and by "
                                "background jobs was killed")
            if self.jobs is not None:
                self.jobs.mark_lost()

    async def interrupt(self) -> None:
        await self._driver().interrupt()

    # -- background jobs (job_status, job_output, kill_job in base.Sandbox; they live in the
    # container, not the shell, but are started through it)
    async def start_background(self, command: str, on_output: OutputCallback | None = None) -> str:
        self._driver()
        return await super().start_background(command, on_output)

    # -- evaluation sandbox ------------------------------------------------------------------
    async def run_isolated(self, argv: list[str], timeout: float, mounts: Sequence[Mount] = (),
                           cwd: str = WORKSPACE,
                           env: dict[str, str] | None = None) -> ExecResult:
        cli = await asyncio.to_thread(client)
        await self._check_image(cli)
        dmounts = []
        for m in mounts:
            src = Path(m.source).resolve()
            if m.writable:
                await asyncio.to_thread(_chown_tree, src, self.uid, self.gid)
            dmounts.append(DockerMount(m.target, str(src), type="bind",
                                       read_only=not m.writable))
        kwargs = self._create_kwargs(dmounts, "isolated", False, list(argv), cwd, env)
        started = time.monotonic()
        try:
            container = await asyncio.to_thread(cli.containers.create, **kwargs)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not create the evaluation container: {exc}") from None
        timed_out = False
        try:
            await asyncio.to_thread(container.start)
            try:
                status = await asyncio.wait_for(asyncio.to_thread(container.wait), timeout)
                code = int(status.get("StatusCode", -1))
            except TimeoutError:
                timed_out = True
                await asyncio.to_thread(_kill_quietly, container)
                code = 137
            raw = await asyncio.to_thread(container.logs, stdout=True, stderr=True)
        except docker.errors.APIError as exc:
            raise SandboxError(f"evaluation container failed: {exc}") from None
        finally:
            await asyncio.to_thread(_remove, container.id)
        collector = OutputCollector(self.config.output_limit)
        await collector.feed(raw.decode("utf-8", errors="replace"))
        output, cut, _ = await collector.finish()
        if timed_out:
            output += f"\n[timed out after {timeout:g} s: the evaluation container was killed]"
        return ExecResult(output=output, exit_code=code, timed_out=timed_out, cut_chars=cut,
                          duration_s=round(time.monotonic() - started, 3), cwd=cwd,
                          interrupted=timed_out)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "container": (self.container_id or "")[:12],
                "image": self.image, "session": self.session}


# -- helpers (blocking; called through asyncio.to_thread) -----------------------------------
def _remove(container_id: str) -> None:
    try:
        client().api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            logger.warning("container remove failed", container=container_id[:12],
                           error=str(exc))


def _container_cgroup(container_id: str) -> Cgroup | None:
    """The container's memory and pids cgroups on the host (through its first process), or
    None."""
    try:
        pid = int(client().api.inspect_container(container_id)["State"]["Pid"])
    except (docker.errors.DockerException, KeyError, TypeError, ValueError):
        return None
    return cgroup_of(pid) if pid > 0 else None


def _purge_agent_processes(container_id: str, cgroup: Cgroup | None, uid: int,
                           limit: int) -> int:
    """When the container holds `limit` processes or more, stop then kill (passes, so a
    bomb cannot outgrow the killing: a stopped process cannot fork) every one whose real
    uid is the agent's, but its init and keeper (the container would stop). Returns how
    many were killed (0: under the limit, or no cgroup)."""
    if cgroup is None or len(cgroup.procs()) < limit:
        return 0
    keep = _init_and_keeper(container_id)
    killed: set[int] = set()
    empty = 0
    for _ in range(50):
        hit = [pid for pid in cgroup.procs() if _live_uid(pid) == uid and pid not in keep]
        if not hit:
            empty += 1
            if empty == 2:  # a child forked as its parent died can miss one pass, not two
                break
            continue
        empty = 0
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in hit:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        killed.update(hit)
    return len(killed)


def _init_and_keeper(container_id: str) -> set[int]:
    """Host pids of the container's init and of its keeper: init's oldest child (orphans
    the agent leaves become init's children too, all of them started later)."""
    try:
        init = int(client().api.inspect_container(container_id)["State"]["Pid"])
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    except (docker.errors.DockerException, KeyError, TypeError, ValueError, OSError):
        return set()
    started = {}
    for child in children:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{child}/stat").read_text()
            started[int(child)] = int(stat.rsplit(")", 1)[1].split()[19])
    return {init, min(started, key=started.__getitem__)} if started else {init}


def _live_uid(pid: int) -> int:
    """A process's real uid; -1 when it is gone or a zombie (killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                    return -1
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def _kill_quietly(container: Any) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass


def _kill_exec(exec_id: str) -> None:
    """Kill a shell exec that stopped answering (host pid; works when the server is root)."""
    try:
        info = client().api.exec_inspect(exec_id)
    except docker.errors.APIError:
        return
    pid = info.get("Pid") or 0
    if info.get("Running") and pid > 0:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def cleanup(everything: bool = False) -> list[str]:
    """Remove mlgym containers whose server is gone (all of them with everything=True).
    Returns the removed container names. Blocking; servers call it through to_thread."""
    cli = client()
    removed = []
    for c in cli.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        owner = c.labels.get("mlgym.owner", "")
        if everything or not _owner_alive(owner):
            _remove(c.id)
            removed.append(c.name)
    if removed:
        logger.info("removed leftover containers", count=len(removed))
    return removed


def managed_containers() -> list[dict[str, str]]:
    return [{"id": c.short_id, "name": c.name, "status": c.status,
             "session": c.labels.get("mlgym.session", ""),
             "owner": c.labels.get("mlgym.owner", "")}
            for c in client().containers.list(all=True, filters={"label": f"{LABEL}=1"})]
