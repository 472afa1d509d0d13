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
from mlgym.bus import eventlog, hotpath
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
    a.sndhwm = b.rcvhwm = 0  # no limit: a test may queue a whole batch before reading
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
        # bodies are receivers' to check: any map with a string kind passes, nothing else does
        "new-kind": [t, P.MSGPACK, msgspec.msgpack.encode({"topic": topic, "body": {"kind": "x_new", "n": text}})],
        "bad-field": [t, P.MSGPACK, msgspec.msgpack.encode({"topic": topic, "body": {"kind": "note", "text": 5}})],
        "no-kind": [t, P.MSGPACK, msgspec.msgpack.encode({"topic": topic, "body": {"text": text}})],
        "body-not-a-map": [t, P.MSGPACK, msgspec.msgpack.encode({"topic": topic, "body": ["note", text]})],
        # a payload cut short, then one carrying the rest: together they decode as two values
        "split": [t, P.MSGPACK, mp[:-1]],
    }[kind]


KINDS = ["good", "good-json", "one-frame", "two-frames", "four-frames", "unknown-encoding", "truncated",
         "trailing", "garbage", "mislabelled", "wrong-topic", "not-utf8-topic", "reserved", "empty-topic",
         "version", "new-kind", "bad-field", "no-kind", "body-not-a-map", "split"]
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
    only bad messages reads as empty). A batch the C loop held whole must come with its log
    row, byte for byte what the log's own encoder writes."""
    out: list[tuple] = []
    deadline = time.monotonic() + 10
    while not out or out[-1][0] != "zz/end":
        assert time.monotonic() < deadline, f"END not read; got {out}"
        sock.poll(100)
        records, held, row = read(limit)
        if held is not None:
            assert records == []
            records = held.records()
            assert row == eventlog.encode_rows([(1, 1, 0.0, records)])[0][4]
        out += records
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
    held, topics, lens, packed, row, odd, malformed = hp.recv_batch(b.underlying, 100, 2500)
    assert len(held) == 3 and not odd and malformed == 0  # stops once 2500 bytes are in
    assert topics == ["a/b"] * 3 and lens == [len(r[2]) for r in held.records()]
    assert msgspec.msgpack.decode(packed, type=list[P.Envelope])[0].body.text == "y" * 1000
    assert eventlog.decode_records(row) == held.records()
    rest = hp.recv_batch(b.underlying, 100, 1 << 30)[0]
    assert len(rest) == 2


@pytest.mark.parametrize("count", [1, 15, 16, 70_000])
def test_log_row_matches_the_logs_encoder(hp, pair, count) -> None:
    """The row the C loop writes for the log is byte-identical to `eventlog.encode_rows`, for
    every msgpack header width: topics of 0..40 and 300 characters, payloads around the 8-
    and 16-bit size limits, and batches needing a fixarray, array16 or array32."""
    a, b = pair
    sizes = [0, 1, 31, 32, 255, 256, 65_535, 65_536]
    topics = ["", "a", "é" * 15, "t" * 31, "t" * 32, "x" * 300]
    sent = []
    for i in range(count):
        size = sizes[i % len(sizes)] if count < 100 else i % 40
        frames = [topics[i % len(topics)].encode(), P.MSGPACK, bytes([i % 251]) * size]
        a.send_multipart(frames)
        sent.append((topics[i % len(topics)], "msgpack", frames[2]))
    got, rows = [], []
    deadline = time.monotonic() + 30
    while len(got) < count:
        assert time.monotonic() < deadline
        b.poll(100)
        held, _, _, _, row, _, _ = hp.recv_batch(b.underlying, 100_000, 1 << 30)
        if len(held):
            got += held.records()
            rows.append(row)
    assert got == sent
    assert len(rows) == 1  # inproc: everything was queued before the first read
    assert rows[0] == eventlog.encode_rows([(1, 1, 0.0, sent)])[0][4]


def test_json_batch_has_no_row_or_packed_payloads(hp, pair) -> None:
    a, b = pair
    a.send_multipart(message("good", "a/b", "one"))
    a.send_multipart(message("good-json", "a/b", "two"))
    assert b.poll(1000)
    time.sleep(0.05)
    held, topics, lens, packed, row, odd, malformed = hp.recv_batch(b.underlying, 100, 1 << 30)
    assert len(held) == 2 and packed is None and row is None
    assert [r[1] for r in held.records()] == ["msgpack", "json"]


def test_send_held_forwards_the_frames_once(hp, pair) -> None:
    a, b = pair
    msgs = [message("good", t, "z") for t in ("a/b", "a/b", "é/c")]
    for frames in msgs:
        a.send_multipart(frames)
    assert b.poll(1000)
    time.sleep(0.05)
    held = hp.recv_batch(b.underlying, 100, 1 << 30)[0]
    assert len(held) == 3
    assert hp.send_held(b.underlying, held, 9, 2) == 3
    got = [a.recv_multipart() for _ in msgs]
    assert got == [[f[0], P.STAMP.pack(9 + i, 2), f[1], f[2]] for i, f in enumerate(msgs)]
    with pytest.raises(ValueError, match="already sent"):
        hp.send_held(b.underlying, held, 12, 2)
    with pytest.raises(ValueError, match="was sent"):
        held.records()
    assert not a.poll(50)
    with pytest.raises(TypeError):
        hp.send_held(b.underlying, [("a/b", "msgpack", b"x")], 1, 1)


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


@pytest.mark.parametrize("with_ack", [False, True])
def test_held_batch_is_stamped_logged_kept_and_forwarded(hp, pair, tmp_path, with_ack) -> None:
    """A valid batch from the C loop goes through stamp, commit and publish as it was
    received: logged as C's row, kept in the history window, forwarded with consecutive seqs.
    An acked publish in the same turn joins it after the batch, and the batch then goes the
    per-message way (records), with the same result."""
    a, b = pair
    msgs = [message("good", t, f"m{i}") for i, t in enumerate(["a/b", "a/b", "a/c"])]
    for frames in msgs:
        a.send_multipart(frames)
    assert b.poll(1000)
    time.sleep(0.05)
    broker = Broker(tmp_path)
    broker._hotpath = hp
    broker._log = eventlog.EventLog(tmp_path / "events.sqlite")
    broker._next_seq, broker.epoch = 10, 3
    try:
        read, publish = broker._loop_functions(b, b)
        records, held, row = read(100)
        assert records == [] and len(held) == 3 and row is not None
        ack = [b"token", b"a/d", P.MSGPACK, P.encode(envelope("a/d", "ack"))] if with_ack else None
        work = broker._stamp(records, held, row, [ack] if ack else [])
        assert (work.first_seq, work.count, work.last_seq) == (10, 3 + bool(ack), 12 + bool(ack))
        assert (work.held is None) == with_ack
        broker._commit(work)
        publish(work)
        want = [(f[0].decode(), "msgpack", f[2]) for f in msgs]
        want += [("a/d", "msgpack", ack[3])] if ack else []
        got = [a.recv_multipart() for _ in want]
        assert [(g[0].decode(), P.STAMP.unpack(g[1]), g[3]) for g in got] == \
            [(t, (10 + i, 3), p) for i, (t, _, p) in enumerate(want)]
        assert work.acks == ([(b"token", 13)] if ack else [])
        rows = broker._memory_rows(10, 20, ("",), 0)
        assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == \
            [(10 + i, 3, *w) for i, w in enumerate(want)]
        assert broker._memory_rows(11, 11, ("a/",), 0)[0][5] == want[1][2]
        assert broker.head_seq == work.last_seq
    finally:
        broker._log.close()
    reader = eventlog.LogReader(tmp_path / "events.sqlite")
    try:
        logged = [r for chunk in reader.read(1, 100, [""]) for r in chunk]
    finally:
        reader.close()
    assert [(r[0], r[3], r[5]) for r in logged] == \
        [(10 + i, t, p) for i, (t, _, p) in enumerate(want)]
