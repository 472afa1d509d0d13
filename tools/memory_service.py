"""`mlgym memory serve`: the shared memory as an RPC service ("memory") on the bus protocol.

MemoryWrite -> MemoryWritten, MemorySearch -> MemoryHits. The store is SQLite (FTS5); calls run
in worker threads so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.bus.rpc import RpcServer
from mlgym.tools.memory import MemoryInputError, MemoryStore

logger = log.get(__name__)

SERVICE = "memory"


class MemoryService:
    def __init__(self, endpoint: str, store: MemoryStore, *, curve: Any = None):
        self.store = store
        self.rpc = RpcServer(endpoint, SERVICE, self.handle, curve=curve)

    async def handle(self, env: p.Envelope) -> p.Body:
        body = env.body
        try:
            if isinstance(body, p.MemoryWrite):
                mid, count = await asyncio.to_thread(
                    self.store.write, body.text, tags=body.tags, author=body.author or env.sender, task=body.task
                )
                return p.MemoryWritten(memory_id=mid, count=count)
            if isinstance(body, p.MemorySearch):
                hits = await asyncio.to_thread(self.store.search, body.query, body.k, task=body.task)
                return p.MemoryHits(hits=hits)
            if isinstance(body, p.Ping):
                return p.Pong(service=SERVICE, payload=body.payload)
        except MemoryInputError as exc:
            return p.Error(code="bad_request", message=str(exc))
        return p.Error(code="unsupported", message=f"the memory service does not handle {env.kind!r}")

    async def start(self) -> None:
        await self.rpc.start()
        logger.info("memory service listening", endpoints=self.rpc.bound, db=self.store.path)

    async def stop(self) -> None:
        await self.rpc.stop()
        self.store.close()


async def run_memory(endpoint: str, db: Path, *, curve: Any = None, ready: asyncio.Event | None = None) -> None:
    service = MemoryService(endpoint, MemoryStore(db), curve=curve)
    await service.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()
