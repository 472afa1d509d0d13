"""A warm pool of started sandboxes, so opening a session does not wait for a container start.

A running container cannot gain a bind mount, so each pooled sandbox is started on its own fresh
workspace folder under the pool root; the session that acquires it adopts that folder as its
workspace (fills it with starter files, then calls `prepare` hooks). Every sandbox is used once:
released ones are stopped, never recycled, and the pool refills itself in the background.

Backend-neutral: it pools whatever `sandbox.base.create(backend, config)` makes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.env_server.disk import SessionDisk
from mlgym.env_server.sandbox.base import Sandbox, SandboxConfig, SandboxError, create

logger = log.get(__name__)

Prepare = Callable[[Path], Awaitable[None] | None]


class SandboxPool:
    """Keeps `size` sandboxes of one template started and ready.

    template: limits, mounts, image...; its workspace/state_dir are replaced per slot by
    folders under `root`. backend_kwargs go to the backend's constructor (e.g. cpus=2).
    """

    def __init__(self, backend: str, template: SandboxConfig, root: Path, size: int = 2,
                 disk_mb: int = 0, **backend_kwargs: Any) -> None:
        """`disk_mb`: each slot's workspace and job logs live on a disk of this size
        (env_server/disk.py; 0: a plain folder, no quota)."""
        self.disk_mb = disk_mb
        if size < 0:
            raise ValueError("pool size must be >= 0")
        self.backend = backend
        self.template = template
        self.root = Path(root)
        self.size = size
        self.backend_kwargs = backend_kwargs
        self._ready: asyncio.Queue[Sandbox] = asyncio.Queue()
        self._starting = 0
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._ids = itertools.count()
        self._tag = uuid.uuid4().hex[:8]
        self.failures = 0

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, wait: bool = False) -> None:
        """Begin filling the pool; with wait=True return once all slots are ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._refill()
        if wait:
            while self._ready.qsize() < self.size and self._starting:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop every idle sandbox and the refill tasks; acquired sandboxes are the caller's."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._ready.empty():
            await self._discard(self._ready.get_nowait())

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- use ---------------------------------------------------------------------------
    async def acquire(self, prepare: Prepare | None = None) -> Sandbox:
        """A started sandbox, whose config.workspace is an empty folder now owned by the caller.
        `prepare(workspace)` (sync runs in a thread) fills it; ownership is then fixed for the
        sandbox user (docker) before the sandbox is handed out."""
        if self._closed:
            raise SandboxError("pool is closed")
        sandbox = None
        while sandbox is None:
            if self._ready.empty():
                logger.info("pool empty, starting a sandbox on demand", pool=self._tag)
                sandbox = await self._make()
            else:
                sandbox = self._ready.get_nowait()
                if not await _alive(sandbox):
                    await self._discard(sandbox)
                    sandbox = None
        self._refill()
        try:
            if prepare is not None:
                if inspect.iscoroutinefunction(prepare):
                    await prepare(sandbox.config.workspace)
                else:
                    await asyncio.to_thread(prepare, sandbox.config.workspace)
            fix = getattr(sandbox, "fix_ownership", None)
            if fix is not None:
                await fix()
        except BaseException:
            await self._discard(sandbox)
            raise
        return sandbox

    def stats(self) -> dict[str, int]:
        return {"size": self.size, "ready": self._ready.qsize(), "starting": self._starting,
                "failures": self.failures}

    # -- internals ---------------------------------------------------------------------
    def _refill(self) -> None:
        if self._closed:
            return
        missing = self.size - self._ready.qsize() - self._starting
        for _ in range(max(0, missing)):
            self._starting += 1
            task = asyncio.create_task(self._fill_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fill_one(self) -> None:
        try:
            sandbox = await self._make()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep the pool alive; acquire starts on demand
            self.failures += 1
            logger.warning("pool could not start a sandbox", error=str(exc), pool=self._tag)
            return
        finally:
            self._starting -= 1
        if self._closed:
            await self._discard(sandbox)
        else:
            self._ready.put_nowait(sandbox)

    async def _make(self) -> Sandbox:
        slot = self.root / f"slot-{self._tag}-{next(self._ids)}"
        slot.mkdir(parents=True)
        disk = SessionDisk(slot, self.disk_mb)
        state = slot / "state" if self.template.state_dir is not None else None
        config = dataclasses.replace(self.template, workspace=disk.workspace,
                                     jobs_dir=disk.jobs, state_dir=state)
        sandbox = create(self.backend, config, **self.backend_kwargs)
        disk.owner = sandbox.file_owner
        sandbox.disk = disk
        try:
            await disk.create()
            await sandbox.start()
        except BaseException:
            await asyncio.shield(self._discard(sandbox))
            raise
        return sandbox

    async def _discard(self, sandbox: Sandbox) -> None:
        await _stop_quietly(sandbox)
        disk = getattr(sandbox, "disk", None)
        if disk is not None:
            await disk.release(keep=False)
            shutil.rmtree(disk.root, ignore_errors=True)


async def _alive(sandbox: Sandbox) -> bool:
    check = getattr(sandbox, "alive", None)
    if check is None:
        return True
    try:
        return bool(await check())
    except Exception:  # noqa: BLE001
        return False


async def _stop_quietly(sandbox: Sandbox) -> None:
    try:
        await sandbox.stop()
    except Exception as exc:  # noqa: BLE001
        logger.warning("sandbox stop failed", error=str(exc))
