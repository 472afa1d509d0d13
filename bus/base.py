"""The bus client interface every transport implements (ZeroMQ in bus/client.py, MQTT in
bus/mqtt.py), so agents and services never care which bus they talk to.

The contract (see /docs/protocol.md, "Client behaviour"):
- `publish` is fire-and-forget unless `acked=True`, which returns the broker's sequence number
  once the message is durably logged.
- `subscribe` yields Envelopes in sequence order with no gaps and no duplicates: it joins live,
  fetches history when asked (`from_seq`), merges the two, and refills from history when it
  sees a gap or a new broker epoch (ZeroMQ guide, "Clone" pattern).
- `request` is typed: an `Error` reply raises `RpcError`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from mlgym import log
from mlgym.bus.protocol import Body, Envelope, ProtocolError, Record, decode

logger = log.get(__name__)


class RpcError(Exception):
    """A typed `Error` reply (or a local protocol failure) with a stable machine-readable code."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = dict(detail or {})


def envelope_of(record: Record) -> Envelope:
    """A logged message as an Envelope, seq and epoch from the record. Raises ProtocolError
    for a body this side cannot read: the bus checks envelopes only (`EnvelopeHead`), so the
    log may hold kinds newer than this client."""
    env = decode(record.payload, record.encoding.encode())
    env.seq, env.epoch = record.seq, record.epoch
    return env


def decodable(records: Iterable[Record]) -> list[Envelope]:
    """The records as envelopes, without those whose body this side cannot read (logged)."""
    out: list[Envelope] = []
    skipped = 0
    for record in records:
        try:
            out.append(envelope_of(record))
        except ProtocolError:
            skipped += 1
    if skipped:
        logger.warning("history records with unreadable bodies skipped", count=skipped)
    return out


async def until_acked(env: Envelope, send: Callable[[float], Awaitable[int]], *, timeout: float,
                      deadline: float, retryable: Callable[[BaseException], bool],
                      on_retry: Callable[[], None] = lambda: None) -> int:
    """`send(timeout)` (one acked publish of `env`: its seq) until it is acknowledged: a reply
    lost with a restarting broker or recorder is sent again, same envelope id, so the bus logs
    it once, for up to `deadline` seconds; each retry is logged. What `retryable` refuses (a
    refusal such as `invalid` or `oversized`) is final."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = 0.05
    while True:
        try:
            return await send(max(min(timeout, end - loop.time()), 0.01))
        except Exception as exc:
            if not retryable(exc):
                raise
            if loop.time() >= end:
                logger.error("acked publish not acknowledged; giving up", topic=env.topic,
                             id=env.id, seconds=deadline)
                raise
            on_retry()
            logger.warning("acked publish not acknowledged; sending it again", topic=env.topic,
                           id=env.id, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(min(delay, max(end - loop.time(), 0)))
            delay = min(delay * 2, 1.0)


class Subscription(abc.ABC):
    """An async iterator of Envelopes (seq and epoch filled in), in order, gap- and
    duplicate-free. Close it when done; it is also an async context manager."""

    prefixes: tuple[str, ...]

    @abc.abstractmethod
    async def get(self, timeout: float | None = None) -> Envelope:
        """The next message; raises asyncio.TimeoutError after `timeout` seconds, and
        StopAsyncIteration once the subscription is closed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving; pending `get` calls end with StopAsyncIteration."""

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until the subscription is effective at the broker, so that everything
        published after this returns is delivered (live-only subscriptions otherwise start
        "from whenever the broker saw them"). Transports without such a signal return at once."""
        return None

    def __aiter__(self) -> AsyncIterator[Envelope]:
        return self

    async def __anext__(self) -> Envelope:
        return await self.get()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class BusClientBase(abc.ABC):
    """One connection to a bus, shared by every publish/subscribe/request of one process part."""

    run: str
    sender: str

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the transport; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every subscription and socket; idempotent."""

    async def __aenter__(self) -> BusClientBase:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def publish(self, topic: str, body: Body, *, acked: bool = False) -> int | None:
        """Publish `body` on `topic`. With acked=True, wait until the broker has logged it and
        return its sequence number; otherwise return None at once."""

    @abc.abstractmethod
    def subscribe(self, *prefixes: str, from_seq: int | None = None) -> Subscription:
        """Messages whose topic starts with one of `prefixes` ("" = everything). `from_seq`
        replays history from that sequence number first; None means live only."""

    @abc.abstractmethod
    async def request(self, service: str, body: Body, *, timeout: float = 10.0) -> Body:
        """Send `body` to an RPC service and return its reply body; an `Error` reply raises
        RpcError, no reply within `timeout` raises asyncio.TimeoutError."""

    @abc.abstractmethod
    async def history(self, from_seq: int = 1, prefix: str = "", to_seq: int = 0) -> list[Envelope]:
        """Logged messages with seq in [from_seq, to_seq] (0 = head) and topic under `prefix`."""


__all__ = ["BusClientBase", "RpcError", "Subscription"]
