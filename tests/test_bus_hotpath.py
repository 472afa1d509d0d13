"""The broker's C loop (bus/_hotpath.c) against its Python loop and its reference validator:
any mix of good and bad multipart messages gives the same records, in the same order, and
each bad message is dropped and counted once, under the same reason `Broker._validate` gives."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require
from mlgym.bus import hotpath
from mlgym.bus import protocol as P
from mlgym.bus.broker import Broker


@pytest.fixture(scope="module")
def hp():
    require(hotpath._load(False) is not None, "the broker's C loop is not built (needs a C compiler "
            "and Python headers at install time)")
    return hotpath._load(False)


@pytest.fixture(scope="module")
def pair():
    """A connected PAIR of sockets: what one end sends, the other reads as the broker's XSUB
    would (the loops only receive and send)."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://hotpath-test")
    b.connect("inproc://hotpath-test")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


def envelope(topic: str, text: str = "x", v: int = P.PROTOCOL_VERSION) -> P.Envelope:
    return P.Envelope(body=P.Note(text=text, data={"n": len(text)}), topic=topic, v=v, id=P.new_id())


def message(kind: str, topic: str, text: str) -> list[bytes]:
    env = envelope(topic, text)
    mp, js = P.encode(env), P.encode(env, P.JSON)
    t = topic.encode()
    return {
        "good": [t, P.MSGPACK, mp],
        "good-json": [t, P.JSON, js],
        "one-frame": [t],
        "two-frames": [t, P.MSGPACK],
        "four-frames": [t, P.MSGPACK, mp, b"extra"],
        "unknown-encoding": [t, b"xml", mp],
        "truncated": [t, P.MSGPACK, mp[:-3]],
        "trailing": [t, P.MSGPACK, mp + b"\xc0"],
        "garbage": [t, P.MSGPACK, b"\xc1" + mp],
        "mislabelled": [t, P.JSON, mp],
        "wrong-topic": [t + b"/other", P.MSGPACK, mp],
        "not-utf8-topic": [b"\xff" + t, P.MSGPACK, mp],
        "reserved": [b"$bus/x", P.MSGPACK, P.encode(envelope("$bus/x", text))],
        "empty-topic": [b"", P.MSGPACK, P.encode(envelope("", text))],
        "version": [t, P.MSGPACK, P.encode(envelope(topic, text, v=P.PROTOCOL_VERSION + 1))],
        "bad-body": [t, P.MSGPACK, msgspec.msgpack.encode({"topic": topic, "body": {"kind": "note", "text": 5}})],
        # a payload cut short, then one carrying the rest: together they decode as two values
        "split": [t, P.MSGPACK, mp[:-1]],
    }[kind]


KINDS = ["good", "good-json", "one-frame", "two-frames", "four-frames", "unknown-encoding", "truncated",
         "trailing", "garbage", "mislabelled", "wrong-topic", "not-utf8-topic", "reserved", "empty-topic",
         "version", "bad-body", "split"]
messages = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["a/b", "a/c", "éx/1"]),
                              st.text(max_size=40)), max_size=40)


def expected(batch: list[list[bytes]]) -> tuple[list[tuple], dict[str, int]]:
    """What any loop must give: records of the valid messages in order, and counts of the rest,
    judged one message at a time by the broker's reference validator."""
    judge = Broker(Path("/nonexistent"))
    records = []
    for frames in batch:
        if len(frames) != 3:
            judge.dropped_malformed += 1
            continue
        checked = judge._validate(frames)
        if checked is not None:
            records.append((checked[0], checked[1], frames[2]))
    return records, counters(judge)


def counters(b: Broker) -> dict[str, int]:
    return {"malformed": b.dropped_malformed, "oversized": b.dropped_oversized, "version": b.dropped_version}


END = message("good", "zz/end", "end")  # sent after every test batch: reading stops at it


def send_all(sock: zmq.Socket, batch: list[list[bytes]]) -> None:
    for frames in [*batch, END]:
        sock.send_multipart(frames)


def read_all(read, sock: zmq.Socket, limit: int = 7) -> list[tuple]:
    """Everything sent up to END, in batches of `limit` (batch edges fall anywhere; a batch of
    only bad messages reads as empty)."""
    out: list[tuple] = []
    deadline = time.monotonic() + 10
    while not out or out[-1][0] != "zz/end":
        assert time.monotonic() < deadline, f"END not read; got {out}"
        sock.poll(100)
        out += read(limit)
    return out[:-1]


def expand(msgs: list[tuple[str, str, str]]) -> list[list[bytes]]:
    batch = []
    for kind, topic, text in msgs:
        batch.append(message(kind, topic, text))
        if kind == "split":  # the stolen byte leads the next message's payload
            env = P.encode(envelope(topic, text))
            batch.append([topic.encode(), P.MSGPACK, env[-1:] + env])
    return batch


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages)
def test_c_and_python_loops_keep_and_drop_the_same_messages(hp, pair, msgs) -> None:
    a, b = pair
    batch = expand(msgs)
    want_records, want_counts = expected(batch)

    c_broker = Broker(Path("/nonexistent"))
    c_broker._hotpath = hp
    c_read, _ = c_broker._loop_functions(b, a)
    send_all(a, batch)
    assert read_all(c_read, b) == want_records
    assert counters(c_broker) == want_counts

    py_broker = Broker(Path("/nonexistent"))
    py_read, _ = py_broker._loop_functions(b, a)
    send_all(a, batch)
    assert read_all(py_read, b) == want_records
    # the Python loop reads three frames blind: messages of other lengths are dropped all the
    # same, but counted by the frames read (two short ones may count once, a long one twice)
    assert (sum(counters(py_broker).values()) > 0) == (sum(want_counts.values()) > 0)


def test_oversized_payload_is_counted_as_oversized(hp, pair) -> None:
    a, b = pair
    big = [b"a/b", P.MSGPACK, b"\x00" * (P.MAX_FRAME_BYTES + 1)]
    ok = message("good", "a/b", "after")
    broker = Broker(Path("/nonexistent"))
    broker._hotpath = hp
    read, _ = broker._loop_functions(b, a)
    send_all(a, [big, ok])
    assert read_all(read, b) == [("a/b", "msgpack", ok[2])]
    assert counters(broker) == {"malformed": 0, "oversized": 1, "version": 0}


def test_send_batch_stamps_consecutive_seqs(hp, pair) -> None:
    a, b = pair
    records = [("a/b", "msgpack", b"one"), ("é/c", "json", b"two"), ("a/b", "msgpack", b"")]
    assert hp.send_batch(a.underlying, records, 41, 7) == 3
    got = [b.recv_multipart() for _ in records]
    assert got == [[t.encode(), P.STAMP.pack(41 + i, 7), e.encode(), p] for i, (t, e, p) in enumerate(records)]
    with pytest.raises(TypeError):
        hp.send_batch(a.underlying, [("a/b", "msgpack", "not bytes")], 1, 1)
    assert not b.poll(50)  # a refused batch sends nothing


def test_budget_ends_a_batch_early(hp, pair) -> None:
    a, b = pair
    for _ in range(5):
        a.send_multipart(message("good", "a/b", "y" * 1000))
    assert b.poll(1000)
    records, odd, packed, malformed = hp.recv_batch(b.underlying, 100, 2500)
    assert len(records) == 3 and not odd and malformed == 0  # stops once 2500 bytes are in
    assert msgspec.msgpack.decode(packed, type=list[P.Envelope])[0].body.text == "y" * 1000
    rest = hp.recv_batch(b.underlying, 100, 1 << 30)[0]
    assert len(rest) == 2


def test_loop_choice_is_checked(monkeypatch) -> None:
    monkeypatch.setenv(hotpath.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="auto, c or python"):
        hotpath.load()
    monkeypatch.setenv(hotpath.ENV_VAR, "python")
    assert hotpath.load() is None


def test_a_missing_extension_falls_back_unless_c_is_asked_for(monkeypatch) -> None:
    import sys

    hotpath._load.cache_clear()
    import mlgym.bus

    monkeypatch.delattr(mlgym.bus, "_hotpath", raising=False)  # import fails as if never built
    monkeypatch.setitem(sys.modules, "mlgym.bus._hotpath", None)
    try:
        monkeypatch.setenv(hotpath.ENV_VAR, "auto")
        assert hotpath.load() is None and hotpath.name() == "python"
        monkeypatch.setenv(hotpath.ENV_VAR, "c")
        with pytest.raises(RuntimeError, match="C loop is unavailable"):
            hotpath.load()
    finally:
        hotpath._load.cache_clear()


def test_c_sources_and_loader_agree_on_the_abi() -> None:
    """bus/hotpath.py refuses an extension built from other sources; both must name the same
    ABI, or every build would be refused (the source is read, so this holds without a build)."""
    import re

    source = (Path(hotpath.__file__).with_name("_hotpath.c")).read_text()
    assert int(re.search(r"#define HOTPATH_ABI (\d+)", source).group(1)) == hotpath.ABI
