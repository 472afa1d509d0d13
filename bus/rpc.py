"""Generic request/reply over ZeroMQ ROUTER/DEALER, shared by every service (bus, env, memory).

Frames: a client's DEALER sends [encoding][envelope]; the server's ROUTER sees
[identity][encoding][envelope] and answers on the same identity. An optional empty delimiter
frame after the identity (what REQ sockets send) is echoed back, so REQ clients work too.
Replies are Envelopes with `reply_to` = the request's `id` and `topic` = the service; a
streamed reply is several envelopes, all but the last with `more=True`. Failures are `Error`
bodies with a stable `code`, never silence: a request the server cannot even decode still gets
an Error reply (with `reply_to` when the id could be read).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, Union

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from mlgym import log
from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.bus.security import ClientCurve, ServerCurve, enable_auth
from mlgym.bus.zdrain import Drain

logger = log.get(__name__)

HandlerResult = Union[P.Body, Awaitable[P.Body], AsyncIterator[P.Body]]
Handler = Callable[[P.Envelope], HandlerResult]

# Messages this size or larger make ZeroMQ drop the connection outright; between
# MAX_FRAME_BYTES and this the peer gets an "oversized" Error reply.
HARD_MAX_MESSAGE = 2 * P.MAX_FRAME_BYTES

# Stable error codes (docs/protocol.md, "Error codes")
MALFORMED = "malformed"
BAD_VERSION = "bad_version"
BAD_ENCODING = "bad_encoding"
OVERSIZED = "oversized"
INVALID = "invalid"
UNKNOWN_SERVICE = "unknown_service"
UNSUPPORTED = "unsupported"
INTERNAL = "internal"
UNAVAILABLE = "unavailable"
UNAUTHORIZED = "unauthorized"


class _IdOnly(msgspec.Struct):
    id: str = ""


_id_decoders = {P.MSGPACK: msgspec.msgpack.Decoder(_IdOnly), P.JSON: msgspec.json.Decoder(_IdOnly)}


def envelope_id(encoding: bytes, payload: bytes) -> str:
    """Best-effort id of an envelope, read without decoding the rest of it (an undecodable
    request's id, so its Error reply can still be matched; a logged message's id)."""
    dec = _id_decoders.get(encoding)
    if dec is None or len(payload) > P.MAX_FRAME_BYTES:
        return ""
    try:
        return dec.decode(payload).id
    except Exception:  # any decode failure (RecursionError on deep nesting too): no id
        return ""


def unsupported(env: P.Envelope, service: str) -> RpcError:
    return RpcError(UNSUPPORTED, f"service {service!r} does not handle {env.kind!r}")


class RpcServer:
    """A ROUTER socket serving one named service; each request runs as its own task, so a slow
    request never holds up the others. Answers `Ping` itself."""

    def __init__(
        self,
        endpoint: str | list[str],
        service: str,
        handler: Handler,
        *,
        curve: ServerCurve | None = None,
        ctx: zmq.asyncio.Context | None = None,
        epoch: int = 0,
        sender: str = "",
    ):
        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self.service = service
        self.handler = handler
        self.curve = curve
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.epoch = epoch
        self.sender = sender or service
        self.requests = 0
        self.errors = 0  # protocol errors (requests that could not be decoded or routed)
        self.bound: list[str] = []
        self._sock: zmq.Socket | None = None
        self._drain: Drain | None = None
        self._inflight: set[asyncio.Task] = set()

    async def start(self) -> None:
        # a plain socket read from the loop's reader callback (zdrain.py): a loop turn less per hop
        sock = zmq.Socket(self.ctx, zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = 100_000
        sock.rcvhwm = 100_000
        sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MESSAGE)
        if self.curve is not None:
            enable_auth(self.ctx, self.curve)
            self.curve.apply(sock)
        try:
            for ep in self.endpoints:
                sock.bind(ep)
                self.bound.append(sock.last_endpoint.decode())
        except zmq.ZMQError:
            sock.close(0)
            raise
        self._sock = sock
        self._drain = Drain(sock, self._dispatch)
        logger.debug("rpc serving", service=self.service, endpoints=self.bound)

    async def stop(self) -> None:
        if self._drain is not None:
            self._drain.close()
            self._drain = None
        for t in list(self._inflight):
            t.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    async def __aenter__(self) -> RpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ receiving

    def _dispatch(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        route = [identity]
        if rest and rest[0] == b"":
            route.append(b"")
            rest = rest[1:]
        self.requests += 1
        if len(rest) != 2:
            self._protocol_error(route, P.MSGPACK, "", MALFORMED,
                                 f"expected 2 frames [encoding][envelope], got {len(rest)}")
            return
        encoding, payload = rest
        if encoding not in P.ENCODINGS:
            self._protocol_error(route, P.MSGPACK, "", BAD_ENCODING,
                                 f"unknown encoding {encoding[:16]!r} (use msgpack or json)")
            return
        try:
            env = P.decode(payload, encoding)
            P.check_version(env)
        except P.ProtocolError as exc:
            self._protocol_error(route, encoding, envelope_id(encoding, payload), exc.code,
                                 exc.message)
            return
        if env.topic != self.service:
            self._protocol_error(route, encoding, env.id, UNKNOWN_SERVICE,
                                 f"this endpoint serves {self.service!r}, not {env.topic!r}")
            return
        task = asyncio.create_task(self._handle(route, encoding, env))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _protocol_error(self, route: list[bytes], encoding: bytes, req_id: str, code: str, message: str) -> None:
        self.errors += 1
        logger.warning("rpc protocol error", service=self.service, code=code, error=message)
        self._send(route, encoding, req_id, P.Error(code=code, message=message), more=False)

    # ------------------------------------------------------------------ handling

    async def _handle(self, route: list[bytes], encoding: bytes, env: P.Envelope) -> None:
        try:
            if isinstance(env.body, P.Ping):
                result: Any = P.Pong(service=self.service, epoch=self.epoch, payload=env.body.payload)
            else:
                result = self.handler(env)
                if inspect.isawaitable(result):
                    result = await result
            if isinstance(result, P.Body):
                self._send(route, encoding, env.id, result, more=False)
            elif hasattr(result, "__aiter__"):
                await self._stream(route, encoding, env.id, result)
            else:
                raise TypeError(f"handler returned {type(result).__name__}, not a Body")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._send(route, encoding, env.id, _error_body(exc, self.service), more=False)

    async def _stream(self, route: list[bytes], encoding: bytes, req_id: str, items: AsyncIterator[P.Body]) -> None:
        """Send each body with more=True except the last: one item is held back so the end of
        the iterator can be marked on the final reply."""
        held: P.Body | None = None
        try:
            async for body in items:
                if held is not None:
                    self._send(route, encoding, req_id, held, more=True)
                held = body
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if held is not None:
                self._send(route, encoding, req_id, held, more=True)
            held = _error_body(exc, self.service)
        if held is None:
            held = P.Error(code=INTERNAL, message=f"{self.service}: empty reply stream")
        self._send(route, encoding, req_id, held, more=False)

    def _send(self, route: list[bytes], encoding: bytes, req_id: str, body: P.Body, *, more: bool) -> None:
        """Send at once: a ROUTER never blocks (a reply to a peer that is gone or over its
        high-water mark is dropped, as ZeroMQ does)."""
        if self._sock is None:
            return
        env = P.Envelope(body=body, id=P.new_id(), topic=self.service, sender=self.sender,
                         epoch=self.epoch, reply_to=req_id, more=more)
        payload = P.encode(env, encoding)
        if len(payload) > P.MAX_FRAME_BYTES:  # the peer would drop it (or its connection)
            logger.warning("rpc reply too large", service=self.service, size=len(payload))
            env = P.Envelope(body=P.Error(code=OVERSIZED, message=(
                f"the reply ({len(payload)} bytes) is larger than the protocol's "
                f"{P.MAX_FRAME_BYTES}-byte frame limit")), id=P.new_id(), topic=self.service,
                sender=self.sender, epoch=self.epoch, reply_to=req_id, more=False)
            payload = P.encode(env, encoding)
        try:
            self._sock.send_multipart([*route, encoding, payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone: nothing to tell anyone
            logger.debug("rpc reply not sent", service=self.service, error=str(exc))
        if self._drain is not None:
            self._drain.kick()


def _error_body(exc: Exception, service: str) -> P.Error:
    if isinstance(exc, RpcError):
        return P.Error(code=exc.code, message=exc.message, detail=exc.detail)
    if isinstance(exc, P.ProtocolError):
        return P.Error(code=exc.code, message=exc.message)
    logger.error("rpc handler failed", service=service, exc_info=exc)
    return P.Error(code=INTERNAL, message=f"{type(exc).__name__}: {exc}")


def _checked(reply: P.Envelope | BaseException) -> P.Envelope:
    """A reply as is; an exception put in its place (closed, refused) or an Error body raises."""
    if isinstance(reply, BaseException):
        raise reply
    if isinstance(reply.body, P.Error):
        raise RpcError(reply.body.code, reply.body.message, reply.body.detail)
    return reply


class _Sink(Protocol):
    def put_nowait(self, item: P.Envelope | BaseException) -> None: ...


class _OneReply:
    """The sink of a single-reply request: the first item settles the future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[P.Envelope | BaseException]) -> None:
        self.future = future

    def put_nowait(self, item: P.Envelope | BaseException) -> None:
        if not self.future.done():
            self.future.set_result(item)


class _Replies:
    """The sink of a streamed reply: every item queued; an error also settles `failed`."""

    __slots__ = ("queue", "failed")

    def __init__(self, failed: asyncio.Future[Any]) -> None:
        self.queue: asyncio.Queue[P.Envelope | BaseException] = asyncio.Queue()
        self.failed = failed

    def put_nowait(self, item: P.Envelope | BaseException) -> None:
        self.queue.put_nowait(item)
        if isinstance(item, BaseException) and not self.failed.done():
            self.failed.set_result(item)


class RpcClient:
    """A DEALER to one RPC endpoint; concurrent requests are multiplexed by request id."""

    def __init__(
        self,
        endpoint: str,
        *,
        curve: ClientCurve | None = None,
        ctx: zmq.asyncio.Context | None = None,
        encoding: bytes = P.MSGPACK,
        run: str = "",
        sender: str = "",
    ):
        """A client of the RPC socket at `endpoint` (`ipc://...`, `tcp://...`); `curve` for
        CurveZMQ on tcp; `run` and `sender` fill the envelopes it sends."""
        self.endpoint = endpoint
        self.curve = curve
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.encoding = encoding
        self.run = run
        self.sender = sender
        self.bad_replies = 0
        self._sock: zmq.Socket | None = None
        self._drain: Drain | None = None
        self._pending: dict[str, _Sink] = {}  # request id -> where its replies go
        self._tasks: list[asyncio.Task] = []
        self._auth_error: RpcError | None = None

    async def connect(self) -> None:
        if self._sock is not None:
            return
        # a plain socket read from the loop's reader callback (zdrain.py): a loop turn less per hop
        sock = zmq.Socket(self.ctx, zmq.DEALER)
        sock.linger = 0
        sock.immediate = True  # queue only on finished connections: no requests lost in limbo
        sock.sndhwm = 100_000
        sock.rcvhwm = 100_000
        sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MESSAGE)
        if self.curve is not None:
            self.curve.apply(sock)
            monitor = sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            )
            self._tasks.append(asyncio.create_task(self._watch_auth(monitor)))
        sock.connect(self.endpoint)
        self._sock = sock
        self._drain = Drain(sock, self._on_reply)

    async def close(self) -> None:
        """Close the socket; requests still waiting fail."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._drain is not None:
            self._drain.close()
            self._drain = None
        if self._sock is not None:
            if self.curve is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._sock.disable_monitor()
            self._sock.close(0)
            self._sock = None
        for sink in list(self._pending.values()):
            sink.put_nowait(RpcError(UNAVAILABLE, "client closed"))

    async def __aenter__(self) -> RpcClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, service: str, body: P.Body, *, timeout: float = 10.0) -> P.Body:
        """One request, one reply body. An `Error` reply raises RpcError; no reply within
        `timeout` seconds raises asyncio.TimeoutError. (For streamed replies use `stream`.)

        The hot path of every env action: the reply settles one future straight from the
        socket's reader callback; no queue, no generator, no reader task."""
        reply = _OneReply(asyncio.get_running_loop().create_future())
        req_id, frames = await self._register(service, body, reply)
        try:
            async with asyncio.timeout(timeout):
                await self._send(frames, reply.future)
                return _checked(await reply.future).body
        finally:
            self._pending.pop(req_id, None)

    def stream(self, service: str, body: P.Body, *, timeout: float = 10.0) -> AsyncIterator[P.Body]:
        """Every reply body of a streamed reply, in order; `timeout` applies to each reply.
        Close it (`aclose`) if you stop early."""
        return self._exchange(service, body, each_timeout=timeout)

    async def _exchange(self, service: str, body: P.Body, *, each_timeout: float | None) -> AsyncIterator[P.Body]:
        sink = _Replies(asyncio.get_running_loop().create_future())
        req_id, frames = await self._register(service, body, sink)
        try:
            async with asyncio.timeout(each_timeout):
                await self._send(frames, sink.failed)
            while True:
                async with asyncio.timeout(each_timeout):
                    reply = _checked(await sink.queue.get())
                yield reply.body
                if not reply.more:
                    return
        finally:
            self._pending.pop(req_id, None)

    async def _register(self, service: str, body: P.Body, sink: _Sink) -> tuple[str, list[bytes]]:
        """Connect if need be, make the request envelope and route its replies to `sink`:
        (request id, frames to send). The caller removes the id from _pending when done."""
        await self.connect()
        if self._auth_error is not None:
            raise self._auth_error
        env = P.make(body, topic=service, run=self.run, sender=self.sender)
        self._pending[env.id] = sink
        return env.id, [self.encoding, P.encode(env, self.encoding)]

    async def _send(self, frames: list[bytes], failed: asyncio.Future[Any]) -> None:
        """Send now if the socket can take it. It cannot while no connection is up (IMMEDIATE)
        or the peer is over its high-water mark: then retry, backing off, until it goes out or
        `failed` is settled (a refused CURVE handshake, the client closed). The caller's
        timeout bounds the wait."""
        pause = 0.001
        while True:
            if self._sock is None:
                raise RpcError(UNAVAILABLE, "client closed")
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            finally:
                if self._drain is not None:
                    self._drain.kick()
            await asyncio.wait({failed}, timeout=pause)
            if failed.done():
                return  # the reply slot holds the error; the caller raises it
            pause = min(pause * 2, 0.05)

    def _on_reply(self, frames: list[bytes]) -> None:
        if frames and frames[0] == b"":
            frames = frames[1:]
        if len(frames) != 2:
            self.bad_replies += 1
            return
        try:
            env = P.decode(frames[1], frames[0])
        except P.ProtocolError as exc:
            self.bad_replies += 1
            logger.warning("undecodable rpc reply", endpoint=self.endpoint, code=exc.code)
            return
        sink = self._pending.get(env.reply_to)
        if sink is not None:
            sink.put_nowait(env)

    async def _watch_auth(self, monitor: zmq.asyncio.Socket) -> None:
        """Turn a CURVE refusal into a prompt typed error instead of a silent timeout."""
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._auth_error = None
                    continue
                self._auth_error = RpcError(
                    UNAUTHORIZED, f"{self.endpoint} refused the CURVE handshake (key not allowed?)",
                    {"zmq_event": int(event["event"]), "value": int(event["value"])},
                )
                for sink in list(self._pending.values()):
                    sink.put_nowait(self._auth_error)
        finally:
            monitor.close(0)
