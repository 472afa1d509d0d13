"""`mlgym env serve`: the environment server.

An RPC service ("env") on a ROUTER socket: it opens sessions (one task instance each), runs ACI
commands in them (text form or structured tool calls), reads and writes workspace files, and
closes them. Each request is answered by a typed reply; failures are `Error` bodies with stable
codes. Sessions run concurrently; within one session actions are serialised. Session events
(commands, observations, output chunks, scores) are published on the bus when one is given.
"""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.bus.base import BusClientBase, RpcError
from mlgym.bus.rpc import RpcServer
from mlgym.env_server import taskinfo
from mlgym.env_server.disk import SessionDisk
from mlgym.env_server.pool import SandboxPool
from mlgym.env_server.sandbox import SandboxError, SandboxPathError
from mlgym.env_server.policy import LimitRefused, ServerPolicy, heldout_key, new_token
from mlgym.env_server.session import SAVED_FILE, Session, SessionError, load_saved

logger = log.get(__name__)

SERVICE = "env"
BACKENDS = ("local", "docker")


class EnvServer:
    def __init__(
        self,
        endpoint: str,
        root: Path,
        *,
        bus: BusClientBase | None = None,
        default_backend: str = "local",
        max_sessions: int = 256,
        curve: Any = None,
        pool_size: int = 0,
        docker_image: str = "",
        adopt: bool = False,
        policy: ServerPolicy | None = None,
        keep_workspaces: bool = True,
    ):
        """`policy`: the maxima clients' limits must stay within, and the admin token (see
        policy.py). `keep_workspaces`: keep a closed session's disk image (else delete it)."""
        self.endpoint = endpoint
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.bus = bus
        self.default_backend = default_backend
        self.max_sessions = max_sessions
        self.policy = policy or ServerPolicy()
        self._heldout_key = heldout_key()
        self.keep_workspaces = keep_workspaces
        self.sessions: dict[str, Session] = {}
        self._counter = 0
        self._tasks_cache: dict[str, taskinfo.TaskHandle] = {}
        self._template_sizes: dict[str, int] = {}
        self._task_locks: dict[str, asyncio.Lock] = {}
        self.pool_size = pool_size
        self.docker_image = docker_image or os.environ.get("MLGYM_DOCKER_IMAGE", "")
        self._pools: dict[tuple[str, str], SandboxPool] = {}
        self.adopt = adopt
        self.rpc = RpcServer(endpoint, SERVICE, self.handle, curve=curve)

    async def start(self) -> None:
        if self.adopt:
            await self._adopt_sessions()
        await self._unmount_stale()
        await self.rpc.start()
        logger.info("environment server listening", endpoints=self.rpc.bound, root=str(self.root))

    async def stop(self) -> None:
        await self.rpc.stop()
        # suspended, not closed: a server started with --adopt on this root goes on with them
        await asyncio.gather(*(s.suspend() for s in self.sessions.values()), return_exceptions=True)
        await asyncio.gather(*(pool.close() for pool in self._pools.values()), return_exceptions=True)

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ dispatch

    async def handle(self, env: p.Envelope) -> p.Body:
        body = env.body
        try:
            match body:
                case p.SessionOpen():
                    return await self._open(body, env)
                case p.Act():
                    return await self._session(body).act(
                        body.command, timeout_s=body.timeout_s, background=body.background,
                        agent=body.agent or env.sender)
                case p.ToolCall():
                    return await self._session(body).tool_call(
                        body.tool, body.args, timeout_s=body.timeout_s, agent=env.sender)
                case p.ReadFile():
                    return await self._session(body).read_file(body.path, body.max_bytes,
                                                               body.offset)
                case p.ReadArtefact():
                    return await self._session(body).read_artefact(body.step)
                case p.WriteFile():
                    return await self._session(body).write_file(body.path, body.data)
                case p.SessionClose():
                    session = self._session(body)
                    self.sessions.pop(body.session, None)
                    await session.close()
                    return p.SessionClosed(session=body.session, info=session.info())
                case p.SessionList():
                    admin = self.policy.is_admin(body.token)
                    return p.Sessions(sessions=[
                        s.info() for s in self.sessions.values()
                        if admin or self.policy.allows(s.token, body.token)])
                case p.SessionStatus():
                    return self._session(body).info()
                case p.Ping():
                    return p.Pong(service=SERVICE, payload=body.payload)
                case _:
                    return p.Error(code="unsupported", message=f"the env service does not handle {env.kind!r}")
        except SessionError as exc:
            return p.Error(code=exc.code, message=exc.message)
        except SandboxPathError as exc:
            return p.Error(code="path_refused", message=str(exc))
        except FileNotFoundError as exc:
            return p.Error(code="not_found", message=str(exc))
        except SandboxError as exc:
            return p.Error(code="sandbox_error", message=str(exc))
        except RpcError as exc:
            return p.Error(code=exc.code, message=exc.message)

    def _session(self, body: Any) -> Session:
        """The session a request names, if the request carries its token (or the admin's);
        otherwise `no_session`, the same answer as for a session that does not exist, so a
        client learns nothing about sessions that are not its own."""
        session = self.sessions.get(body.session)
        if session is None or not self.policy.allows(session.token, body.token):
            raise SessionError("no_session", f"no open session {body.session!r} with that "
                               "token (the token is in SessionOpened)")
        return session

    async def _task(self, task_id: str) -> taskinfo.TaskHandle:
        lock = self._task_locks.setdefault(task_id, asyncio.Lock())
        async with lock:  # prepare each task's data once, even when many sessions open at once
            if task_id not in self._tasks_cache:
                self._tasks_cache[task_id] = await asyncio.to_thread(taskinfo.load, task_id)
            return self._tasks_cache[task_id]

    async def _open(self, body: p.SessionOpen, env: p.Envelope) -> p.Body:
        if len(self.sessions) >= self.max_sessions:
            return p.Error(code="too_many_sessions", message=f"the server holds {self.max_sessions} sessions")
        backend = body.backend or self.default_backend
        if backend not in BACKENDS:
            return p.Error(code="bad_request", message=f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
        try:
            task = await self._task(body.task)
        except taskinfo.TaskNotFound:
            return p.Error(code="unknown_task", message=f"unknown task {body.task!r}; see `mlgym tasks list`")
        try:
            limits = self.policy.effective(body.limits, task.spec, await self._template_mb(task))
        except LimitRefused as exc:
            return p.Error(code="limit_refused", message=exc.message)
        self._counter += 1
        sid = f"s{self._counter:04d}-{p.new_id()[-6:].lower()}"
        session = Session(
            sid, task, self.root / sid, backend=backend, limits=limits, seed=body.seed,
            run=body.run or env.run, publish=self._publish if self.bus else None,
            image=self.docker_image if backend == "docker" else "", token=new_token(),
            keep_disk=self.keep_workspaces, heldout_key=self._heldout_key,
        )
        self.sessions[sid] = session
        try:
            pool = await self._pool(task, backend, session) if body.limits == p.Limits() else None
            observation = await session.open(self.root / "_templates", pool)
        except Exception as exc:
            self.sessions.pop(sid, None)
            await session.close()
            session.discard()
            logger.warning("session failed to open", task=body.task, backend=backend, error=str(exc))
            return p.Error(code="open_failed", message=f"could not open a {backend} session for {body.task}: {exc}")
        logger.info("session opened", session=sid, task=body.task, backend=backend)
        help_text = session.aci.help_text() if session.aci else ""
        return p.SessionOpened(info=session.info(), observation=observation, tools_help=help_text,
                               token=session.token)

    async def _template_mb(self, task: taskinfo.TaskHandle) -> int:
        """Size of the task's starter workspace (made once per task), in MB."""
        if task.spec.id not in self._template_sizes:
            ws, _ = await asyncio.to_thread(task.template, self.root / "_templates")
            self._template_sizes[task.spec.id] = await asyncio.to_thread(taskinfo.tree_mb, ws)
        return self._template_sizes[task.spec.id]

    async def _unmount_stale(self) -> None:
        """Unmount the disks a server that died left mounted under the root and that this one
        did not adopt (their images stay: `--adopt` mounts them again)."""
        mine = {s.root.resolve() for s in self.sessions.values()}
        for mount in sorted(self.root.glob("*/disk")):
            if mount.parent.resolve() not in mine and os.path.ismount(mount):
                await SessionDisk(mount.parent, 0).unmount()
                logger.info("unmounted a dead server's session disk", path=str(mount))

    async def _adopt_sessions(self) -> None:
        """Take over the open sessions a server that died left under the root (their
        session.jsonl), with their workspaces as they are: a restarted server goes on where the
        dead one stopped (`--adopt`; `mlgym run` restarts its server so)."""
        for path in sorted(self.root.glob(f"*/{SAVED_FILE}")):
            saved = load_saved(path)
            if saved is None:
                logger.warning("unreadable saved session; not adopted", path=str(path))
                continue
            if saved.state != "open" or saved.id in self.sessions:
                continue
            if saved.backend == "docker":  # the dead server's containers are still running
                from mlgym.env_server.sandbox import docker as docker_sandbox

                await asyncio.to_thread(docker_sandbox.cleanup)
            task = await self._task(saved.task)
            try:  # what the dead server granted, if this server still allows it
                limits = self.policy.effective(saved.limits, task.spec)
            except LimitRefused as exc:
                logger.warning("session not adopted", session=saved.id, error=exc.message)
                continue
            session = Session(saved.id, task, path.parent,
                              backend=saved.backend, limits=limits, seed=saved.seed,
                              run=saved.run, publish=self._publish if self.bus else None,
                              image=saved.image, token=saved.token or new_token(),
                              keep_disk=self.keep_workspaces, heldout_key=self._heldout_key)
            try:
                await session.adopt(saved, self.root / "_templates")
            except Exception as exc:
                logger.warning("session not adopted", session=saved.id, error=str(exc))
                await session.close()
                continue
            self.sessions[saved.id] = session
            self._counter = max(self._counter, int(saved.id[1:5]) if saved.id[1:5].isdigit() else 0)
            logger.info("session adopted", session=saved.id, task=saved.task, step=saved.step)

    async def _pool(self, task: taskinfo.TaskHandle, backend: str, session: Session) -> SandboxPool | None:
        """The warm pool for (task, backend), made on the first open of that pair and
        refilled in the background; None when pooling is off."""
        if self.pool_size <= 0:
            return None
        key = (task.spec.id, backend)
        if key not in self._pools:
            _, readonly = await asyncio.to_thread(task.template, self.root / "_templates")
            pool = SandboxPool(backend, session.sandbox_config(readonly), self.root / "_pool" / task.spec.id,
                               size=self.pool_size, disk_mb=session.limits.disk_mb)
            await pool.start()
            self._pools[key] = pool
        return self._pools[key]

    async def warm(self, task_id: str, backend: str) -> None:
        """Fill the pool for a task ahead of the first session (used by `--warm TASK`)."""
        task = await self._task(task_id)
        limits = self.policy.effective(p.Limits(), task.spec, await self._template_mb(task))
        probe = Session("warm", task, self.root / "_warm", backend=backend, limits=limits,
                        image=self.docker_image if backend == "docker" else "")
        pool = await self._pool(task, backend, probe)
        if pool is not None:
            await pool.start(wait=True)

    async def _publish(self, topic: str, body: p.Body, acked: bool = False) -> None:
        assert self.bus is not None
        await self.bus.publish(topic, body, acked=acked)


async def run_server(endpoint: str, root: Path, bus_url: str | None = None, *, run: str = "",
                     backend: str = "local", curve: Any = None, ready: asyncio.Event | None = None,
                     pool_size: int = 0, warm: tuple[str, ...] = (), bus_curve: Any = None,
                     freeze_gc: bool = False, adopt: bool = False,
                     policy: ServerPolicy | None = None, keep_workspaces: bool = True) -> None:
    """Run until cancelled (used by `mlgym env serve`, `mlgym run` and the Gymnasium client).
    `bus_curve`: client keys (a ClientCurve or a key folder) for a CURVE-protected bus.
    `freeze_gc`: in a process of its own, keep the start-up heap out of the collector's full
    passes once serving (one took 21 ms, a stall for every session, in `mlgym bench env`)."""
    from mlgym.bus import connect

    bus = connect(bus_url, run=run, sender="env", curve=bus_curve) if bus_url else None
    if bus is not None:
        await bus.connect()
    server = EnvServer(endpoint, root, bus=bus, default_backend=backend, curve=curve,
                       pool_size=pool_size, adopt=adopt, policy=policy,
                       keep_workspaces=keep_workspaces)
    await server.start()
    for task_id in warm:
        await server.warm(task_id, backend)
    if freeze_gc:
        gc.freeze()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        if bus is not None:
            await bus.close()
