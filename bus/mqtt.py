"""The bus over MQTT v5 (aiomqtt to a broker such as mosquitto), so one team can span machines
that share nothing but an MQTT broker. Same interface as the ZeroMQ client (bus/base.py).

Mapping (docs/mqtt.md has the full story):
- bus topic "env/s1/obs" is published raw on "<prefix>/env/s1/obs"; the payload is the same
  envelope bytes as on ZeroMQ, the encoding is the MQTT v5 content type
  ("application/msgpack", the default when absent, or "application/json").
- the recorder (bus/recorder.py) logs every raw message, stamps seq and epoch and republishes the
  same bytes on "<prefix>/$seq/<topic>" with user properties seq, epoch and prev (see
  `boundary_prefixes`); subscribers listen there and refill gaps from the recorder's history.
- RPC: requests go to "<prefix>/$rpc/<service>" with response topic "<prefix>/$reply/<client>"
  and correlation data = request id; a reply envelope with `more` set is followed by others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.bus.base import (
    BusClientBase, RpcError, Subscription, decodable, envelope_of, until_acked,
)
from mlgym.bus.mqtt_link import (
    REPLY_LEVEL,
    RPC_LEVEL,
    SEQ_LEVEL,
    Handler,
    Link,
    MqttBusError,
    MqttSettings,
    Responder,
    boundary_prefixes,
    chain_of,
    check_name,
    encoding_of,
    normalize_prefixes,
    publish_props,
    user_props,
)

logger = log.get(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- client


@dataclass
class _Stamped:
    topic: str
    seq: int
    epoch: int
    prev: list[int] | None
    env: p.Envelope | None  # None: logged, but its body is not one this side can read


@dataclass
class _Chain:
    """One MQTT filter "<prefix>/$seq/<C>#" and the subscription prefixes it carries; `done`
    is the seq through which every message of this chain has been seen or refilled."""

    prefix: str
    members: tuple[str, ...]
    done: int = 0

    @property
    def level(self) -> int:
        return self.prefix.count("/")


class MqttBusClient(BusClientBase):
    """Bus client over MQTT v5. `url` as in `MqttSettings.from_url`; keyword arguments
    (username, password, prefix, ca_file, cert_file, key_file, tls, tls_insecure, client_id)
    override it."""

    def __init__(self, url: str, *, run: str = "", sender: str = "", encoding: bytes = p.MSGPACK,
                 ack_timeout: float = 5.0, ack_deadline: float = 120.0, **kw: Any):
        self.settings = MqttSettings.from_url(url, **kw)
        self.ack_timeout = ack_timeout  # one try of an acked publish
        self.ack_deadline = ack_deadline  # all tries: how long a recorder restart may take
        self.ack_retries = 0
        self.run = run
        self.sender = sender
        self.encoding = encoding
        base = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in (sender or "client"))
        self.client_id = self.settings.client_id or f"mlgym-{base}-{p.new_id()[-10:]}"
        check_name(self.client_id, "client id")
        self.prefix = self.settings.prefix
        self.reply_topic = f"{self.prefix}/{REPLY_LEVEL}/{self.client_id}"
        self._link = Link(self.settings, self.client_id, self._dispatch)
        self._connect_lock = asyncio.Lock()
        self._connected = False
        self._closed = False
        self._pending: dict[str, asyncio.Queue[p.Envelope]] = {}
        self._subs: set[MqttSubscription] = set()
        self._services: dict[str, Responder] = {}
        self._raw_props = publish_props(encoding)  # immutable once made; paho objects are costly

    # ----------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._connected:
                return
            if self._closed:
                raise MqttBusError("client is closed")
            await self._link.start()
            await self._link.subscribe(self.reply_topic)
            self._connected = True
            logger.debug("mqtt bus connected", url=self.settings.safe_url(), client=self.client_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.close()
        for responder in list(self._services.values()):
            await responder.close()
        await self._link.close()

    # ----------------------------------------------------------------- routing

    def _dispatch(self, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        if not topic.startswith(self.prefix + "/"):
            return
        rest = topic[len(self.prefix) + 1:]
        if topic == self.reply_topic:
            self._on_reply(msg)
        elif rest.startswith(SEQ_LEVEL + "/"):
            self._on_stamped(rest[len(SEQ_LEVEL) + 1:], msg)
        elif rest.startswith(RPC_LEVEL + "/"):
            responder = self._services.get(rest[len(RPC_LEVEL) + 1:])
            if responder is not None:
                responder.feed(msg)

    def _on_reply(self, msg: aiomqtt.Message) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None) or b""
        queue = self._pending.get(correlation.decode(errors="replace"))
        if queue is None:
            return  # late reply to a request that timed out
        try:
            env = p.decode(msg.payload, encoding_of(msg.properties) or p.MSGPACK)
        except p.ProtocolError as exc:
            env = p.Envelope(body=p.Error(code=exc.code, message=exc.message))
        queue.put_nowait(env)

    def _on_stamped(self, topic: str, msg: aiomqtt.Message) -> None:
        if not self._subs:
            return
        props = user_props(msg.properties)
        try:
            seq, epoch = int(props["seq"]), int(props["epoch"])
            prev = [int(x) for x in props["prev"].split(",")] if props.get("prev") else None
            encoding = encoding_of(msg.properties)
            if encoding is None:
                raise p.ProtocolError("bad_encoding", "unknown content type")
        except (KeyError, ValueError, p.ProtocolError) as exc:
            logger.warning("malformed stamped message dropped", topic=topic, error=str(exc))
            return
        env: p.Envelope | None
        try:
            env = p.decode(msg.payload, encoding)
            env.seq, env.epoch = seq, epoch
        except p.ProtocolError:
            # the recorder logged it (a body kind newer than this client, say): its seq still
            # counts, so subscriptions skip it (counted in `bad`) rather than refill a "gap"
            env = None
        item = _Stamped(topic, seq, epoch, prev, env)
        for sub in self._subs:
            sub.feed(item)

    # ----------------------------------------------------------------- publish / RPC

    async def publish(self, topic: str, body: p.Body, *, acked: bool = False) -> int | None:
        check_name(topic)
        env = p.make(body, topic=topic, run=self.run, sender=self.sender)
        return await self.publish_envelope(env, acked=acked)

    async def publish_envelope(self, env: p.Envelope, *, acked: bool = False) -> int | None:
        """Publish a ready-made envelope (its topic is used as is)."""
        topic = env.topic
        check_name(topic)
        await self.connect()
        if acked:
            return await self._publish_acked(env)
        payload = p.encode(env, self.encoding)
        if len(payload) > p.MAX_FRAME_BYTES:
            raise ValueError(f"message of {len(payload)} bytes > {p.MAX_FRAME_BYTES}")
        await self._link.publish(f"{self.prefix}/{topic}", payload, self._raw_props)
        return None

    async def _publish_acked(self, env: p.Envelope) -> int:
        """Send `env` to the recorder's `Publish` RPC until it is acknowledged (`until_acked`:
        sent again while the recorder or the broker restarts, for up to `ack_deadline`)."""

        async def send(timeout: float) -> int:
            reply = await self.request("bus", p.Publish(message=env), timeout=timeout)
            if not isinstance(reply, p.Published):
                raise RpcError("bad_reply", f"expected published, got {type(reply).__name__}")
            return reply.seq

        def count() -> None:
            self.ack_retries += 1

        return await until_acked(env, send, timeout=self.ack_timeout, deadline=self.ack_deadline,
                                 retryable=lambda e: isinstance(e, (TimeoutError, MqttBusError)),
                                 on_retry=count)

    async def stream(self, service: str, body: p.Body, *, timeout: float = 10.0
                     ) -> AsyncIterator[p.Body]:
        """Every reply body of one request (streamed replies such as history), in order;
        `timeout` bounds the wait for each reply. Close it (`aclose`) if you stop early."""
        check_name(service, "service")
        await self.connect()
        env = p.make(body, topic=service, run=self.run, sender=self.sender)
        queue: asyncio.Queue[p.Envelope] = asyncio.Queue()
        self._pending[env.id] = queue
        try:
            props = publish_props(self.encoding, response_topic=self.reply_topic,
                                  correlation=env.id.encode())
            await self._link.publish(f"{self.prefix}/{RPC_LEVEL}/{service}",
                                     p.encode(env, self.encoding), props, timeout=timeout)
            more = True
            while more:
                try:
                    reply = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    raise asyncio.TimeoutError(
                        f"no reply from service {service!r} on {self.settings.safe_url()} within "
                        f"{timeout}s" + (" (is `mlgym bus record` running?)" if service == "bus" else "")
                    ) from None
                more = reply.more
                if isinstance(reply.body, p.Error):
                    raise RpcError(reply.body.code, reply.body.message, reply.body.detail)
                yield reply.body
        finally:
            self._pending.pop(env.id, None)

    async def request(self, service: str, body: p.Body, *, timeout: float = 10.0) -> p.Body:
        """One request, its first reply body (for streamed replies use `stream`)."""
        replies = self.stream(service, body, timeout=timeout)
        try:
            return await anext(replies)
        finally:
            await replies.aclose()

    async def history(self, from_seq: int = 1, prefix: str = "", to_seq: int = 0,
                      *, prefixes: Iterable[str] = ()) -> list[p.Envelope]:
        return decodable(await self.records(from_seq, prefix, to_seq, prefixes=prefixes))

    async def records(self, from_seq: int = 1, prefix: str = "", to_seq: int = 0,
                      *, prefixes: Iterable[str] = ()) -> list[p.Record]:
        """History as the recorder logged it, undecoded."""
        out: list[p.Record] = []
        request = p.HistoryRequest(from_seq=from_seq, to_seq=to_seq, prefix=prefix,
                                   prefixes=list(prefixes))
        async for chunk in self.stream("bus", request):
            if not isinstance(chunk, p.HistoryChunk):
                raise RpcError("bad_reply", f"expected history_chunk, got {type(chunk).__name__}")
            out.extend(chunk.records)
        return out

    async def status(self, timeout: float = 10.0) -> p.BusStatus:
        reply = await self.request("bus", p.StatusRequest(), timeout=timeout)
        if not isinstance(reply, p.BusStatus):
            raise RpcError("bad_reply", f"expected bus_status, got {type(reply).__name__}")
        return reply

    async def serve(self, service: str, handler: Handler) -> Responder:
        """Answer RPC `service` over MQTT from this client (the recorder serves "bus")."""
        await self.connect()
        responder = Responder(self._link, service, handler, sender=self.sender)
        self._services[service] = responder
        await responder.start()
        return responder

    # ----------------------------------------------------------------- subscribe

    def subscribe(self, *prefixes: str, from_seq: int | None = None) -> MqttSubscription:
        sub = MqttSubscription(self, normalize_prefixes(prefixes), from_seq)
        self._subs.add(sub)
        return sub

    def _forget(self, sub: MqttSubscription) -> None:
        self._subs.discard(sub)


class MqttSubscription(Subscription):
    """Joins live first, then replays history up to the head, then merges; each chain's `prev`
    stamp tells exactly when something was missed (broker queue overflow, reconnect, recorder
    restart), and the gap is refilled from the recorder's history before going on."""

    INBOX = 10_000
    OUTBOX = 1_000
    IDLE_CHECK_S = 3.0  # ask the recorder for anything missed after this long without traffic

    def __init__(self, client: MqttBusClient, prefixes: tuple[str, ...], from_seq: int | None):
        self.client = client
        self.prefixes = prefixes
        self.from_seq = from_seq
        groups: dict[str, list[str]] = {}
        for pre in prefixes:
            groups.setdefault(chain_of(pre), []).append(pre)
        self.chains = [_Chain(c, tuple(m)) for c, m in sorted(groups.items())]
        self.filters = sorted(
            {f"{client.prefix}/{SEQ_LEVEL}/{c.prefix}#" for c in self.chains
             if not any(c.prefix.startswith(o.prefix) and c.prefix != o.prefix for o in self.chains)}
        )
        self.epoch = 0
        self.refills = 0
        self.dropped = 0
        self.bad = 0  # logged messages whose body this client cannot read, skipped
        self.waits = 0  # requests the recorder did not answer (restarting?), tried again
        self._suspect = False  # something was dropped locally: catch up once the inbox drains
        self._failure: BaseException | None = None
        self._inbox: asyncio.Queue[_Stamped] = asyncio.Queue(self.INBOX)
        self._outbox: asyncio.Queue[p.Envelope | BaseException] = asyncio.Queue(self.OUTBOX)
        self._closed = False
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"mqtt-sub-{','.join(prefixes)}")

    async def ready(self, timeout: float | None = None) -> None:
        """Returns once the MQTT subscription is active and the start position is known: every
        message published after this is delivered. Raises what stopped the subscription."""
        waiter = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait_for(asyncio.wait({waiter, self._task},
                                                return_when=asyncio.FIRST_COMPLETED), timeout)
        finally:
            waiter.cancel()
        if not self._ready.is_set():
            failure = self._failure
            raise failure if failure is not None else StopAsyncIteration

    def feed(self, item: _Stamped) -> None:
        if self._closed or not any(item.topic.startswith(c.prefix) for c in self.chains):
            return
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1  # refilled from history (chain gap, or catch-up when drained)
            self._suspect = True

    def _matches(self, topic: str, chain: _Chain) -> bool:
        return any(topic.startswith(m) for m in chain.members)

    async def get(self, timeout: float | None = None) -> p.Envelope:
        if self._closed and self._outbox.empty():
            raise StopAsyncIteration
        item = await asyncio.wait_for(self._outbox.get(), timeout)
        if isinstance(item, _Closed):
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._closed = True
            raise item
        return item

    async def close(self) -> None:
        if self._closed and self._task.done():
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self.client._forget(self)
        for topic in self.filters:
            with contextlib.suppress(Exception):
                await self.client._link.unsubscribe(topic)
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(_Closed())

    async def _emit(self, env: p.Envelope) -> None:
        await self._outbox.put(env)

    async def _fetch(self, members: Iterable[str], from_seq: int, to_seq: int) -> list[p.Envelope]:
        """History of [from_seq, to_seq] for the chain's prefixes, in seq order."""
        if to_seq < from_seq:
            return []
        records = await self.client.records(from_seq, "", to_seq, prefixes=members)
        return [env for record in records if (env := self._readable(record)) is not None]

    def _readable(self, record: p.Record) -> p.Envelope | None:
        """The record's envelope, or None, counted in `bad`, for a body this client cannot
        read (the bus checks envelopes only)."""
        try:
            return envelope_of(record)
        except p.ProtocolError:
            self.bad += 1
            return None

    def _chain_of_topic(self, topic: str) -> _Chain | None:
        for chain in self.chains:
            if self._matches(topic, chain):
                return chain
        return None

    async def _catch_up(self) -> None:
        """Everything logged after our position, up to the recorder's head, in one history
        reply (so in seq order across chains): for the start, after a local overflow, and when
        idle (a lost message at the tail of a chain has no successor to reveal it)."""
        low = min(c.done for c in self.chains) + 1
        request = p.HistoryRequest(from_seq=low, prefixes=list(self.prefixes))
        head, epoch, records = 0, self.epoch, []
        async for chunk in self.client.stream("bus", request):
            if not isinstance(chunk, p.HistoryChunk):
                raise RpcError("bad_reply", f"expected history_chunk, got {type(chunk).__name__}")
            records.extend(chunk.records)
            head, epoch = chunk.head_seq, chunk.epoch
        if epoch != self.epoch:
            await self._new_epoch(epoch)
            if min(c.done for c in self.chains) + 1 < low:
                return await self._catch_up()  # the log was replaced: start over
        for record in records:
            chain = self._chain_of_topic(record.topic)
            if chain is None or record.seq <= chain.done:
                continue
            env = self._readable(record)
            if env is not None:
                await self._emit(env)
        for chain in self.chains:
            chain.done = max(chain.done, head)

    async def _run(self) -> None:
        try:
            await self.client.connect()
            for topic in self.filters:
                await self.client._link.subscribe(topic)
            status = await self._retrying(self.client.request, "bus", p.StatusRequest())
            if not isinstance(status, p.BusStatus):
                raise RpcError("bad_reply", f"expected bus_status, got {type(status).__name__}")
            self.epoch = status.epoch
            start = status.head_seq if self.from_seq is None else max(self.from_seq, 1) - 1
            for chain in self.chains:
                chain.done = start
            self._ready.set()
            if self.from_seq is not None:
                await self._retrying(self._catch_up)
            while True:
                if self._suspect and self._inbox.empty():
                    self._suspect = False
                    await self._retrying(self._catch_up)
                try:
                    item = await asyncio.wait_for(self._inbox.get(), self.IDLE_CHECK_S)
                except asyncio.TimeoutError:
                    await self._retrying(self._catch_up)
                    continue
                if item.epoch != self.epoch:
                    await self._retrying(self._new_epoch, item.epoch)
                for chain in self.chains:
                    if item.topic.startswith(chain.prefix):
                        await self._advance(chain, item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced to the reader by get() and ready()
            self._failure = exc
            if not self._closed:
                logger.warning("mqtt subscription failed", error=str(exc))
                await self._outbox.put(exc)

    async def _retrying(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`fn(*args)`, tried again while the recorder does not answer (it is restarting, or
        the broker is): the subscription waits it out, as ZeroMQ subscriptions wait for their
        broker, instead of failing its reader. Each wait is logged."""
        delay = 0.1
        while True:
            try:
                return await fn(*args)
            except (asyncio.TimeoutError, MqttBusError) as exc:
                if self._closed or self.client._closed:
                    raise
                self.waits += 1
                logger.warning("bus recorder not answering; trying again", error=str(exc),
                               prefixes=self.prefixes, retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _advance(self, chain: _Chain, item: _Stamped) -> None:
        if item.seq <= chain.done:
            return  # duplicate, or already refilled from history
        prev = item.seq - 1
        if item.prev is not None and len(item.prev) > chain.level:
            prev = item.prev[chain.level]
        if prev > chain.done:
            self.refills += 1
            for env in await self._retrying(self._fetch, chain.members, chain.done + 1,
                                            item.seq - 1):
                await self._emit(env)
        chain.done = item.seq
        if self._matches(item.topic, chain):
            if item.env is None:
                self.bad += 1
            else:
                await self._emit(item.env)

    async def _new_epoch(self, epoch: int) -> None:
        """The recorder restarted. If its log carried on (the record at our position is still
        there, from an older epoch), the chains stay valid and `prev` refills any gap; if the log
        was replaced, everything of the new epoch is new to us: start over from seq 1."""
        last = max((c.done for c in self.chains), default=0)
        carried_on = False
        if last > 0:
            records = await self.client.records(last, "", last)
            carried_on = bool(records) and records[0].epoch != epoch
        if not carried_on:
            for chain in self.chains:
                chain.done = 0
        logger.info("bus epoch changed", old=self.epoch, new=epoch, log_carried_on=carried_on)
        self.epoch = epoch


class _Closed(Exception):
    """Wakes a pending `get` when the subscription is closed."""


__all__ = [
    "MqttBusClient",
    "MqttBusError",
    "MqttSettings",
    "MqttSubscription",
    "boundary_prefixes",
    "chain_of",
]
