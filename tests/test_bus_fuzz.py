"""Hostile input against a real broker process, on both of its loops (C and Python): nothing a
publisher or an RPC client sends stops the proxy loop, whatever the decoder raises (deep
nesting raised RecursionError, which killed the loop while the RPC side kept answering);
every message it cannot judge is a counted drop; and a loop that dies anyway makes the
process exit non-zero instead of staying half alive (issue #16, finding 7)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require
from mlgym.bus import endpoints as E
from mlgym.bus import hotpath
from mlgym.bus import protocol as P
from mlgym.bus.broker import BrokerProcess, spawn
from mlgym.bus.sync import SyncBusClient

NESTED_MSGPACK = b"\x91" * 100_000 + b"\xc0"  # the finding: a list in a list ... 100,000 deep
NESTED_JSON = b"[" * 100_000 + b"]" * 100_000


def _mp(*items: object) -> bytes:
    return b"".join(msgspec.msgpack.encode(i) for i in items)


def _envelope_with(field: bytes, value: bytes) -> bytes:
    """A msgpack envelope map whose field `field` holds raw msgpack `value`."""
    return b"\x83" + _mp("topic", "f/x", "v", 1) + msgspec.msgpack.encode(field.decode()) + value


HOSTILE_PAYLOADS = [
    (b"msgpack", NESTED_MSGPACK),
    (b"msgpack", _envelope_with(b"body", b"\x82" + _mp("kind", "note", "text") + NESTED_MSGPACK)),
    (b"msgpack", _envelope_with(b"body", NESTED_MSGPACK)),
    (b"msgpack", _envelope_with(b"extra", NESTED_MSGPACK)),
    (b"json", NESTED_JSON),
    (b"json", b'{"v": 1, "topic": "f/x", "body": {"kind": "note", "x": ' + NESTED_JSON + b"}}"),
]


@pytest.fixture(params=["c", "python"])
def loop(request, monkeypatch) -> str:
    if request.param == "c":
        require(hotpath._load(False) is not None, "the broker's C loop is not built (needs a C "
                "compiler and Python headers at install time)")
    monkeypatch.setenv(hotpath.ENV_VAR, request.param)
    return request.param


@pytest.fixture
def broker(loop, tmp_path):
    b = spawn(tmp_path / "run", heartbeat=0.1)
    assert b.info["loop"] == loop
    yield b
    rc = b.stop(10)
    assert rc == 0, f"the broker did not stop cleanly on SIGTERM ({rc}):\n{_log(b)}"


def _log(b: BrokerProcess) -> str:
    return (b.run_dir / "broker.log").read_text(errors="replace")[-3000:]


class Raw:
    """Raw sockets on the broker: an XPUB to publish any frames at all, and a SUB that sees
    what the broker delivers on `ok/`."""

    def __init__(self, b: BrokerProcess):
        self.ctx = zmq.Context()
        eps = E.from_url(b.url)
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.connect(eps.pub)
        self.pub.rcvtimeo = 10_000
        assert self.pub.recv() == b"\x01"  # the broker's XSUB subscribed: nothing sent is lost
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.rcvtimeo = 200  # routes() resends after this: the SUB may not be joined yet
        self.sub.subscribe(b"ok/")
        self.sub.connect(eps.sub)
        self.n = 0

    def send(self, frames: list[bytes]) -> None:
        self.pub.send_multipart(frames)

    def routes(self) -> None:
        """A valid message sent after everything else comes back out: the loop is alive."""
        deadline = time.monotonic() + 20
        self.n += 1
        text = f"alive {self.n}"
        payload = P.encode(P.make(P.Note(text=text), topic="ok/x"))
        while True:  # the SUB may join late (slow joiner): resend until one arrives
            self.send([b"ok/x", P.MSGPACK, payload])
            try:
                frames = self.sub.recv_multipart()
            except zmq.Again:
                assert time.monotonic() < deadline, "the broker stopped routing"
                continue
            if P.decode(frames[3]).body == P.Note(text=text):
                return

    def close(self) -> None:
        self.pub.close(0)
        self.sub.close(0)
        self.ctx.term()


def _status(b: BrokerProcess) -> P.BusStatus:
    with SyncBusClient(b.url, sender="t") as bus:
        st_ = bus.request("bus", P.StatusRequest(), timeout=10)
    assert isinstance(st_, P.BusStatus)
    return st_


def test_deeply_nested_bodies_are_counted_drops(broker):
    raw = Raw(broker)
    try:
        raw.routes()
        before = _status(broker).dropped_malformed
        for enc, payload in HOSTILE_PAYLOADS:
            raw.send([b"f/x", enc, payload])
            raw.routes()  # after each one, on both loops, the proxy still routes
        assert _status(broker).dropped_malformed - before == len(HOSTILE_PAYLOADS)
        # and through the acknowledged path, which decodes the whole envelope in the RPC side
        with SyncBusClient(broker.url, sender="t") as bus:
            seq = bus.publish("ok/acked", P.Note(text="still here"), acked=True)
            assert seq and seq > 0
    finally:
        raw.close()


def test_rpc_answers_nested_requests_with_typed_errors(broker):
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.rcvtimeo = 10_000
    dealer.connect(E.from_url(broker.url).rpc)
    try:
        inner = _envelope_with(b"body", NESTED_MSGPACK)
        publish = (b"\x83" + _mp("topic", "bus", "id", "r1", "body") + b"\x82"
                   + _mp("kind", "publish", "message") + inner)
        for payload in (NESTED_MSGPACK, publish):
            dealer.send_multipart([P.MSGPACK, payload])
            reply = P.decode(dealer.recv_multipart()[-1])
            assert isinstance(reply.body, P.Error), reply.body
            assert reply.body.code in ("malformed", "invalid"), reply.body
    finally:
        dealer.close(0)
        ctx.term()
    raw = Raw(broker)
    try:
        raw.routes()
    finally:
        raw.close()


def test_huge_frame_counts_are_dropped(broker):
    raw = Raw(broker)
    try:
        before = _status(broker).dropped_malformed
        raw.send([b"x"] * 100_000)  # one message of 100,000 frames
        raw.send([b"f/x"])
        raw.send([b"f/x", P.MSGPACK])
        raw.send([b"f/x", P.MSGPACK, b"\x80", b"extra"])
        raw.routes()
        assert _status(broker).dropped_malformed > before
        assert broker.proc.poll() is None
    finally:
        raw.close()


VALID = P.encode(P.make(P.Note(text="n"), topic="f/x"))


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def _payloads(draw) -> tuple[bytes, bytes]:
    kind = draw(st.integers(0, 4))
    if kind == 0:  # random bytes
        return draw(st.sampled_from([P.MSGPACK, P.JSON])), draw(st.binary(max_size=300))
    if kind == 1:  # a valid envelope with bytes flipped or cut
        data = bytearray(VALID)
        for i in draw(st.lists(st.integers(0, len(data) - 1), max_size=4)):
            data[i] = draw(st.integers(0, 255))
        return P.MSGPACK, bytes(data[: draw(st.integers(0, len(data)))])
    if kind == 2:  # an envelope map with arbitrary values in its fields
        env = {"v": draw(st.sampled_from([1, 2, "1"])),
               "topic": draw(st.sampled_from(["f/x", "", "$x"])), "body": draw(_values)}
        fields = st.sampled_from(["id", "seq", "epoch", "ts", "run", "more"])
        env.update(draw(st.dictionaries(fields, _values, max_size=3)))
        return P.MSGPACK, msgspec.msgpack.encode(env)
    if kind == 3:  # nesting of random depth, in the body or bare
        depth = draw(st.integers(1, 200_000))
        nested = b"\x91" * depth + b"\xc0"
        return P.MSGPACK, draw(st.sampled_from([nested, _envelope_with(b"body", nested)]))
    return draw(st.binary(min_size=1, max_size=10)), VALID  # an unknown encoding


_messages = st.one_of(
    _payloads().flatmap(lambda ep: st.tuples(st.sampled_from([b"f/x", b"", b"$bus/x", b"\xff\xfe"]),
                                              st.just(ep[0]), st.just(ep[1])).map(list)),
    st.lists(st.binary(max_size=30), min_size=1, max_size=8),
)


def test_random_frames_never_stop_the_loop(broker):
    raw = Raw(broker)
    sent = [0]

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.lists(_messages, min_size=1, max_size=6))
    def fuzz(batch: list[list[bytes]]) -> None:
        for frames in batch:
            raw.send(frames)
            sent[0] += 1
        raw.routes()

    try:
        fuzz()
        s = _status(broker)
        assert s.dropped_malformed + s.dropped_version + s.dropped_oversized > 0
        assert broker.proc.poll() is None
    finally:
        raw.close()


_DIE = """
import sys
from mlgym.bus import broker
def boom(self, *a, **k):
    raise RuntimeError("injected fault in the proxy loop")
broker.Broker._stamp = boom
from mlgym.cli import main
sys.argv = ["mlgym", "bus", "serve", "--run-dir", sys.argv[1]]
main()
"""


def test_a_dead_proxy_loop_ends_the_process_non_zero(loop, tmp_path: Path):
    """If the loop dies all the same (a fault injected here), the broker does not stay half
    alive: the process exits non-zero, so a supervisor sees it and restarts it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "broker.log", "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-c", _DIE, str(run_dir)], stdout=logf,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                info = E.read_descriptor(run_dir)
            except (FileNotFoundError, ValueError):
                info = {}
            if info.get("pid") == proc.pid:
                break
            log = (run_dir / "broker.log").read_text()
            assert proc.poll() is None and time.monotonic() < deadline, log
            time.sleep(0.02)
        b = BrokerProcess(proc, run_dir, info)
        raw = Raw(b)
        try:
            raw.send([b"ok/x", P.MSGPACK, P.encode(P.make(P.Note(text="n"), topic="ok/x"))])
            rc = proc.wait(20)
        finally:
            raw.close()
        log = (run_dir / "broker.log").read_text(errors="replace")
        assert rc != 0, log[-2000:]
        assert "proxy loop crashed" in log and "injected fault" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
