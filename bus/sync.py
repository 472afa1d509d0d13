"""A blocking bus client for scripts and notebooks: the async client runs on an event loop in
a background thread, and each method waits for its result.

    with SyncBusClient("ipc:///path/run/bus", sender="me") as bus:
        bus.publish("team/demo/notes", Note(text="hello"))
        for env in bus.subscribe("team/", from_seq=1).iter(timeout=2.0):
            print(env.seq, env.body)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mlgym.bus import protocol as P
from mlgym.bus.base import BusClientBase, Subscription

T = TypeVar("T")


class SyncSubscription:
    """A subscription of a SyncBusClient: blocking `get`, or iterate (`iter(timeout)` ends
    when nothing arrives for that long); a context manager that closes it."""

    def __init__(self, owner: SyncBusClient, sub: Subscription):
        self._owner = owner
        self.sub = sub

    def get(self, timeout: float | None = None) -> P.Envelope:
        """The next message; raises TimeoutError after `timeout` seconds and StopIteration
        once the subscription is closed."""
        try:
            return self._owner._call(self.sub.get(timeout))
        except StopAsyncIteration:
            raise StopIteration from None

    def ready(self, timeout: float | None = None) -> None:
        """Wait until the subscription is effective at the broker (see Subscription.ready)."""
        self._owner._call(self.sub.ready(timeout))

    def iter(self, timeout: float | None = None) -> Iterator[P.Envelope]:
        """Messages until none arrives for `timeout` seconds (or the subscription closes)."""
        while True:
            try:
                yield self.get(timeout)
            except (TimeoutError, StopIteration):
                return

    def __iter__(self) -> Iterator[P.Envelope]:
        return self.iter(None)

    def close(self) -> None:
        """Stop receiving."""
        self._owner._call(self.sub.close())

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncBusClient:
    """Same methods as the async client, blocking. Arguments as for `mlgym.bus.connect`."""

    def __init__(self, url: str | Path, *, run: str = "", sender: str = "", curve: Any = None, **kw: Any):
        """Connect to the bus at `url` (blocks until connected), as `mlgym.bus.connect`."""
        from mlgym.bus import connect

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bus-sync-loop", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> BusClientBase:
            client = connect(url, run=run, sender=sender, curve=curve, **kw)
            await client.connect()
            return client

        try:
            self.client: BusClientBase = self._call(make())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("SyncBusClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def publish(self, topic: str, body: P.Body, *, acked: bool = False) -> int | None:
        """As BusClientBase.publish: the seq when acked, else None."""
        return self._call(self.client.publish(topic, body, acked=acked))

    def subscribe(self, *prefixes: str, from_seq: int | None = None) -> SyncSubscription:
        """As BusClientBase.subscribe, blocking."""

        async def make() -> Subscription:
            return self.client.subscribe(*prefixes, from_seq=from_seq)

        return SyncSubscription(self, self._call(make()))

    def request(self, service: str, body: P.Body, *, timeout: float = 10.0) -> P.Body:
        """As BusClientBase.request: the reply body; RpcError or TimeoutError."""
        return self._call(self.client.request(service, body, timeout=timeout))

    def history(self, from_seq: int = 1, prefix: str = "", to_seq: int = 0) -> list[P.Envelope]:
        """As BusClientBase.history."""
        return self._call(self.client.history(from_seq, prefix, to_seq))

    def close(self) -> None:
        """Close the client and stop its thread; idempotent."""
        if self._closed:
            return
        try:
            self._call(self.client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncBusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
