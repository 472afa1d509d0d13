"""The bus broker (`mlgym bus serve`): XSUB/XPUB proxy that stamps, logs and replays.

Publishers send [topic][encoding][envelope] to the XSUB socket; the broker validates each
message (its envelope: bodies are the receivers' to check), stamps it with the next sequence
number and its epoch, appends the batch to the run's event log (SQLite, WAL) and commits, and
only then sends [topic][stamp][encoding][envelope] out of the XPUB socket. So everything a
subscriber ever saw is durable, and sequence numbers never repeat across crashes. Late joiners
and subscribers that lost messages (a full XPUB queue drops them) catch up from history over
the ROUTER socket (RPC service "bus"), from a bounded in-memory window or from the log.

Why a plain thread with zmq.Poller for the proxy, not asyncio: the proxy is CPU-bound per
message, and an asyncio await costs tens of microseconds, which caps throughput far below
the 50,000 msg/s target; a poll/drain-a-batch loop on non-blocking sockets costs a few. Why
one thread ("bus-proxy": receive a batch, validate, stamp, commit, publish), not a pipeline
of two: pyzmq releases the GIL in every send and receive, so two busy Python threads hand
the GIL back and forth on every call; the pipeline spent more on that than it overlapped
(docs/performance.md). The RPC side (asyncio, in the main thread) stays responsive; history
reads run on their own SQLite connections in worker threads.

The per-message part of that loop (three receives, four sends) runs in C when the optional
extension bus/_hotpath.c was built (`bus/hotpath.py`); validation then happens once per batch
(`_batch_valid`), and a batch that passes is logged as the row C encoded while receiving it
and forwarded as the frames C received (no Python object per message). Everything that
decides (what is valid, sequence numbers, the log, history) is here, the same for both loops;
MLGYM_BUS_LOOP=python picks the Python loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import fcntl
import gc
import itertools
import operator
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.asyncio
import zmq.backend

from mlgym import log
from mlgym.bus import endpoints as E
from mlgym.bus import hotpath
from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.bus.eventlog import (MAX_ROW_BYTES, EventLog, LogReader, LogRow, Record, Row, batch_rows,
                                decode_records, encode_rows)
from mlgym.bus.rpc import (HARD_MAX_MESSAGE, INVALID, OVERSIZED, UNAVAILABLE, RpcServer,
                           envelope_id, unsupported)
from mlgym.bus.security import ServerCurve, disable_auth, enable_auth

logger = log.get(__name__)

SERVICE = "bus"
HEARTBEAT_TOPIC = "$bus/heartbeat"
RESERVED_PREFIX = "$"  # topics the broker owns; publishers may not use them
LOG_FILE = "events.sqlite"
LOCK_FILE = "broker.lock"

_HEARTBEAT_B = HEARTBEAT_TOPIC.encode()
_raw_send = zmq.backend.Socket.send
_raw_recv = zmq.backend.Socket.recv
_raw_get = zmq.backend.Socket.get
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
INGRESS_HWM = 100_000
BATCH_BYTES = 8 * 1024 * 1024  # a batch stops growing at this much payload
# so a batch, which stops after the message that crosses BATCH_BYTES, is always one log row
assert BATCH_BYTES + P.MAX_FRAME_BYTES <= MAX_ROW_BYTES
LINGER_FROM = 2  # a read of this many messages or more means they are coming in together
MAX_LINGER = 1.0  # seconds
# Acked publishes remembered by envelope id, so that one retried after a lost reply (the broker
# was killed between its commit and its reply, say) is logged once: the ids of the latest this
# many messages, rebuilt from the log's tail when a broker starts.
ACK_MEMORY = 10_000


@dataclasses.dataclass(slots=True)
class _Batch:
    """Messages stamped together: seqs first_seq, first_seq+1, ... in one epoch."""

    first_seq: int
    epoch: int
    count: int
    rows: list[LogRow]  # what is logged and kept in the history window
    records: list[Record] | None  # what is published: (topic, encoding name, payload) ...
    held: Any  # ... or the C loop's Held batch, its frames forwarded as received
    acks: list[tuple[bytes, int]]  # acked publishes: (token, seq)

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


_ENC_NAMES = hotpath.ENCODING_NAMES
_ENC_FRAMES = {name: enc for enc, name in _ENC_NAMES.items()}
_DECODERS = {enc: (P.raw_head_decoder(enc), name) for enc, name in _ENC_NAMES.items()}
# Whatever a decode of hostile bytes raises is a verdict on the input, never the loop's end:
# msgspec raises DecodeError and ValidationError, but also RecursionError on deep nesting
# (b"\x91" * 100000), and a future version may raise something else again.
_DECODE_ERRORS = (Exception,)
# whole-batch validation (the C loop): element boundaries first, then the envelopes
_RAW_LIST = msgspec.msgpack.Decoder(list[msgspec.Raw])
_ENVELOPE_LIST = msgspec.msgpack.Decoder(list[P.EnvelopeHead])
_topic_of = operator.attrgetter("topic")
_version_of = operator.attrgetter("v")


def _batch_valid(topics: list[str], lens: list[int], packed: bytes | None) -> bool:
    """Whether every message of a batch from the C loop (its topics, payload sizes and
    payloads) passes the broker's checks, decided with a few calls for the whole batch
    instead of a few per message. `packed` is all the payloads back to back in one msgpack
    array: decoding it as raw elements proves that each payload is exactly one msgpack value
    (a truncated one would borrow its neighbour's bytes and shift every boundary); decoding
    it as envelope heads (`P.EnvelopeHead`) then checks each. False sends the batch to the
    per-message checks, which decide and count."""
    if packed is None:  # some message is not msgpack
        return False
    try:
        raws = _RAW_LIST.decode(packed)
        if list(map(len, raws)) != lens:
            return False
        envelopes = _ENVELOPE_LIST.decode(packed)
    except _DECODE_ERRORS:
        return False
    return (all(v == P.PROTOCOL_VERSION for v in set(map(_version_of, envelopes)))
            and list(map(_topic_of, envelopes)) == topics
            and all(t and not t.startswith(RESERVED_PREFIX) for t in set(topics)))


class BrokerDied(RuntimeError):
    """The proxy loop ended by an error: the process exits non-zero (`mlgym bus serve`)."""


class Broker:
    """One broker per run directory. `await start()`, then `await stop()` (or use
    `serve()` to run until SIGINT/SIGTERM)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tcp: str | None = None,
        bind_all: bool = False,
        curve: ServerCurve | None = None,
        history: int = 10_000,
        batch: int = 512,
        heartbeat: float = 0.5,
        hwm: int = 100_000,
        chunk_records: int = 1000,
        chunk_bytes: int = 1 << 20,
        linger: float = 0.0005,
    ):
        self.run_dir = Path(run_dir).resolve()
        if not 0 <= linger <= MAX_LINGER:
            raise ValueError(f"linger must be between 0 and {MAX_LINGER} s, not {linger}")
        if tcp is not None:  # refuse a bad address before touching the run directory
            host, sep, port = tcp.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"--tcp takes HOST:PORT, not {tcp!r}")
            tcp = f"{E.check_bind_host(host.strip('[]'), bind_all)}:{port}"
        self.tcp = tcp
        self.bind_all = bind_all
        self.curve = curve
        self.batch = batch
        self.linger = linger
        self.heartbeat_interval = heartbeat
        self.hwm = hwm
        self.chunk_records = chunk_records
        self.chunk_bytes = chunk_bytes
        self.log_path = self.run_dir / LOG_FILE
        self.epoch = 0
        self.head_seq = 0
        # counters, for BusStatus
        self.published = 0
        self.dropped_malformed = 0
        self.dropped_oversized = 0
        self.dropped_version = 0
        self.history_served = 0
        self.endpoints: E.BusEndpoints | None = None
        self.history = max(history, 0)
        # >= `history` messages, as the log's rows: one bytes object per batch, which the
        # garbage collector does not track (a window of lists made its full passes walk every
        # message kept) and which costs one free when it leaves
        self._history: collections.deque[LogRow] = collections.deque()
        self._history_len = 0
        self._hist_lock = threading.Lock()
        self._next_seq = 1
        self._log: EventLog | None = None
        self._ctx: zmq.Context | None = None
        self._actx: zmq.asyncio.Context | None = None
        self._ctrl: zmq.asyncio.Socket | None = None
        self._threads: list[threading.Thread] = []
        self._rpc: RpcServer | None = None
        self._acks: dict[bytes, asyncio.Future[int]] = {}
        # acked publishes by envelope id -> (seq, epoch), the latest ACK_MEMORY
        self._acked: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._acking: dict[str, asyncio.Future[int]] = {}  # id -> the acked publish in flight
        self.duplicates_acked = 0
        self._ids_ready = asyncio.Event()  # the ids logged before this start are known
        self._ids_task: asyncio.Task | None = None
        self._ack_counter = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._hotpath: Any = None  # the C loop's module (bus/_hotpath.c), or None: Python's
        self.loop_error: BaseException | None = None  # why the proxy loop died (never, we hope)
        self._dead = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._hotpath = hotpath.load()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._log = await asyncio.to_thread(EventLog, self.log_path)
        self.epoch, self._next_seq = self._log.begin_epoch()
        self.head_seq = self._next_seq - 1
        # read in the background: a start is not held up by it (40-200 ms for 10,000 messages
        # on the loaded development machine); acked publishes wait for it
        self._ids_task = asyncio.create_task(self._load_logged_ids(), name="broker-logged-ids")
        self._ctx = zmq.Context()
        self._actx = zmq.asyncio.Context.shadow(self._ctx.underlying)
        if self.curve is not None:
            enable_auth(self._ctx, self.curve)
        xsub, xpub = await self._bind()
        ctrl_ep = f"inproc://broker-ctrl-{id(self)}"
        ctrl_in = self._ctx.socket(zmq.PAIR)
        ctrl_in.bind(ctrl_ep)
        self._ctrl = self._actx.socket(zmq.PAIR)
        self._ctrl.connect(ctrl_ep)
        self._threads = [
            threading.Thread(target=self._run, args=(xsub, xpub, ctrl_in), name="bus-proxy", daemon=True),
        ]
        for t in self._threads:
            t.start()
        assert self.endpoints is not None
        E.write_descriptor(self.run_dir, self.descriptor())
        logger.info("broker started", url=self.endpoints.url, epoch=self.epoch,
                    next_seq=self._next_seq, log=str(self.log_path), curve=self.curve is not None,
                    loop="python" if self._hotpath is None else "c")

    async def _load_logged_ids(self) -> None:
        """Remember the ids of the log's last ACK_MEMORY messages (those logged before this
        start), so an acked publish retried across a restart of the broker is recognised
        (`_acked_publish`)."""
        try:
            logged = await asyncio.to_thread(_logged_ids, self.log_path, self._next_seq)
            self._acked = collections.OrderedDict([*logged, *self._acked.items()])
            while len(self._acked) > ACK_MEMORY:
                self._acked.popitem(last=False)
        finally:
            self._ids_ready.set()

    def _take_lock(self) -> None:
        """One broker per run directory: an exclusive lock on <run_dir>/broker.lock, which the
        kernel releases when the process dies (even by SIGKILL), so a restart never waits."""
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another broker is serving {self.run_dir}") from None
        self._lock_fd = fd

    def descriptor(self) -> dict[str, Any]:
        assert self.endpoints is not None
        info: dict[str, Any] = {
            "url": self.endpoints.url,
            "endpoints": self.endpoints.as_dict(),
            "epoch": self.epoch,
            "pid": os.getpid(),
            "log": str(self.log_path),
            "protocol_version": P.PROTOCOL_VERSION,
            "curve": self.curve is not None,
            "loop": "python" if self._hotpath is None else "c",
        }
        if self.curve is not None:
            info["server_public_key"] = self.curve.public_key()
        return info

    async def _bind(self) -> tuple[zmq.Socket, zmq.Socket]:
        """Bind XSUB, XPUB and the RPC ROUTER; for tcp port 0 pick three free consecutive
        ports (retrying on a clash)."""
        assert self._ctx is not None and self._actx is not None
        if self.tcp is None:
            urls = [E.ipc_url(self.run_dir)]
        else:
            host, _, port_s = self.tcp.rpartition(":")
            port = int(port_s)
            if port:
                urls = [f"tcp://{host}:{port}"]
            else:
                urls = [f"tcp://{host}:{p}" for p in random.sample(range(20000, 60000, 3), 40)]
        last_error: Exception | None = None
        for url in urls:
            eps = E.from_url(url)
            xsub = self._ctx.socket(zmq.XSUB)
            xpub = self._ctx.socket(zmq.XPUB)
            for s in (xsub, xpub):
                s.linger = 0
                s.sndhwm = self.hwm  # per subscriber: beyond it a slow one loses (and refills)
                # per publisher, inbound: large, because a full inbound queue makes ZeroMQ drop
                # what a publisher that disconnects still had in flight
                s.rcvhwm = max(self.hwm, INGRESS_HWM)
                if self.curve is not None:
                    self.curve.apply(s)
            xsub.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MESSAGE)
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscribe, to greet it with a heartbeat
            rpc = RpcServer(eps.rpc, SERVICE, self._handle, curve=self.curve, ctx=self._actx,
                            epoch=self.epoch, sender="broker")
            try:
                if eps.pub.startswith("ipc://"):
                    for ep in (eps.pub, eps.sub, eps.rpc):  # we hold the run's lock: these
                        with contextlib.suppress(FileNotFoundError):  # are a dead broker's
                            os.unlink(ep[len("ipc://"):])
                xsub.bind(eps.pub)
                xpub.bind(eps.sub)
                await rpc.start()
            except zmq.ZMQError as exc:
                last_error = exc
                xsub.close(0)
                xpub.close(0)
                continue
            xsub.send(b"\x01")  # subscribe to everything: the broker logs every message
            self.endpoints = eps
            self._rpc = rpc
            return xsub, xpub
        raise RuntimeError(f"broker could not bind {urls[0] if len(urls) == 1 else 'any port'}: {last_error}")

    async def stop(self) -> None:
        """Finish the batch in hand, then close everything; idempotent."""
        if self._ids_task is not None:
            self._ids_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ids_task
            self._ids_task = None
        if self._threads and self._ctrl is not None:
            if any(t.is_alive() for t in self._threads):  # a dead loop's PAIR would block the send
                await self._ctrl.send(b"stop")
            for t in self._threads:
                await asyncio.to_thread(t.join)
            self._threads = []
        if self._rpc is not None:
            await self._rpc.stop()
            self._rpc = None
        if self._ctrl is not None:
            self._ctrl.close(0)
            self._ctrl = None
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(RpcError(UNAVAILABLE, "broker stopping"))
        self._acks.clear()
        if self._ctx is not None:
            disable_auth(self._ctx)
            self._ctx.term()
            self._ctx = None
        if self._log is not None:
            await asyncio.to_thread(self._log.close)
            self._log = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None
        logger.info("broker stopped", epoch=self.epoch, head_seq=self.head_seq)

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ proxy thread
    #
    # One loop: drain up to `batch` messages, validate and stamp them, commit them to the log,
    # publish them; acked publishes (from the RPC side, over the ctrl socket) join the same
    # batches; heartbeats and greetings go out between batches. While a batch commits nothing
    # is read: the XSUB queue absorbs bursts, and when it is full publishers wait.
    #
    # Linger (0.5 ms by default, `--linger-ms`): a read of LINGER_FROM or more messages that did
    # not fill a batch is followed by a pause that long before the next read, once the batch is
    # out. While messages stream in, batches grow and the costs paid once per batch (a poll, the
    # I/O thread's wake-ups, an SQLite commit: about 100 us at 10,000 msg/s) are shared by more
    # messages: at 10,000 msg/s the broker's CPU halves, for about 0.35 ms more median latency
    # (docs/performance.md). A message alone (request and reply, light traffic) never waits.

    def _run(self, xsub: zmq.Socket, xpub: zmq.Socket, ctrl: zmq.Socket) -> None:
        try:
            self._proxy(xsub, xpub, ctrl)
        except BaseException as exc:  # a bug: nothing routes any more, so the process must end
            logger.exception("broker proxy loop crashed")
            self.loop_error = exc
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the event loop is closed already
                    self._loop.call_soon_threadsafe(self._proxy_died)
        finally:
            for s in (xsub, xpub, ctrl):
                s.close(0)

    def _proxy_died(self) -> None:
        """On the event loop, once the proxy thread is gone: fail the acked publishes waiting
        for it and wake whoever waits in `died()` (`serve` exits non-zero), rather than keep
        answering RPCs while routing nothing."""
        self._dead.set()
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(RpcError(UNAVAILABLE, "the broker's proxy loop has stopped"))
        self._acks.clear()

    async def died(self) -> BaseException:
        """Wait until the proxy loop has died (it never should); returns its exception."""
        await self._dead.wait()
        assert self.loop_error is not None
        return self.loop_error

    def _proxy(self, xsub: zmq.Socket, xpub: zmq.Socket, ctrl: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(ctrl, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        noblock, again = zmq.NOBLOCK, zmq.Again
        batch, linger = self.batch, self.linger
        read, publish = self._loop_functions(xsub, xpub)
        interval = self.heartbeat_interval
        next_heartbeat = time.monotonic()
        while True:
            timeout_ms = max(0.0, next_heartbeat - time.monotonic()) * 1000
            ready = dict(poller.poll(timeout_ms))
            stopping = greet = False
            acked: list[list[bytes]] = []
            if ctrl in ready:
                while True:
                    try:
                        msg = ctrl.recv_multipart(noblock)
                    except again:
                        break
                    if msg[0] == b"stop":
                        stopping = True
                    elif msg[0] == b"pub":
                        acked.append(msg[1:])
            if xpub in ready:
                while True:
                    try:
                        sub = xpub.recv(noblock)
                    except again:
                        break
                    if sub[:1] == b"\x01":
                        greet = True  # a new subscription: tell it the head and epoch now
            try:
                records, held, row = read(batch) if xsub in ready else ([], None, None)
            except Exception:  # judging input must not end the loop: drop the batch, count it
                logger.exception("a batch could not be judged; dropped")
                self.dropped_malformed += 1
                records, held, row = [], None, None
            got = len(held) if held is not None else len(records)
            if records or held is not None or acked:
                work = self._stamp(records, held, row, acked)
                if work is not None:
                    self._commit(work)
                    self.published += work.count  # before the send: a subscriber that has a
                    publish(work)  # message and then asks for status sees it counted
                    self._after_publish(work)
            if stopping:
                return
            now = time.monotonic()
            if greet or now >= next_heartbeat:
                self._send_heartbeat(xpub)
                next_heartbeat = now + interval
            if linger and LINGER_FROM <= got < batch:
                time.sleep(linger)

    def _loop_functions(self, xsub: zmq.Socket, xpub: zmq.Socket) -> tuple[
            Callable[[int], tuple[list[Record], Any, bytes | None]], Callable[[_Batch], Any]]:
        """(read a batch, publish a batch): the C loop's when it is built, else Python's.

        A read gives (records, held, row). Python's loop reads records (valid messages as
        tuples). The C loop's fast case, a batch that is all msgpack and all valid, gives
        instead the C module's Held batch (the frames as received, forwarded without a copy)
        and the log row it already encoded; any other batch is read as records."""
        hp = self._hotpath
        if hp is None:
            def py_read(limit: int) -> tuple[list[Record], Any, bytes | None]:
                return self._read(xsub, limit), None, None

            def py_publish(b: _Batch) -> None:
                _send_records(xpub, b.records or [], b.first_seq, b.epoch)

            return py_read, py_publish
        recv_batch, send_batch, send_held = hp.recv_batch, hp.send_batch, hp.send_held
        xsub_h, xpub_h = xsub.underlying, xpub.underlying

        def read(limit: int) -> tuple[list[Record], Any, bytes | None]:
            held, topics, lens, packed, row, odd, malformed = recv_batch(xsub_h, limit, BATCH_BYTES)
            self.dropped_malformed += malformed
            valid = bool(topics) and _batch_valid(topics, lens, packed)
            if valid and not odd:
                return [], held, row
            records = held.records()
            if records and not valid:
                records = [r for r in records
                           if self._validate([r[0].encode(), _ENC_FRAMES[r[1]], r[2]]) is not None]
            for frames in odd:  # unknown encoding, oversized or a topic that is not UTF-8
                checked = self._validate(frames)  # counts why
                if checked is not None:  # not expected: C passes on only what fails
                    records.append((checked[0], checked[1], frames[2]))
            return records, None, None

        def publish(b: _Batch) -> None:
            if b.held is not None:
                send_held(xpub_h, b.held, b.first_seq, b.epoch)
            else:
                send_batch(xpub_h, b.records, b.first_seq, b.epoch)

        return read, publish

    def _read(self, xsub: zmq.Socket, limit: int) -> list[Record]:
        """Up to `limit` messages, or fewer once they hold BATCH_BYTES of payload (large
        messages: memory and commit time stay bounded), without blocking; the valid ones as
        records (to log, keep and publish), the rest counted and dropped. The Python loop.

        Why not recv_multipart: asking ZeroMQ "more frames?" (RCVMORE) costs pyzmq ~1.5 us, as
        much as the rest of the work on a message, and recv_multipart asks after every frame.
        Here three frames are read blind and only the third is asked, through the `more` flag
        of a zero-copy Frame (pyzmq sets it in C, without the option lookup `get` does: 0.4 us
        less per message). A message of other length is still caught: shorter ones run into
        the next message, which then shows "more" after the third frame; longer ones show
        "more" directly. Either way everything up to the end of that message is read and only
        its last three frames are kept as a candidate (they are a whole message if it had
        three frames: a valid message after a bad one survives); validation then judges them.
        Multipart delivery is atomic, so a message is never seen in part; a read that runs dry
        after one or two frames has read whole short messages.

        Validation is inlined for messages that pass (one decode, no calls); anything else
        goes to `_validate`, which decides and counts why."""
        recv, get, rcvmore = _raw_recv, _raw_get, _RCVMORE
        noblock, again = zmq.NOBLOCK, zmq.Again
        decoders, errors = _DECODERS, _DECODE_ERRORS
        version, reserved, max_bytes = P.PROTOCOL_VERSION, RESERVED_PREFIX, P.MAX_FRAME_BYTES
        records: list[Record] = []
        budget = BATCH_BYTES
        for _ in range(limit):
            if budget <= 0:
                break
            try:
                f1 = recv(xsub, noblock)
            except again:
                break
            try:
                f2 = recv(xsub, noblock)
                last = recv(xsub, noblock, False)
            except again:
                self.dropped_malformed += 1  # one or two single/double-frame messages
                break
            f3 = last.bytes
            budget -= len(f3)
            if last.more:
                frames = [f1, f2, f3]
                while get(xsub, rcvmore):
                    frames.append(recv(xsub, 0))
                self.dropped_malformed += 1  # at least one message with the wrong frame count
                f1, f2, f3 = frames[-3:]
            decoder = decoders.get(f2)
            if decoder is not None and len(f3) <= max_bytes:
                try:
                    env = decoder[0](f3)
                except errors:
                    pass
                else:
                    topic = env.topic
                    if env.v == version and topic and not topic.startswith(reserved) and topic.encode() == f1:
                        records.append((topic, decoder[1], f3))
                        continue
            checked = self._validate([f1, f2, f3])
            if checked is not None:  # not expected: the inline checks are the same
                records.append((checked[0], checked[1], f3))
        return records

    def _stamp(self, records: list[Record], held: Any, row: bytes | None,
               acked: list[list[bytes]]) -> _Batch | None:
        """Stamp a batch of valid messages (sequence numbers are assigned here, in arrival
        order), acked publishes after the rest: `records`, or a Held batch from the C loop
        with its log row."""
        first, epoch, ts = self._next_seq, self.epoch, time.time()
        if held is not None and not acked:
            self._next_seq = first + len(held)
            return _Batch(first, epoch, len(held), [(first, self._next_seq - 1, epoch, ts, row)],
                          None, held, [])
        if held is not None:  # acked publishes join the batch: per message, then
            records = held.records()
        acks: list[tuple[bytes, int]] = []
        seq = first + len(records)
        for token, topic_b, enc, payload in acked:  # validated by the RPC handler
            records.append((topic_b.decode(), _ENC_NAMES[enc], payload))
            acks.append((token, seq))
            seq += 1
        if not records:
            return None
        self._next_seq = seq
        rows = encode_rows([(first, epoch, ts, records)])
        return _Batch(first, epoch, len(records), rows, records, None, acks)

    def _commit(self, b: _Batch) -> None:
        """Log and commit, and keep in the history window, before anything is published: the
        write-then-publish order is what makes every delivered message durable."""
        self._append(b)
        with self._hist_lock:
            self._history.extend(b.rows)
            self._history_len += b.count
            while self._history and self._history_len - _row_len(self._history[0]) >= self.history:
                self._history_len -= _row_len(self._history.popleft())
            self.head_seq = b.last_seq

    def _after_publish(self, b: _Batch) -> None:
        if b.acks and self._loop is not None:
            self._loop.call_soon_threadsafe(self._resolve_acks, b.acks)

    def _validate(self, frames: list[bytes]) -> tuple[str, str] | None:
        """(topic, encoding name) of a well-formed message, or None (counted) for anything
        else: wrong frame count, unknown encoding, an envelope `P.check` refuses (undecodable,
        a field of the wrong type, a body that is not a map with a `kind`, wrong version),
        topic frame not matching the envelope, a reserved topic. Bodies of any kind pass: what
        is inside them is for receivers to check (`P.EnvelopeHead`)."""
        if len(frames) != 3:
            self.dropped_malformed += 1
            return None
        topic_b, enc, payload = frames
        if len(payload) > P.MAX_FRAME_BYTES:
            self.dropped_oversized += 1
            return None
        enc_name = _ENC_NAMES.get(enc)
        if enc_name is None:
            self.dropped_malformed += 1
            return None
        try:
            env = P.check(payload, enc)
        except P.ProtocolError as exc:
            if exc.code == "bad_version":
                self.dropped_version += 1
            elif exc.code == "oversized":
                self.dropped_oversized += 1
            else:
                self.dropped_malformed += 1
            return None
        topic = env.topic
        if not topic or topic.startswith(RESERVED_PREFIX) or topic.encode() != topic_b:
            self.dropped_malformed += 1
            return None
        return topic, enc_name

    def _append(self, b: _Batch) -> None:
        """Commit a batch; if the disk refuses (full, I/O error) keep retrying rather than
        publish something that is not logged."""
        assert self._log is not None
        delay = 0.05
        while True:
            try:
                self._log.append_rows(b.rows)
                return
            except Exception as exc:
                logger.error("event log append failed; retrying", error=str(exc), messages=b.count)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _send_heartbeat(self, xpub: zmq.Socket) -> None:
        """Heartbeat: stamp = (head seq, epoch) where head is the last logged seq (heartbeats
        are not logged and take no seq). Lets idle subscribers notice lost tails and restarts."""
        env = P.Envelope(body=self.status(), topic=HEARTBEAT_TOPIC, sender="broker",
                         ts=time.time(), epoch=self.epoch, seq=self.head_seq)
        xpub.send_multipart([_HEARTBEAT_B, P.STAMP.pack(self.head_seq, self.epoch), P.MSGPACK, P.encode(env)])

    def _resolve_acks(self, acks: list[tuple[bytes, int]]) -> None:
        for token, seq in acks:
            fut = self._acks.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(seq)

    # ------------------------------------------------------------------ RPC service "bus"

    def status(self) -> P.BusStatus:
        return P.BusStatus(
            epoch=self.epoch,
            head_seq=self.head_seq,
            published=self.published,
            dropped_malformed=self.dropped_malformed,
            dropped_oversized=self.dropped_oversized,
            dropped_version=self.dropped_version,
            history_served=self.history_served,
            endpoints=self.endpoints.as_dict() if self.endpoints else {},
            rpc_errors=self._rpc.errors if self._rpc else 0,
            duplicates_acked=self.duplicates_acked,
        )

    async def _handle(self, env: P.Envelope) -> P.Body | AsyncIterator[P.Body]:
        body = env.body
        if isinstance(body, P.HistoryRequest):
            return self._history_reply(body)
        if isinstance(body, P.Publish):
            try:
                message = P.publishable(body.message)  # any kind, as on pub-in
            except P.ProtocolError as exc:
                raise RpcError(INVALID, exc.message) from None
            return await self._acked_publish(message)
        if isinstance(body, P.StatusRequest):
            return self.status()
        raise unsupported(env, SERVICE)

    async def _acked_publish(self, msg: Any) -> P.Published:
        """Log, commit and publish `msg` (an Envelope, or an AnyEnvelope of a kind we do not
        know), then reply with its seq. Idempotent by envelope id: the same id again (a client
        retrying after a lost reply) gets the first one's seq and is not logged twice."""
        if not msg.topic or msg.topic.startswith(RESERVED_PREFIX):
            raise RpcError(INVALID, f"cannot publish on topic {msg.topic!r}")
        P.check_version(msg)
        if msg.id:
            await self._ids_ready.wait()
            done = self._acked.get(msg.id)
            if done is None and msg.id in self._acking:
                done = (await asyncio.shield(self._acking[msg.id]), self.epoch)
            if done is not None:
                self.duplicates_acked += 1
                return P.Published(seq=done[0], epoch=done[1])
        msg = msgspec.structs.replace(
            msg, seq=0, epoch=0, id=msg.id or P.new_id(), ts=msg.ts or time.time(), reply_to="", more=False
        )
        payload = P.encode(msg)
        if len(payload) > P.MAX_FRAME_BYTES:
            raise RpcError(OVERSIZED, f"message of {len(payload)} bytes > {P.MAX_FRAME_BYTES}")
        if self._ctrl is None or self._dead.is_set():
            raise RpcError(UNAVAILABLE, "broker stopping" if self._ctrl is None else
                           "the broker's proxy loop has stopped")
        token = next(self._ack_counter).to_bytes(8, "big")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[token] = fut
        self._acking[msg.id] = fut
        try:
            await self._ctrl.send_multipart([b"pub", token, msg.topic.encode(), P.MSGPACK, payload])
            seq = await fut
        finally:
            self._acks.pop(token, None)
            self._acking.pop(msg.id, None)
        self._acked[msg.id] = (seq, self.epoch)
        if len(self._acked) > ACK_MEMORY:
            self._acked.popitem(last=False)
        return P.Published(seq=seq, epoch=self.epoch)

    def _memory_rows(self, start: int, to: int, prefixes: tuple[str, ...], limit: int) -> list[Row] | None:
        """Matching rows start..to from the in-memory window, or None if it does not reach
        back that far. Decodes only the window's rows that overlap start..to (run it in a
        worker thread: a long range is a lot of decoding)."""
        with self._hist_lock:
            if not self._history or self._history[0][0] > start:
                return None
            rows = [r for r in self._history if r[1] >= start and r[0] <= to]
        batches = ((first, epoch, ts, decode_records(blob)) for first, _, epoch, ts, blob in rows)
        return list(itertools.islice(batch_rows(batches, start, to, prefixes), limit or None))

    def _history_reply(self, req: P.HistoryRequest) -> AsyncIterator[P.Body]:
        # the head is read first: everything up to it is committed, so "up to head" is exact
        head = self.head_seq
        to = min(req.to_seq, head) if req.to_seq > 0 else head
        start = max(req.from_seq, 1)
        prefixes = tuple(([req.prefix] if req.prefix else []) + list(req.prefixes)) or ("",)
        return self._chunks(start, to, prefixes, max(req.limit, 0), head)

    async def _chunks(self, start: int, to: int, prefixes: tuple[str, ...], limit: int, head: int) -> AsyncIterator[P.Body]:
        records: list[P.Record] = []
        size = 0
        served = 0
        async for row in self._rows(start, to, prefixes, limit):
            records.append(P.Record(seq=row[0], epoch=row[1], topic=row[3], encoding=row[4], payload=row[5]))
            size += len(row[5])
            if len(records) >= self.chunk_records or size >= self.chunk_bytes:
                served += len(records)
                yield P.HistoryChunk(records=records, done=False, head_seq=head, epoch=self.epoch)
                records, size = [], 0
        served += len(records)
        self.history_served += served
        yield P.HistoryChunk(records=records, done=True, head_seq=head, epoch=self.epoch)

    async def _rows(self, start: int, to: int, prefixes: tuple[str, ...], limit: int) -> AsyncIterator[Row]:
        if start > to:
            return
        mem = await asyncio.to_thread(self._memory_rows, start, to, prefixes, limit)
        if mem is not None:
            for row in mem:
                yield row
            return
        reader = await asyncio.to_thread(LogReader, self.log_path)
        try:
            it = reader.read(start, to, prefixes, limit, chunk=500)
            while True:
                rows = await asyncio.to_thread(next, it, None)
                if rows is None:
                    return
                for row in rows:
                    yield row
        finally:
            await asyncio.to_thread(reader.close)


def _logged_ids(log_path: Path, next_seq: int) -> list[tuple[str, tuple[int, int]]]:
    """(envelope id, (seq, epoch)) of the last ACK_MEMORY messages logged before `next_seq`,
    oldest first (run it in a worker thread)."""
    if next_seq <= 1:
        return []
    out = []
    reader = LogReader(log_path)
    try:
        for rows in reader.read(max(1, next_seq - ACK_MEMORY), next_seq - 1):
            for seq, epoch, _ts, _topic, enc, payload in rows:
                mid = envelope_id(enc.encode(), payload)
                if mid:
                    out.append((mid, (seq, epoch)))
    finally:
        reader.close()
    return out


def _row_len(row: LogRow) -> int:
    return row[1] - row[0] + 1


def _send_records(xpub: zmq.Socket, records: list[Record], first_seq: int, epoch: int) -> None:
    """The Python loop's publish: [topic][stamp][encoding][payload] per record, seqs counting
    up from first_seq. XPUB never blocks: a full subscriber queue drops, which the subscriber
    sees as a gap. The backend's send with integer flags: pyzmq's send_multipart costs several
    times more per message (flag enums)."""
    send, pack, more, frames = _raw_send, P.STAMP.pack, _SNDMORE, _ENC_FRAMES
    seq = first_seq
    for topic, enc, payload in records:
        send(xpub, topic.encode(), more)
        send(xpub, pack(seq, epoch), more)
        send(xpub, frames[enc], more)
        send(xpub, payload, 0)
        seq += 1


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED = 64 << 20  # free memory malloc keeps at the top of each arena instead of returning it
MMAP_FROM = 32 << 20  # allocations this large and larger get their own mapping


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep up to KEEP_FREED of freed memory per arena for reuse, and to
    serve allocations under MMAP_FROM from its arenas. True when it took (glibc); elsewhere a
    no-op.

    Why: libzmq's I/O thread allocates a buffer for every 8 KiB it reads, and the batches the
    broker holds come and go by the megabyte; with glibc's default (adaptive) thresholds the
    arenas' freed tops went back to the kernel and the next burst faulted them in again, page
    by page (6,000-20,000 page faults per 200,000 messages; on this VM a page the host took
    back is a fault into the host). Kept, the proxy thread's faults all but stop and the
    broker's CPU per message drops a few percent (docs/performance.md). The cost: up to
    KEEP_FREED of a past burst's memory stays with the process per arena. Only in the broker's
    own process (`serve`), like the collector settings below."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_FROM) and mallopt(_M_TRIM_THRESHOLD, KEEP_FREED))


async def serve(run_dir: str | Path, **kwargs: Any) -> None:
    """Run a broker until SIGINT or SIGTERM."""
    if not keep_freed_memory():
        logger.info("malloc left at its defaults (not glibc)")
    broker = Broker(run_dir, **kwargs)
    await broker.start()
    # Everything alive now (modules, code, the broker) lives as long as the process: keep it
    # out of the collector's full passes, which otherwise stalled the broker 14-39 ms at a time
    # after a burst (measured with gc.callbacks in `mlgym bench bus`). Only in the broker's own
    # process: an embedded Broker leaves its host's collector alone. And collect the youngest
    # generation less often: at the default threshold (700) a collection ran in the middle of
    # most batches, walking the envelopes being judged (6% of the proxy thread, measured when
    # the check decoded whole, tracked envelopes; it decodes untracked heads now, and the
    # threshold was left as it was).
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    died = asyncio.ensure_future(broker.died())
    try:
        await asyncio.wait({stopped, died}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in (stopped, died):
            f.cancel()
        await broker.stop()
    if broker.loop_error is not None:  # half alive is worse than dead: our starter restarts us
        raise BrokerDied(f"the broker's proxy loop died: {broker.loop_error!r}")


class BrokerProcess:
    """A broker in its own OS process (tests, demos, benchmarks): `.url`, `.epoch`, `.kill()`."""

    def __init__(self, proc: subprocess.Popen, run_dir: Path, info: dict[str, Any]):
        self.proc = proc
        self.run_dir = run_dir
        self.info = info

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def epoch(self) -> int:
        return int(self.info["epoch"])

    def kill(self) -> None:
        """SIGKILL: the crash case (nothing flushed, nothing closed)."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(
    run_dir: str | Path,
    *,
    tcp: str | None = None,
    keys: str | Path | None = None,
    history: int | None = None,
    heartbeat: float | None = None,
    hwm: int | None = None,
    linger: float | None = None,
    timeout: float = 20.0,
) -> BrokerProcess:
    """Start `mlgym bus serve` as a subprocess and wait until it has written its bus.json.
    Its log goes to <run_dir>/broker.log."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlgym.cli", "bus", "serve", "--run-dir", str(run_dir)]
    if tcp:
        cmd += ["--tcp", tcp]
    if keys:
        cmd += ["--keys", str(keys)]
    if history is not None:
        cmd += ["--history", str(history)]
    if heartbeat is not None:
        cmd += ["--heartbeat", str(heartbeat)]
    if hwm is not None:
        cmd += ["--hwm", str(hwm)]
    if linger is not None:
        cmd += ["--linger-ms", str(linger * 1000)]
    with open(run_dir / "broker.log", "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (run_dir / "broker.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{tail}")
        try:
            info = E.read_descriptor(run_dir)
        except (FileNotFoundError, ValueError):
            info = {}
        if info.get("pid") == proc.pid:
            return BrokerProcess(proc, run_dir, info)
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise TimeoutError(f"broker did not start within {timeout}s (see {run_dir / 'broker.log'})")
