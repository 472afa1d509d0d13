"""The MQTT v5 plumbing under the bus client and the recorder: connection settings (URL, auth,
TLS), the bus-topic <-> MQTT-topic mapping, one self-reconnecting connection (`Link`) and the
RPC responder (request/response with MQTT v5 response topic + correlation data).
docs/mqtt.md describes the whole scheme."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError

logger = log.get(__name__)

CONTENT_TYPES = {p.MSGPACK: "application/msgpack", p.JSON: "application/json"}
ENCODING_OF = {v: k for k, v in CONTENT_TYPES.items()}
SEQ_LEVEL = "$seq"
RPC_LEVEL = "$rpc"
REPLY_LEVEL = "$reply"
HISTORY_CHUNK_RECORDS = 256
HISTORY_CHUNK_BYTES = 1024 * 1024


class MqttBusError(ConnectionError):
    """The MQTT broker refused or lost the connection; the message says what to check."""


# --------------------------------------------------------------------------- settings


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


PASSWORD_ENV = "MLGYM_MQTT_PASSWORD"
PASSWORD_FILE_ENV = "MLGYM_MQTT_PASSWORD_FILE"
DEFAULT_PREFIX = "mlgym"


def read_password_file(path: str) -> str:
    """The MQTT password from a file only its owner can read (its first line)."""
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise ValueError(f"MQTT password file {path} is readable by others (chmod 600 it)")
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read the MQTT password file {path}: {exc.strerror}") from None
    if not password:
        raise ValueError(f"MQTT password file {path} is empty")
    return password


def _password(url_password: str | None, password_file: str | None) -> str | None:
    """The first of: the URL's password, its `password_file=`, $MLGYM_MQTT_PASSWORD,
    $MLGYM_MQTT_PASSWORD_FILE."""
    if url_password is not None:
        return url_password
    if password_file:
        return read_password_file(password_file)
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if os.environ.get(PASSWORD_FILE_ENV):
        return read_password_file(os.environ[PASSWORD_FILE_ENV])
    return None


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker. Built from a URL
    `mqtt[s]://[user[:password]@]host[:port][?prefix=mlgym&tls=1&ca=F&cert=F&key=F&insecure=1
    &password_file=F]`; keyword arguments override the URL. So that a password never shows on
    a command line it may come from a file (`password_file=`, or $MLGYM_MQTT_PASSWORD_FILE)
    or from $MLGYM_MQTT_PASSWORD instead of the URL."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    client_id: str = ""
    keepalive: int = 30
    password_file: str | None = None  # where the password came from (a path, not a secret)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttSettings:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"not an MQTT URL (mqtt:// or mqtts://): {url!r}")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        tls = parts.scheme == "mqtts" or _flag(query.get("tls"))
        username = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        password_file = query.get("password_file")
        if username and overrides.get("password") is None:
            password = _password(password, password_file)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"bad port in MQTT URL {_without_password(url)!r}") from None
        settings = cls(
            host=parts.hostname or "127.0.0.1",
            port=port or (8883 if tls else 1883),
            username=username,
            password=password,
            prefix=query.get("prefix", DEFAULT_PREFIX),
            tls=tls,
            ca_file=query.get("ca"),
            cert_file=query.get("cert"),
            key_file=query.get("key"),
            tls_insecure=_flag(query.get("insecure")),
            client_id=query.get("client_id", ""),
            keepalive=int(query.get("keepalive", 30)),
            password_file=password_file,
        )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides.get("ca_file") or overrides.get("cert_file"):
            overrides.setdefault("tls", True)
        settings = replace(settings, **overrides)
        check_name(settings.prefix, "prefix")
        if not settings.prefix or "" in settings.prefix.split("/"):
            raise ValueError(f"MQTT topic prefix {settings.prefix!r} must not be empty or have "
                             "empty levels")
        return settings

    def safe_url(self) -> str:
        """The URL without the password, for logs and error messages."""
        user = f"{self.username}@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{self.host}:{self.port}?prefix={self.prefix}"

    def public_url(self) -> str:
        """A URL with every setting but the password and the client id (each process needs
        its own): what a run hands its processes, keeps in run.json and prints."""
        query: dict[str, str] = {"prefix": self.prefix}
        for key, value in (("ca", self.ca_file), ("cert", self.cert_file), ("key", self.key_file),
                           ("password_file", self.password_file)):
            if value:
                query[key] = value
        if self.tls_insecure:
            query["insecure"] = "1"
        if self.keepalive != 30:
            query["keepalive"] = str(self.keepalive)
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "mqtts" if self.tls else "mqtt"
        return (f"{scheme}://{user}{host}:{self.port}?"
                + urllib.parse.urlencode(query, safe="/"))

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def run_prefix(run: str, root: str = DEFAULT_PREFIX) -> str:
    """The topic prefix of a run whose URL names none: `mlgym/<run id>`, so that runs sharing a
    broker (and `mlgym run --runs N`) never share topics, and an ACL can fence one run in."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in run)
    return f"{root}/{safe}"


def for_run(url: str, run: str, *, nested: bool = False) -> str:
    """`url` with the run's topic prefix (`run_prefix`) unless it names a prefix itself;
    `nested` (several runs on one URL): a named prefix P becomes `P/<run id>`."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    named = [v for k, v in query if k == "prefix"]
    if not run or (named and not nested):
        return url
    prefix = run_prefix(run, named[-1] if named else DEFAULT_PREFIX)
    query = [(k, v) for k, v in query if k != "prefix"] + [("prefix", prefix)]
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, safe="/")))


# --------------------------------------------------------------------------- topic mapping


def check_name(name: str, what: str = "topic") -> None:
    """Bus topics, prefixes and service names are MQTT topic names: no wildcards, no NUL, and
    not starting with "$" (our control levels live there)."""
    if not name and what == "topic":
        raise ValueError("bus topic must not be empty")
    if "+" in name or "#" in name or "\x00" in name:
        raise ValueError(f"bus {what} {name!r} must not contain '+', '#' or NUL (MQTT wildcards)")
    if name.startswith("$"):
        raise ValueError(f"bus {what} {name!r} must not start with '$' (reserved for control)")


def boundary_prefixes(topic: str) -> list[str]:
    """The level-boundary prefixes of a topic, shortest first: "a/b/c" -> ["", "a/", "a/b/"].
    The recorder keeps one `prev` chain per boundary prefix, so a subscriber whose MQTT filter is
    "<C>#" knows exactly whether it missed a message in its chain C."""
    out = [""]
    for i, ch in enumerate(topic):
        if ch == "/":
            out.append(topic[: i + 1])
    return out


def chain_of(prefix: str) -> str:
    """The widest-needed boundary prefix for a bus prefix ("env/s" -> "env/"): MQTT filters
    only end at level boundaries, so the rest is filtered on the client."""
    return prefix[: prefix.rfind("/") + 1]


def normalize_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Drop duplicates and prefixes covered by a shorter one, so each topic matches one."""
    uniq = sorted(set(prefixes or ("",)), key=len)
    kept: list[str] = []
    for pre in uniq:
        check_name(pre, "prefix")
        if not any(pre.startswith(k) for k in kept):
            kept.append(pre)
    return tuple(sorted(kept))


def encoding_of(props: Properties | None) -> bytes | None:
    """The envelope encoding from the MQTT v5 content type; msgpack when absent."""
    ctype = getattr(props, "ContentType", None) if props is not None else None
    if not ctype:
        return p.MSGPACK
    return ENCODING_OF.get(ctype)


def user_props(props: Properties | None) -> dict[str, str]:
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    return dict(pairs or [])


def publish_props(
    encoding: bytes = p.MSGPACK,
    user: Iterable[tuple[str, str]] = (),
    response_topic: str | None = None,
    correlation: bytes | None = None,
) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = CONTENT_TYPES[encoding]
    user = list(user)
    if user:
        props.UserProperty = user
    if response_topic:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


# --------------------------------------------------------------------------- connection


class Link:
    """One MQTT v5 connection that reconnects by itself (with back-off) and re-subscribes what
    was asked for, handing every incoming message to `on_message` (must not block).

    `session_expiry` > 0 keeps the broker-side session (subscriptions and queued QoS 1
    messages) across disconnects for that many seconds; `manual_ack` defers each PUBACK until
    `ack(msg)`, so the broker redelivers what was received but not yet safely handled."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        on_message: Callable[[aiomqtt.Message], None],
        *,
        session_expiry: int = 0,
        manual_ack: bool = False,
        receive_maximum: int = 0,
        on_reconnect: Callable[[bool], None] | None = None,
    ):
        self.settings = settings
        self.client_id = client_id
        self._on_message = on_message
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._receive_maximum = receive_maximum
        # called with `session_present` before the new connection's first message is handled
        self._on_reconnect = on_reconnect
        self.session_present = False  # the broker still had our session (CONNACK flag)
        self._client: aiomqtt.Client | None = None
        self._filters: dict[str, int] = {}  # filter -> reference count
        self._no_local: set[str] = set()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _new_client(self) -> aiomqtt.Client:
        s = self.settings
        connect_props = None
        if self._session_expiry or self._receive_maximum:
            connect_props = Properties(PacketTypes.CONNECT)
            if self._session_expiry:
                connect_props.SessionExpiryInterval = self._session_expiry
            if self._receive_maximum:  # QoS 1 messages the broker may send before our PUBACKs
                connect_props.ReceiveMaximum = self._receive_maximum
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=s.keepalive,
            tls_context=s.tls_context(),
            tls_insecure=s.tls_insecure if s.tls else None,
            max_inflight_messages=100,
            clean_start=not self._session_expiry,
            properties=connect_props,
            # small request/reply packets: without this, Nagle + delayed ACK add ~40 ms a hop
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        client.pending_calls_threshold = 10_000  # many concurrent publishes are normal here
        if self._manual_ack:
            # aiomqtt does not expose paho's manual acknowledgement; the paho client does
            client._client.manual_ack_set(True)  # noqa: SLF001
        paho_on_connect = client._client.on_connect  # aiomqtt drops the session-present flag

        def on_connect(paho: Any, userdata: Any, flags: Any, *args: Any) -> None:
            self.session_present = bool(getattr(flags, "session_present", False))
            paho_on_connect(paho, userdata, flags, *args)

        client._client.on_connect = on_connect  # noqa: SLF001
        return client

    def ack(self, msg: aiomqtt.Message, source: aiomqtt.Client | None) -> None:
        """PUBACK a message taken with manual_ack, if its connection is still the current one
        (after a reconnect the broker redelivers it instead)."""
        if source is not None and source is self._client and msg.qos > 0:
            source._client.ack(msg.mid, msg.qos)  # noqa: SLF001

    @property
    def client(self) -> aiomqtt.Client | None:
        return self._client

    async def _open(self) -> aiomqtt.Client:
        client = self._new_client()
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise MqttBusError(_explain(exc, self.settings)) from None
        except ssl.SSLError as exc:
            raise MqttBusError(f"TLS to {self.settings.safe_url()} failed: {exc}") from None
        try:
            for topic, _ in self._filters.items():
                await client.subscribe(topic, options=self._options(topic))
        except aiomqtt.MqttError as exc:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise MqttBusError(f"subscribing on {self.settings.safe_url()} failed: {exc}") from None
        return client

    def _options(self, topic: str) -> SubscribeOptions:
        return SubscribeOptions(qos=1, noLocal=topic in self._no_local)

    async def start(self) -> None:
        """Connect now (errors raise MqttBusError with a clear reason), then keep reading."""
        self._client = await self._open()
        self.connected.set()
        self._runner = asyncio.create_task(self._run(), name=f"mqtt-link-{self.client_id}")

    async def _run(self) -> None:
        delay = 0.2
        while not self._closed:
            client = self._client
            if client is None:
                await asyncio.sleep(delay)
                # back off while connections keep failing or dying young (a broker restarting,
                # or another client taking our client id over)
                delay = min(delay * 2, 5.0)
                try:
                    client = self._client = await self._open()
                except MqttBusError as exc:
                    logger.warning("mqtt reconnect failed", error=str(exc), retry_s=delay)
                    continue
                self.connected.set()
                self.reconnects += 1
                logger.info("mqtt reconnected", url=self.settings.safe_url())
                if self._on_reconnect is not None:
                    self._on_reconnect(self.session_present)
            connected_at = time.monotonic()
            try:
                async for msg in client.messages:
                    try:
                        self._on_message(msg)
                    except Exception:  # a bad message must never stop the link
                        logger.exception("mqtt message handler failed", topic=str(msg.topic))
            except aiomqtt.MqttError as exc:
                if self._closed:
                    break
                logger.warning("mqtt connection lost", url=self.settings.safe_url(), error=str(exc))
            if time.monotonic() - connected_at > 10:
                delay = 0.2
            self.connected.clear()
            self._client = None
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        self.connected.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    async def _ready(self, timeout: float) -> aiomqtt.Client:
        if self._closed:
            raise MqttBusError("MQTT link is closed")
        if not self.connected.is_set():
            try:
                await asyncio.wait_for(self.connected.wait(), timeout)
            except asyncio.TimeoutError:
                raise MqttBusError(f"not connected to {self.settings.safe_url()}") from None
        assert self._client is not None
        return self._client

    async def subscribe(self, topic: str, *, no_local: bool = False, timeout: float = 10.0) -> None:
        count = self._filters.get(topic, 0)
        self._filters[topic] = count + 1
        if no_local:
            self._no_local.add(topic)
        if count:
            return
        client = await self._ready(timeout)
        codes = await client.subscribe(topic, options=self._options(topic), timeout=timeout)
        bad = [c for c in codes if getattr(c, "value", c) >= 0x80]
        if bad:
            self._filters.pop(topic, None)
            raise MqttBusError(f"broker refused subscription to {topic!r}: {bad[0]}")

    async def unsubscribe(self, topic: str) -> None:
        count = self._filters.get(topic, 0) - 1
        if count > 0:
            self._filters[topic] = count
            return
        self._filters.pop(topic, None)
        self._no_local.discard(topic)
        if self._client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.unsubscribe(topic)

    async def publish(self, topic: str, payload: bytes, props: Properties, *, timeout: float = 10.0,
                      retain: bool = False) -> None:
        client = await self._ready(timeout)
        try:
            await client.publish(topic, payload, qos=1, retain=retain, properties=props,
                                 timeout=timeout)
        except aiomqtt.MqttError as exc:
            raise MqttBusError(f"publish to {self.settings.safe_url()} failed: {exc}") from None


def _explain(exc: aiomqtt.MqttError, s: MqttSettings) -> str:
    text = str(exc)
    low = text.lower()
    where = (f"the password file {s.password_file}" if s.password_file
             else f"the URL, ${PASSWORD_ENV} or ${PASSWORD_FILE_ENV}")
    if "user name or password" in low or "username or password" in low:
        return (f"MQTT broker {s.safe_url()} refused the login: bad username or password "
                f"(user {s.username!r}; the password comes from {where})")
    if "not authori" in low:  # what mosquitto answers MQTT v5 clients for a wrong password too
        who = f"user {s.username!r}" if s.username else "anonymous login: give user@ in the URL"
        return (f"MQTT broker {s.safe_url()} refused the login: not authorized ({who}; check the "
                f"username and password, from {where})")
    return f"cannot connect to MQTT broker {s.safe_url()}: {text}"


# --------------------------------------------------------------------------- RPC


Handler = Callable[[p.Envelope], Awaitable[p.Body | AsyncIterator[p.Body]] | AsyncIterator[p.Body]]


class Responder:
    """Answers RPC requests that arrive on "<prefix>/$rpc/<service>": each request runs in its
    own task; handler exceptions become typed `Error` replies, never crashes."""

    def __init__(self, link: Link, service: str, handler: Handler, *, sender: str = "",
                 epoch: int = 0):
        check_name(service, "service")
        self.link = link
        self.service = service
        self.handler = handler
        self.sender = sender
        self.epoch = epoch
        self.errors = 0  # requests answered with a protocol error
        self.topic = f"{link.settings.prefix}/{RPC_LEVEL}/{service}"
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, *, subscribe: bool = True) -> None:
        """`subscribe=False` when the owner's wider filter already brings the requests (a
        second, overlapping subscription would make the broker deliver each request twice)."""
        self._subscribed = subscribe
        if subscribe:
            await self.link.subscribe(self.topic)

    async def close(self) -> None:
        if getattr(self, "_subscribed", False):
            await self.link.unsubscribe(self.topic)
        for task in list(self._tasks):
            task.cancel()

    def feed(self, msg: aiomqtt.Message) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: aiomqtt.Message) -> None:
        reply_topic = getattr(msg.properties, "ResponseTopic", None)
        correlation = getattr(msg.properties, "CorrelationData", None)
        if not reply_topic:
            logger.warning("rpc request without response topic dropped", service=self.service)
            return
        encoding = encoding_of(msg.properties) or p.MSGPACK
        request_id = correlation.decode(errors="replace") if correlation else ""

        async def send(body: p.Body, more: bool) -> None:
            env = p.Envelope(body=body, id=p.new_id(), topic=self.service, sender=self.sender,
                             epoch=self.epoch, reply_to=request_id, more=more)
            props = publish_props(encoding, correlation=correlation)
            await self.link.publish(reply_topic, p.encode(env, encoding), props)

        held: p.Body | None = None
        try:
            if encoding_of(msg.properties) is None:
                raise p.ProtocolError("bad_encoding", f"unknown content type on {msg.topic}")
            try:
                env = p.decode(msg.payload, encoding)
                p.check_version(env)
            except p.ProtocolError:
                self.errors += 1
                raise
            if isinstance(env.body, p.Ping):
                result: Any = p.Pong(service=self.service, epoch=self.epoch,
                                     payload=env.body.payload)
            else:
                result = self.handler(env)
                if inspect.isawaitable(result):
                    result = await result
            if isinstance(result, p.Body):
                held = result
            elif hasattr(result, "__aiter__"):
                async for body in result:  # hold one back to mark the last with more=False
                    if held is not None:
                        await send(held, True)
                    held = body
                if held is None:
                    held = p.Error(code="internal", message=f"{self.service}: empty reply stream")
            else:
                raise TypeError(f"handler returned {type(result).__name__}, not a Body")
        except asyncio.CancelledError:
            raise
        except MqttBusError as exc:
            logger.warning("rpc reply not sent", service=self.service, error=str(exc))
            return
        except Exception as exc:
            if isinstance(exc, (RpcError, p.ProtocolError)):
                held = p.Error(code=exc.code, message=exc.message,
                               detail=getattr(exc, "detail", {}))
            else:
                logger.exception("rpc handler failed", service=self.service)
                held = p.Error(code="internal", message=f"{type(exc).__name__}: {exc}")
        try:
            await send(held, False)
        except MqttBusError as exc:
            logger.warning("rpc reply not sent", service=self.service, error=str(exc))
