"""The MQTT recorder: what the ZeroMQ broker does for sequence numbers, done beside an MQTT
broker that knows nothing about them.

It subscribes to every raw bus topic under "<prefix>/", gives each message the next seq (one
epoch per recorder start, as the broker does), commits it to the run's event log, then
republishes the same bytes on "<prefix>/$seq/<topic>" with user properties seq, epoch and prev
(the previous seq of each boundary-prefix chain, see mqtt.boundary_prefixes). It answers RPC
service "bus" over MQTT: history (chunked), acked publish, ping and status. Exactly one recorder
may run per prefix. `mlgym bus record --mqtt URL --run-dir DIR` runs it.

Nothing published while it is down or busy is lost: its MQTT session persists at the broker
(fixed client id, session expiry), so the broker queues raw messages for it, and each message is
acknowledged to the broker only after its batch is committed to the log (at-least-once); the
ids of recent messages are remembered (and re-read from the log on start) to drop redeliveries.

One recorder per prefix: each start publishes a retained "<prefix>/$recorder" marker naming
itself and its start time. A second recorder with the same client id takes the MQTT session
over (the broker closes the first one's connection); when the first reconnects it gets the newer
marker, sees it was superseded and stops with an error instead of fighting over the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import click
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mlgym import log
from mlgym.files import atomic_write_json
from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.broker import LOG_FILE
from mlgym.bus.eventlog import EventLog, LogReader
from mlgym.bus.mqtt_link import (
    HISTORY_CHUNK_BYTES,
    HISTORY_CHUNK_RECORDS,
    RPC_LEVEL,
    SEQ_LEVEL,
    Link,
    MqttBusError,
    MqttSettings,
    Responder,
    boundary_prefixes,
    check_name,
    encoding_of,
    publish_props,
)

logger = log.get(__name__)

LOG_NAME = LOG_FILE  # the ZeroMQ broker's file name: tools that read a run's log read either
INFO_NAME = "mqtt.json"
BATCH = 512
RECENT_IDS = 10_000
OWNER_LEVEL = "$recorder"
RECEIVE_MAXIMUM = 10_000  # unacknowledged messages in flight to us (acked per committed batch)
SESSION_EXPIRY_S = 24 * 3600  # how long the broker keeps queueing for a stopped recorder


@dataclass
class _Item:
    """One message to log: from a raw MQTT publish, or an acked `Publish` (with a future)."""

    topic: str
    encoding: bytes
    payload: bytes
    done: asyncio.Future[int] | None = None
    msg: aiomqtt.Message | None = None  # acknowledged to the broker once committed
    source: aiomqtt.Client | None = None


@dataclass
class Counters:
    published: int = 0
    dropped_malformed: int = 0
    dropped_oversized: int = 0
    dropped_version: int = 0
    dropped_duplicate: int = 0
    history_served: int = 0
    rpc_errors: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class Recorder:
    def __init__(self, url: str, run_dir: str | Path, *, log_path: str | Path | None = None,
                 **mqtt_kw: Any):
        self.settings = MqttSettings.from_url(url, **mqtt_kw)
        self.prefix = self.settings.prefix
        self.run_dir = Path(run_dir)
        self.log_path = Path(log_path) if log_path else self.run_dir / LOG_NAME
        self.counters = Counters()
        self.epoch = 0
        self.head = 0  # highest committed seq
        self._start_head = 0  # head when this epoch began: the conservative `prev` of new chains
        self._chains: dict[str, int] = {}
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._log: EventLog | None = None
        self._link: Link | None = None
        self._responder: Responder | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.instance = p.new_id()
        self.started = 0.0
        # set once this connection delivered the retained marker and it is ours (or older):
        # nothing is logged before, so a superseded recorder never numbers a message
        self._owner_ok = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.failure: MqttBusError | None = None  # set when superseded by another recorder

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = await asyncio.to_thread(EventLog, self.log_path)
        self.epoch, next_seq = await asyncio.to_thread(self._log.begin_epoch)
        self.head = self._start_head = next_seq - 1
        await asyncio.to_thread(self._remember_recent_ids)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in self.prefix)
        client_id = self.settings.client_id or f"mlgym-recorder-{safe}"
        self._link = Link(self.settings, client_id, self._dispatch,
                          session_expiry=SESSION_EXPIRY_S, manual_ack=True,
                          receive_maximum=RECEIVE_MAXIMUM, on_reconnect=self._reconnected)
        self.started = time.time()
        try:
            await self._link.start()
            await self._publish_marker()
            self._responder = Responder(self._link, "bus", self._handle, sender="recorder",
                                        epoch=self.epoch)
            # the "#" filter brings the RPC requests too; no_local: not our own stamped copies
            await self._responder.start(subscribe=False)
            await self._link.subscribe(f"{self.prefix}/#", no_local=True)
        except BaseException:
            await self._link.close()
            await asyncio.to_thread(self._log.close)
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="recorder-writer")
        self._writer.add_done_callback(self._writer_done)
        info = {"transport": "mqtt", "url": self.settings.safe_url(), "prefix": self.prefix,
                "epoch": self.epoch, "head_seq": self.head, "pid": os.getpid(),
                "log": str(self.log_path)}
        atomic_write_json(self.run_dir / INFO_NAME, info)
        logger.info("recorder started", url=self.settings.safe_url(), epoch=self.epoch,
                    head_seq=self.head, log=str(self.log_path))

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        logger.error("recorder writer failed; stopping", exc_info=task.exception())
        if self.failure is None:
            self.failure = MqttBusError(f"recorder writer failed: {task.exception()!r}")
        asyncio.ensure_future(self.close())

    async def close(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for task in list(self._tasks):
            task.cancel()
        if self._responder is not None:
            await self._responder.close()
        if self._link is not None:
            await self._link.close()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._log is not None:
            await asyncio.to_thread(self._log.close)
        logger.info("recorder stopped", epoch=self.epoch, head_seq=self.head,
                    published=self.counters.published)

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Until `close()`; raises MqttBusError if another recorder superseded this one."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure

    async def _publish_marker(self) -> None:
        marker = {"instance": self.instance, "epoch": self.epoch, "pid": os.getpid(),
                  "host": socket.gethostname(), "started": self.started}
        assert self._link is not None
        await self._link.publish(f"{self.prefix}/{OWNER_LEVEL}", json.dumps(marker).encode(),
                                 Properties(PacketTypes.PUBLISH), retain=True)

    def _reconnected(self, session_present: bool) -> None:
        """With our session still at the broker, another recorder may have used it: wait for
        the retained marker. Without it, the broker lost its state (restarted) and nobody took
        over (that would have made a session): put our marker back and go on."""
        self._owner_ok.clear()
        if not session_present:
            task = asyncio.ensure_future(self._reclaim())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reclaim(self) -> None:
        try:
            await self._publish_marker()
        except MqttBusError as exc:
            logger.warning("recorder marker not republished", error=str(exc))
            return
        self._owner_ok.set()

    def _check_owner(self, payload: bytes) -> None:
        """The newest recorder (by start time, then instance id) keeps the prefix: both sides
        of a takeover compare the same two markers, so exactly one of them stops."""
        try:
            owner = json.loads(payload)
            other = (float(owner["started"]), str(owner["instance"]))
        except (ValueError, TypeError, KeyError):
            return
        if other <= (self.started, self.instance):
            self._owner_ok.set()  # our own marker, or an older recorder's (delivered late)
            return
        if self.failure is None:
            self.failure = MqttBusError(
                f"another recorder (pid {owner.get('pid')} on {owner.get('host')}) took over "
                f"prefix {self.prefix!r} on {self.settings.safe_url()}; this one stops")
            logger.error("recorder superseded", other=owner)
            asyncio.ensure_future(self.close())

    def _remember_recent_ids(self) -> None:
        """Seed the redelivery filter with the ids of the log's last messages."""
        reader = LogReader(self.log_path)
        try:
            start = max(self.head - RECENT_IDS + 1, 1)
            for rows in reader.read(start, self.head):
                for _seq, _epoch, _ts, _topic, encoding, payload in rows:
                    with contextlib.suppress(p.ProtocolError):
                        env_id = p.check(payload, encoding.encode()).id
                        if env_id:
                            self._recent[env_id] = None
        finally:
            reader.close()

    # ----------------------------------------------------------------- intake

    def _dispatch(self, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        if not topic.startswith(self.prefix + "/"):
            return
        rest = topic[len(self.prefix) + 1:]
        assert self._link is not None
        source = self._link.client
        if rest == OWNER_LEVEL:
            self._link.ack(msg, source)
            self._check_owner(bytes(msg.payload))
            return
        if rest.startswith("$"):
            # control traffic is not logged: acknowledge at once (mosquitto matches PUBACKs by
            # packet id, so acknowledging out of receipt order is harmless)
            self._link.ack(msg, source)
            if rest == f"{RPC_LEVEL}/bus" and self._responder is not None:
                self._responder.feed(msg)
            return
        encoding = encoding_of(msg.properties)
        if encoding is None:
            self._link.ack(msg, source)
            self._drop("malformed", rest, f"unknown content type {msg.properties.ContentType!r}")
            return
        self._queue.put_nowait(_Item(rest, encoding, bytes(msg.payload), msg=msg, source=source))

    def _drop(self, code: str, topic: str, reason: str) -> None:
        attr = {"oversized": "dropped_oversized", "bad_version": "dropped_version"}.get(
            code, "dropped_malformed")
        setattr(self.counters, attr, getattr(self.counters, attr) + 1)
        logger.warning("bus message dropped", code=code, topic=topic, reason=reason)

    def _admit(self, item: _Item) -> bool:
        """Validate before logging: only decodable, current-version envelopes get a seq."""
        if item.done is not None:
            return True  # acked publishes were validated by the RPC decoder
        try:
            env = p.check(item.payload, item.encoding)  # the envelope; bodies are receivers'
        except p.ProtocolError as exc:
            self._drop(exc.code, item.topic, exc.message)
            return False
        if env.topic != item.topic or not item.topic:  # as the ZeroMQ broker: must agree
            self._drop("malformed", item.topic, f"envelope topic {env.topic!r} differs from the "
                       f"MQTT topic, or is empty")
            return False
        if env.id:
            if env.id in self._recent:  # a QoS 1 redelivery after a reconnect
                self.counters.dropped_duplicate += 1
                return False
            self._recent[env.id] = None
            if len(self._recent) > RECENT_IDS:
                self._recent.popitem(last=False)
        return True

    # ----------------------------------------------------------------- stamping

    async def _write_loop(self) -> None:
        assert self._log is not None and self._link is not None
        while True:
            taken = [await self._queue.get()]
            await self._owner_ok.wait()
            while len(taken) < BATCH and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            batch = [item for item in taken if self._admit(item)]
            if not batch:
                self._ack(taken)
                continue
            records = [(item.topic, item.encoding.decode(), item.payload) for item in batch]
            try:
                await asyncio.to_thread(self._log.append_batches, [(self.head + 1, self.epoch, time.time(), records)])
            except Exception as exc:  # the log is the source of truth: without it, no seq
                logger.exception("event log append failed; batch not published")
                for item in batch:
                    if item.done is not None and not item.done.done():
                        item.done.set_exception(RpcError("log_failed", str(exc)))
                # not acknowledged: the broker redelivers raw messages after a restart
                continue
            self._ack(taken)
            first = self.head + 1
            self.head += len(batch)
            self.counters.published += len(batch)
            sends = [self._send(seq, item) for seq, item in enumerate(batch, start=first)]
            results = await asyncio.gather(*sends, return_exceptions=True)
            for seq, item, result in zip(range(first, self.head + 1), batch, results):
                if isinstance(result, BaseException):
                    logger.warning("stamped copy not sent (subscribers refill from history)",
                                   seq=seq, error=str(result))
                if item.done is not None and not item.done.done():
                    item.done.set_result(seq)

    def _ack(self, items: list[_Item]) -> None:
        assert self._link is not None
        for item in items:
            if item.msg is not None:
                self._link.ack(item.msg, item.source)

    def _prev(self, topic: str, seq: int) -> str:
        """Previous seq of every boundary-prefix chain of `topic`, then advance the chains."""
        out = []
        for chain in boundary_prefixes(topic):
            out.append(str(self._chains.get(chain, self._start_head)))
            self._chains[chain] = seq
        return ",".join(out)

    def _send(self, seq: int, item: _Item):  # type: ignore[no-untyped-def]
        assert self._link is not None
        user = [("seq", str(seq)), ("epoch", str(self.epoch)), ("prev", self._prev(item.topic, seq))]
        props = publish_props(item.encoding, user)
        # created (hence handed to the MQTT client) in seq order by gather()
        return self._link.publish(f"{self.prefix}/{SEQ_LEVEL}/{item.topic}", item.payload, props)

    # ----------------------------------------------------------------- RPC "bus"

    async def _handle(self, env: p.Envelope) -> p.Body | AsyncIterator[p.Body]:
        body = env.body
        if isinstance(body, p.Ping):
            return p.Pong(service="bus", epoch=self.epoch, payload=body.payload)
        if isinstance(body, p.StatusRequest):
            return self.status()
        if isinstance(body, p.HistoryRequest):
            return self._history(body)
        if isinstance(body, p.Publish):
            return await self._publish_acked(body.message)
        self.counters.rpc_errors += 1
        raise RpcError("unsupported", f"service 'bus' does not handle {env.kind!r}")

    def status(self) -> p.BusStatus:
        c = self.counters
        return p.BusStatus(
            epoch=self.epoch, head_seq=self.head, published=c.published,
            dropped_malformed=c.dropped_malformed, dropped_oversized=c.dropped_oversized,
            dropped_version=c.dropped_version, history_served=c.history_served,
            endpoints={"mqtt": self.settings.safe_url(), "prefix": self.prefix},
            rpc_errors=c.rpc_errors + (self._responder.errors if self._responder else 0),
        )

    async def _publish_acked(self, message: Any) -> p.Published:
        try:
            message = p.publishable(message)  # any kind, as on the raw topics
            check_name(message.topic)
            p.check_version(message)
        except (ValueError, p.ProtocolError) as exc:
            self.counters.rpc_errors += 1
            raise RpcError(getattr(exc, "code", "bad_topic"), str(exc)) from None
        message.seq = message.epoch = 0
        payload = p.encode(message)
        if len(payload) > p.MAX_FRAME_BYTES:
            self.counters.dropped_oversized += 1
            raise RpcError("oversized", f"message of {len(payload)} bytes > {p.MAX_FRAME_BYTES}")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(message.topic, p.MSGPACK, payload, done))
        return p.Published(seq=await done, epoch=self.epoch)

    async def _history(self, req: p.HistoryRequest) -> AsyncIterator[p.Body]:
        prefixes = ([req.prefix] if req.prefix else []) + list(req.prefixes)
        # to_seq 0: a snapshot of what is committed now, reported as head_seq, so the reply is
        # complete through head_seq (subscribers rely on that to skip what they got live)
        to_seq = req.to_seq or self.head
        head = to_seq if not req.to_seq else self.head
        reader = await asyncio.to_thread(LogReader, self.log_path)
        try:
            rows_iter = reader.read(max(req.from_seq, 1), to_seq, prefixes or [""], req.limit,
                                    chunk=HISTORY_CHUNK_RECORDS)
            records: list[p.Record] = []
            size = 0
            while True:
                rows = await asyncio.to_thread(next, rows_iter, None)
                if rows is None:
                    break
                for seq, epoch, _ts, topic, encoding, payload in rows:
                    records.append(p.Record(seq, epoch, topic, encoding, payload))
                    size += len(payload) + len(topic) + 32
                    if len(records) >= HISTORY_CHUNK_RECORDS or size >= HISTORY_CHUNK_BYTES:
                        self.counters.history_served += len(records)
                        yield p.HistoryChunk(records=records, done=False, head_seq=head,
                                             epoch=self.epoch)
                        records, size = [], 0
            self.counters.history_served += len(records)
            yield p.HistoryChunk(records=records, done=True, head_seq=head, epoch=self.epoch)
        finally:
            await asyncio.to_thread(reader.close)


# --------------------------------------------------------------------------- CLI


async def _run_until_signalled(recorder: Recorder) -> None:
    loop = asyncio.get_running_loop()
    await recorder.start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(recorder.close()))
    await recorder.serve_forever()


@click.command("record")
@click.option("--mqtt", "url", required=True, envvar="MLGYM_MQTT_URL",
              help="mqtt[s]://[user@]host:port[?prefix=mlgym&tls=1&ca=F&cert=F&key=F]")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False),
              help="Directory of the run; the event log is RUN_DIR/events.sqlite.")
@click.option("--prefix", default=None, help="Topic prefix (default from the URL, else mlgym).")
@click.option("--username", default=None, help="MQTT user (overrides the URL).")
@click.option("--password-env", default="MLGYM_MQTT_PASSWORD", show_default=True,
              help="Environment variable holding the MQTT password.")
@click.option("--ca", "ca_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="CA certificate: enables TLS.")
@click.option("--cert", "cert_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Client certificate (TLS client authentication).")
@click.option("--key", "key_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Client private key.")
def record(url: str, run_dir: str, prefix: str | None, username: str | None, password_env: str,
           ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    """Record an MQTT bus: stamp seq+epoch, keep the event log, serve history (service "bus")."""
    password = os.environ.get(password_env) if password_env else None
    try:
        recorder = Recorder(url, run_dir, prefix=prefix, username=username, password=password,
                            ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        asyncio.run(_run_until_signalled(recorder))
    except (MqttBusError, ValueError, OSError) as exc:
        from mlgym.bus.cli import one_line

        raise click.ClickException(one_line(exc)) from None


__all__ = ["Recorder", "record"]
