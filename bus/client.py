"""The ZeroMQ bus client: publish, subscribe (gap-free, via the broker's history), RPC.

Publishing uses an XPUB socket connected to the broker's XSUB: it behaves as a PUB on the
wire, but it also hears the broker's subscription, so the client knows when the broker is
listening (a plain PUB drops everything sent before that: ZeroMQ's "slow joiner"). With
XPUB_NODROP a full queue makes `publish` wait instead of dropping.

Each subscription has its own SUB socket and follows the ZeroMQ guide's "Clone" pattern: it
joins live, and whenever the stamps show it may have missed something (a sequence jump, a
heartbeat whose head is past what it has, a new broker epoch) it asks the broker's history
for everything from the next expected seq up to the head, then goes on live, dropping the
duplicates. Filtered subscriptions cannot tell a lost message from one on another topic, so
they verify every jump against history (cheap at agent rates; subscribe to "" for firehoses).
"""

from __future__ import annotations

import asyncio
import contextlib
import zmq
import zmq.asyncio

from mlgym import log
from mlgym.bus import endpoints as E
from mlgym.bus import protocol as P
from mlgym.bus.base import BusClientBase, RpcError, Subscription, decodable
from mlgym.bus.broker import HEARTBEAT_TOPIC, RESERVED_PREFIX, SERVICE
from mlgym.bus.rpc import UNAVAILABLE, RpcClient
from mlgym.bus.security import ClientCurve

logger = log.get(__name__)

_HEARTBEAT_B = HEARTBEAT_TOPIC.encode()
_RESERVED_B = RESERVED_PREFIX.encode()
_STAMP_SIZE = P.STAMP.size
_unpack = P.STAMP.unpack


def check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise ValueError("a topic is a non-empty string")
    if topic.startswith(RESERVED_PREFIX):
        raise ValueError(f"topics starting with {RESERVED_PREFIX!r} are reserved for the broker")


class BusClient(BusClientBase):
    """Client of one ZeroMQ broker, named by its URL (see bus/endpoints.py)."""

    def __init__(
        self,
        url: str,
        *,
        run: str = "",
        sender: str = "",
        curve: ClientCurve | None = None,
        encoding: bytes = P.MSGPACK,
        timeout: float = 10.0,
        ack_timeout: float = 3.0,
        ack_deadline: float = 120.0,
        hwm: int = 100_000,
        queue_size: int = 10_000,
        history_page: int = 5000,
        ctx: zmq.asyncio.Context | None = None,
    ):
        self.url = url
        self.endpoints = E.from_url(url)
        self.run = run
        self.sender = sender
        self.curve = curve
        self.encoding = encoding
        self.timeout = timeout
        self.ack_timeout = ack_timeout
        self.ack_deadline = ack_deadline
        self.ack_retries = 0  # acked publishes sent again (no reply in ack_timeout: broker down?)
        self.hwm = hwm
        self.queue_size = queue_size
        self.history_page = history_page
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.rpc = RpcClient(self.endpoints.rpc, curve=curve, ctx=self.ctx, encoding=encoding,
                             run=run, sender=sender)
        self._pub: zmq.asyncio.Socket | None = None
        self._pub_ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._subs: set[ZmqSubscription] = set()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        if self._pub is not None:
            return
        if self._closed:
            raise RpcError(UNAVAILABLE, "client is closed")
        pub = self.ctx.socket(zmq.XPUB)
        pub.linger = 5000  # a clean close flushes what is queued (use acked=True for certainty)
        pub.sndhwm = self.hwm
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.MAXMSGSIZE, -1)
        if self.curve is not None:
            self.curve.apply(pub)
        pub.connect(self.endpoints.pub)
        self._pub = pub
        self._tasks.append(asyncio.create_task(self._watch_broker(pub), name="bus-pub-watch"))
        await self.rpc.connect()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.rpc.close()
        if self._pub is not None:
            self._pub.close()
            self._pub = None

    async def _watch_broker(self, pub: zmq.asyncio.Socket) -> None:
        """The broker's XSUB subscribes to everything when it connects and the subscription
        goes away when it does: that is exactly "someone will log what I publish"."""
        while True:
            msg = await pub.recv()
            if msg[:1] == b"\x01":
                self._pub_ready.set()
            elif msg[:1] == b"\x00":
                self._pub_ready.clear()

    # ------------------------------------------------------------------ publish

    async def publish(self, topic: str, body: P.Body, *, acked: bool = False) -> int | None:
        check_topic(topic)
        env = P.make(body, topic=topic, run=self.run, sender=self.sender)
        return await self.publish_envelope(env, acked=acked)

    async def publish_envelope(self, env: P.Envelope, *, acked: bool = False) -> int | None:
        """Publish a ready-made envelope (its topic is used as is)."""
        check_topic(env.topic)
        await self.connect()
        if acked:
            return await self._publish_acked(env)
        payload = P.encode(env, self.encoding)
        if len(payload) > P.MAX_FRAME_BYTES:
            raise RpcError("oversized", f"message of {len(payload)} bytes > {P.MAX_FRAME_BYTES}")
        await self.wait_broker()
        assert self._pub is not None
        await self._pub.send_multipart([env.topic.encode(), self.encoding, payload])
        return None

    async def _publish_acked(self, env: P.Envelope) -> int:
        """Send `env` to the broker's `publish` RPC until it is acknowledged: a reply lost with
        a killed broker is sent again (same envelope id, so the broker logs it once) as soon as
        a broker answers, for up to `ack_deadline` seconds; each retry is logged. A refusal
        (`invalid`, `oversized`) is final."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_deadline
        delay = 0.05
        while True:
            left = deadline - loop.time()
            try:
                reply = await self.rpc.request(SERVICE, P.Publish(message=env),
                                               timeout=max(min(self.ack_timeout, left), 0.01))
            except (TimeoutError, RpcError) as exc:
                if isinstance(exc, RpcError) and exc.code != UNAVAILABLE:
                    raise
                if loop.time() >= deadline:
                    logger.error("acked publish not acknowledged; giving up", topic=env.topic,
                                 id=env.id, seconds=self.ack_deadline)
                    raise
                self.ack_retries += 1
                logger.warning("acked publish not acknowledged; sending it again", topic=env.topic,
                               id=env.id, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
                delay = min(delay * 2, 1.0)
                continue
            assert isinstance(reply, P.Published)
            return reply.seq

    async def wait_broker(self, timeout: float | None = None) -> None:
        """Wait until the broker is connected and listening to this client's publications."""
        await self.connect()
        if self._pub_ready.is_set():
            return
        try:
            await asyncio.wait_for(self._pub_ready.wait(), self.timeout if timeout is None else timeout)
        except TimeoutError:
            auth = self.rpc._auth_error
            if auth is not None:
                raise auth from None
            raise RpcError(UNAVAILABLE, f"no broker listening at {self.endpoints.pub}") from None

    # ------------------------------------------------------------------ subscribe

    def subscribe(self, *prefixes: str, from_seq: int | None = None) -> ZmqSubscription:
        """Must be called with the event loop running (it starts the subscription's task)."""
        if self._closed:
            raise RpcError(UNAVAILABLE, "client is closed")
        for p in prefixes:
            if not isinstance(p, str):
                raise TypeError(f"prefixes are strings, not {type(p).__name__}")
        sub = ZmqSubscription(self, prefixes, from_seq)
        self._subs.add(sub)
        return sub

    # ------------------------------------------------------------------ RPC

    async def request(self, service: str, body: P.Body, *, timeout: float = 10.0) -> P.Body:
        await self.connect()
        return await self.rpc.request(service, body, timeout=timeout)

    async def history(self, from_seq: int = 1, prefix: str = "", to_seq: int = 0) -> list[P.Envelope]:
        await self.connect()
        out: list[P.Envelope] = []
        req = P.HistoryRequest(from_seq=from_seq, to_seq=to_seq, prefix=prefix)
        async for chunk in self.rpc.stream(SERVICE, req, timeout=self.timeout):
            assert isinstance(chunk, P.HistoryChunk)
            out.extend(decodable(chunk.records))
        return out

    async def status(self, timeout: float = 10.0) -> P.BusStatus:
        """The broker's counters (epoch, head seq, published, dropped, endpoints)."""
        reply = await self.request(SERVICE, P.StatusRequest(), timeout=timeout)
        assert isinstance(reply, P.BusStatus)
        return reply


class _Closed:
    pass


_CLOSED = _Closed()


class ZmqSubscription(Subscription):
    """See the module docstring. Counters: delivered, duplicates (dropped), refills (history
    fetches), bad (undecodable frames, and logged messages whose body this client cannot read,
    a kind newer than it say: skipped, their seqs counted as seen), epoch_changes."""

    def __init__(self, client: BusClient, prefixes: tuple[str, ...], from_seq: int | None):
        self.prefixes = tuple(prefixes) or ("",)
        self.client = client
        self.epoch = 0
        self.delivered = 0
        self.duplicates = 0
        self.refills = 0
        self.bad = 0
        self.epoch_changes = 0
        self.error: BaseException | None = None
        self._next: int | None = None if from_seq is None else max(1, from_seq)
        self._queue: asyncio.Queue[P.Envelope | _Closed] = asyncio.Queue(client.queue_size)
        self._ready = asyncio.Event()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bus-sub-{self.prefixes}")
        self._task.add_done_callback(self._finished)

    @property
    def next_seq(self) -> int | None:
        return self._next

    async def ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), self.client.timeout if timeout is None else timeout)

    async def get(self, timeout: float | None = None) -> P.Envelope:
        if self._queue.empty() and (self._closed or self._task.done()):
            raise self._take_error() or StopAsyncIteration
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if isinstance(item, _Closed):
            raise self._take_error() or StopAsyncIteration
        return item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self.client._subs.discard(self)

    def _take_error(self) -> BaseException | None:
        err, self.error = self.error, None
        return err

    def _finished(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            logger.error("subscription failed", prefixes=self.prefixes, error=str(self.error))
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CLOSED)

    # ------------------------------------------------------------------ the reader task

    async def _run(self) -> None:
        c = self.client
        await c.connect()
        sock = c.ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = c.hwm
        sock.setsockopt(zmq.MAXMSGSIZE, -1)
        if c.curve is not None:
            c.curve.apply(sock)
        for p in self.prefixes:
            sock.subscribe(p.encode())
        if "" not in self.prefixes:
            sock.subscribe(_HEARTBEAT_B)
        sock.connect(c.endpoints.sub)
        drain = zmq.Socket.shadow(sock.underlying)  # plain socket: cheap non-blocking drains
        try:
            while True:
                await self._on_frames(await sock.recv_multipart())
                for _ in range(1000):
                    try:
                        frames = drain.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    await self._on_frames(frames)
        finally:
            sock.close(0)

    async def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 4 or len(frames[1]) != _STAMP_SIZE:
            self.bad += 1
            return
        topic, stamp, enc, payload = frames
        seq, epoch = _unpack(stamp)
        if topic.startswith(_RESERVED_B):
            if topic == _HEARTBEAT_B:
                await self._on_heartbeat(seq, epoch)
            return
        self._note_epoch(epoch)
        if self._next is None:
            self._next = seq
        if seq < self._next:
            self.duplicates += 1
            return
        if seq > self._next:
            await self._refill()
            if seq < self._next:
                return  # history had it
        await self._deliver(seq, epoch, enc, payload)

    async def _on_heartbeat(self, head: int, epoch: int) -> None:
        self._note_epoch(epoch)
        self._ready.set()  # the broker reached us: from here on nothing is missed
        if self._next is None:
            self._next = head + 1  # live only: start right after what is already logged
        elif head >= self._next:
            await self._refill()  # lost a tail, joined late, or the broker restarted

    def _note_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            if self.epoch:
                self.epoch_changes += 1
                logger.info("broker epoch changed", old=self.epoch, new=epoch, prefixes=self.prefixes)
            self.epoch = epoch

    async def _deliver(self, seq: int, epoch: int, enc: bytes, payload: bytes) -> None:
        self._next = seq + 1
        try:
            env = P.decode(payload, enc)
        except P.ProtocolError:
            self.bad += 1
            return
        env.seq = seq
        env.epoch = epoch
        self.delivered += 1
        await self._queue.put(env)

    async def _refill(self) -> None:
        """Fetch history from the next expected seq to the broker's head, in pages; retry
        (the broker may be restarting) until it answers."""
        c = self.client
        page = c.history_page
        delay = 0.05
        while True:
            assert self._next is not None
            req = P.HistoryRequest(from_seq=self._next, prefixes=list(self.prefixes), limit=page)
            n = 0
            head = 0
            try:
                self.refills += 1
                async for chunk in c.rpc.stream(SERVICE, req, timeout=c.timeout):
                    assert isinstance(chunk, P.HistoryChunk)
                    head = chunk.head_seq
                    for rec in chunk.records:
                        n += 1
                        if rec.seq >= self._next:
                            await self._deliver(rec.seq, rec.epoch, rec.encoding.encode(), rec.payload)
            except (RpcError, TimeoutError) as exc:
                logger.warning("history fetch failed; retrying", error=str(exc), from_seq=req.from_seq)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if n < page:
                self._next = max(self._next, head + 1)
                return
