"""Broker and ZeroMQ client over real sockets: ordering, late joiners, gap recovery, acked
publish, and bad input that must be counted and contained. Every test runs with both proxy
loops: the C one (bus/_hotpath.c) and the Python fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio

from mlgym.bus import connect
from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.bus.broker import Broker
from mlgym.bus.client import BusClient
from mlgym.bus.eventlog import LogReader
from conftest import require


@pytest.fixture(autouse=True, params=["c", "python"])
def bus_loop(request, monkeypatch) -> str:
    """MLGYM_BUS_LOOP for the brokers this test starts."""
    if request.param == "c":
        from mlgym.bus import hotpath

        monkeypatch.delenv(hotpath.ENV_VAR, raising=False)
        require(hotpath.load() is not None, "the broker's C loop is not built (needs a C compiler "
                "and Python headers at install time)")
    monkeypatch.setenv("MLGYM_BUS_LOOP", request.param)
    return request.param


@pytest.fixture
async def broker(tmp_path: Path):
    b = Broker(tmp_path / "run", heartbeat=0.1)
    await b.start()
    yield b
    await b.stop()


async def drain(sub, n: int, timeout: float = 10.0) -> list[P.Envelope]:
    return [await sub.get(timeout) for _ in range(n)]


async def test_publish_subscribe_in_order(broker: Broker) -> None:
    async with connect(broker.endpoints.url, sender="t", run="r1") as bus:
        sub = bus.subscribe("team/")
        await sub.ready()
        for i in range(50):
            await bus.publish("team/r1/notes", P.Note(text=str(i)))
        got = await drain(sub, 50)
        assert [e.body.text for e in got] == [str(i) for i in range(50)]
        assert [e.seq for e in got] == list(range(1, 51))
        assert {e.epoch for e in got} == {broker.epoch}
        assert all(e.sender == "t" and e.run == "r1" and e.topic == "team/r1/notes" for e in got)
        assert sub.duplicates == 0


async def test_late_joiner_gets_everything_then_live(broker: Broker) -> None:
    async with connect(broker.endpoints.url) as bus:
        first = await bus.publish("a/x", P.Note(text="0"), acked=True)  # waits for the broker
        for i in range(1, 300):
            await bus.publish("a/x", P.Note(text=str(i)))
        late = bus.subscribe("a/", from_seq=first)
        history = await drain(late, 300)
        await bus.publish("a/x", P.Note(text="live"))
        live = await late.get(10)
        assert [e.body.text for e in history] == [str(i) for i in range(300)]
        assert live.body.text == "live" and live.seq == history[-1].seq + 1
        assert late.delivered == 301


async def test_filtered_subscription_sees_only_its_prefixes(broker: Broker) -> None:
    async with connect(broker.endpoints.url) as bus:
        sub = bus.subscribe("env/s1/", "team/")
        await sub.ready()
        expected = []
        for i in range(60):
            topic = ["env/s1/obs", "env/s2/obs", "team/r/x", "other"][i % 4]
            await bus.publish(topic, P.Note(text=str(i)))
            if topic.startswith(("env/s1/", "team/")):
                expected.append(str(i))
        got = await drain(sub, len(expected))
        assert [e.body.text for e in got] == expected
        assert all(a.seq < b.seq for a, b in zip(got, got[1:]))
        # replay with the same filters from history
        replay = bus.subscribe("env/s1/", "team/", from_seq=1)
        assert [e.body.text for e in await drain(replay, len(expected))] == expected


async def test_slow_subscriber_loses_live_messages_and_refills_from_history(tmp_path: Path) -> None:
    n = 3000
    async with Broker(tmp_path / "run", heartbeat=0.1, hwm=50) as broker:
        async with connect(broker.endpoints.url, hwm=20, queue_size=10) as bus:
            sub = bus.subscribe("load/")
            await sub.ready()
            publisher = asyncio.create_task(_publish_many(broker.endpoints.url, n))
            got = []
            while len(got) < n:
                got.append(await sub.get(20))
                if len(got) % 100 == 0:
                    await asyncio.sleep(0.02)  # slow consumer: the queues fill and drop
            await publisher
            indices = [e.body.data["i"] for e in got]
            assert indices == list(range(n))  # nothing lost, nothing duplicated, in order
            assert sub.refills > 0  # live messages were dropped, history filled the gaps


async def _publish_many(url: str, n: int) -> None:
    async with connect(url, sender="pub") as pub:
        for i in range(n):
            await pub.publish("load/x", P.Note(text="", data={"i": i}))


async def test_acked_publish_is_logged_before_it_returns(broker: Broker) -> None:
    async with connect(broker.endpoints.url) as bus:
        seqs = [await bus.publish("t/acked", P.Note(text=str(i)), acked=True) for i in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        reader = LogReader(broker.log_path)
        rows = [r for chunk in reader.read(1) for r in chunk]
        reader.close()
        assert [r[0] for r in rows] == seqs
        assert all(P.decode(r[5]).body.text == str(i) for i, r in enumerate(rows))
        history = await bus.history(1, "t/")
        assert [e.seq for e in history] == seqs


async def test_large_messages_are_batched_by_size_and_all_logged(broker: Broker, monkeypatch) -> None:
    """A burst of multi-MB messages: batches stop growing at BATCH_BYTES (so a batch of 512
    such messages never reaches SQLite's 1 GB value limit), and every message arrives and is
    logged, in order."""
    from mlgym.bus import broker as broker_mod

    monkeypatch.setattr(broker_mod, "BATCH_BYTES", 4 * 1024 * 1024)
    ctx = zmq.asyncio.Context.instance()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.XPUB_NODROP, 1)
    raw.connect(broker.endpoints.pub)
    await raw.recv()
    n, size = 12, 3 * 1024 * 1024
    async with connect(broker.endpoints.url) as bus:
        sub = bus.subscribe("big/")
        await sub.ready()
        for i in range(n):
            env = P.make(P.Note(text=f"{i:02d}" * (size // 2)), topic="big/x")
            await raw.send_multipart([b"big/x", P.MSGPACK, P.encode(env)])
        got = await drain(sub, n, timeout=30)
        assert [e.body.text[:2] for e in got] == [f"{i:02d}" for i in range(n)]
    raw.close(0)
    rows = broker._log._conn.execute("SELECT first_seq, last_seq FROM batches ORDER BY first_seq").fetchall()
    assert len(rows) >= n // 2  # at most two 3 MB messages reach 4 MB
    assert all(last - first <= 1 for first, last in rows)
    reader = LogReader(broker.log_path)
    assert [len(r[5]) > size for c in reader.read(1, prefixes=["big/"]) for r in c] == [True] * n
    reader.close()


async def test_history_request_ranges_limits_and_chunks(tmp_path: Path) -> None:
    async with Broker(tmp_path / "run", history=100, chunk_records=70) as broker:
        async with connect(broker.endpoints.url) as bus:
            for i in range(250):
                await bus.publish(f"h/{i % 2}", P.Note(text=str(i)), acked=i == 249)
            # 250 > 100 in memory: the start comes from SQLite
            chunks = [c async for c in bus.rpc.stream("bus", P.HistoryRequest(from_seq=1))]
            assert [len(c.records) for c in chunks] == [70, 70, 70, 40]
            assert [c.done for c in chunks] == [False, False, False, True]
            assert all(c.head_seq == 250 and c.epoch == broker.epoch for c in chunks)
            part = await bus.history(200, "h/1", to_seq=220)
            assert [e.seq for e in part] == [s for s in range(200, 221) if (s - 1) % 2 == 1]
            limited = [c async for c in bus.rpc.stream("bus", P.HistoryRequest(from_seq=10, limit=5))]
            assert [r.seq for c in limited for r in c.records] == [10, 11, 12, 13, 14]
            beyond = await bus.history(1000)
            assert beyond == []


async def test_status_and_ping(broker: Broker) -> None:
    async with connect(broker.endpoints.url) as bus:
        await bus.publish("s/x", P.Note(text="x"), acked=True)
        status = await bus.status()
        assert status.epoch == broker.epoch and status.head_seq == 1 and status.published == 1
        assert status.endpoints["rpc"] == broker.endpoints.rpc
        pong = await bus.request("bus", P.Ping(payload=b"abc"))
        assert pong == P.Pong(service="bus", epoch=broker.epoch, payload=b"abc")


async def test_reserved_and_empty_topics_are_refused_by_the_client(broker: Broker) -> None:
    async with connect(broker.endpoints.url) as bus:
        with pytest.raises(ValueError):
            await bus.publish("$bus/heartbeat", P.Note(text="x"))
        with pytest.raises(ValueError):
            await bus.publish("", P.Note(text="x"))


async def test_bad_publications_are_counted_and_never_stop_other_clients(broker: Broker) -> None:
    """Raw sockets send every kind of bad frame; a well-behaved client publishing at the same
    time loses nothing, and good messages right after bad ones from the same socket survive."""
    ctx = zmq.asyncio.Context.instance()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.XPUB_NODROP, 1)
    raw.connect(broker.endpoints.pub)
    await raw.recv()  # the broker's subscription

    def good(i: int) -> list[bytes]:
        return [b"good/raw", P.MSGPACK, P.encode(P.make(P.Note(text=f"raw{i}"), topic="good/raw"))]

    note = P.encode(P.make(P.Note(text="x"), topic="bad/x"))
    v2 = P.encode(P.Envelope(body=P.Note(text="x"), topic="bad/x", v=2))
    bad = [
        [b"bad/x"],  # one frame
        [b"bad/x", P.MSGPACK],  # two frames
        [b"bad/x", P.MSGPACK, note, b"extra"],  # four frames
        [b"bad/x", P.MSGPACK, note, b"x", b"y", b"z"],  # six frames
        [b"bad/x", b"xml", note],  # unknown encoding
        [b"bad/x", P.MSGPACK, b"\xc1garbage"],  # undecodable
        [b"bad/x", P.MSGPACK, note[:-4]],  # truncated
        [b"bad/x", P.JSON, note],  # msgpack bytes labelled json
        [b"bad/other", P.MSGPACK, note],  # topic frame != envelope topic
        [b"$bus/heartbeat", P.MSGPACK, P.encode(P.make(P.Note(text="x"), topic="$bus/heartbeat"))],
        [b"bad/x", P.MSGPACK, v2],  # wrong version
        [b"bad/x", P.MSGPACK, b"\x00" * (P.MAX_FRAME_BYTES + 1)],  # oversized
    ]
    async with connect(broker.endpoints.url) as bus:
        sub = bus.subscribe("good/")
        await sub.ready()
        for i, frames in enumerate(bad):
            await raw.send_multipart(frames)
            await raw.send_multipart(good(i))
            await bus.publish("good/client", P.Note(text=f"client{i}"))
        got = await drain(sub, 2 * len(bad))
        texts = [e.body.text for e in got]
        assert sorted(texts) == sorted([f"raw{i}" for i in range(len(bad))] + [f"client{i}" for i in range(len(bad))])
        status = await bus.status()
        assert status.dropped_version == 1
        assert status.dropped_oversized == 1
        assert status.dropped_malformed >= len(bad) - 2
        assert status.published == 2 * len(bad)
        # still serving
        await bus.publish("good/after", P.Note(text="after"))
        assert (await sub.get(10)).body.text == "after"
    raw.close(0)


async def test_bodies_are_for_receivers_to_check(broker: Broker) -> None:
    """The broker checks envelopes, not bodies: a kind it has never heard of (a newer client's)
    and a known kind with a wrongly typed field are logged and delivered; a body that is not a
    map with a string `kind` is dropped. A Python subscriber skips what it cannot read (counted
    in `bad`), without taking the skipped seqs for gaps, and history skips them too."""
    ctx = zmq.asyncio.Context.instance()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.XPUB_NODROP, 1)
    raw.connect(broker.endpoints.pub)
    await raw.recv()  # the broker's subscription
    watcher = ctx.socket(zmq.SUB)  # sees the wire: what the broker forwarded
    watcher.subscribe(b"k/")
    watcher.connect(broker.endpoints.sub)

    def frames(body: object, topic: str = "k/x") -> list[bytes]:
        env = {"v": 1, "id": P.new_id(), "topic": topic, "sender": "js", "body": body}
        return [topic.encode(), P.MSGPACK, msgspec.msgpack.encode(env)]

    passed = [frames({"kind": "x_newer_kind", "plan": [1, 2]}), frames({"kind": "note", "text": 5})]
    dropped = [frames({"text": "no kind"}), frames({"kind": 5}), frames({"kind": ""}),
               frames(["note", "x"]), frames("note")]
    async with connect(broker.endpoints.url) as bus:
        sub = bus.subscribe("k/")
        await sub.ready()
        await asyncio.sleep(0.2)  # the watcher's subscription reaches the broker
        before = await bus.status()
        for f in [passed[0], *dropped, passed[1]]:
            await raw.send_multipart(f)
        last = await bus.publish("k/x", P.Note(text="after"), acked=True)
        wire = [await asyncio.wait_for(watcher.recv_multipart(), 10) for _ in range(3)]
        assert [w[3] for w in wire] == [passed[0][2], passed[1][2], wire[2][3]]
        seqs = [P.STAMP.unpack(w[1])[0] for w in wire]
        assert seqs == [last - 2, last - 1, last]
        got = await sub.get(10)
        assert got.body.text == "after" and got.seq == last
        assert sub.bad == 2 and sub.refills == 0
        status = await bus.status()
        assert status.dropped_malformed - before.dropped_malformed == len(dropped)
        assert [e.seq for e in await bus.history(last - 2, "k/")] == [last]
        replay = bus.subscribe("k/", from_seq=last - 2)
        assert (await replay.get(10)).seq == last and replay.bad == 2
    rows = [r for batch in LogReader(broker.log_path).read(last - 2, last) for r in batch]
    assert [r[0] for r in rows] == seqs
    raw.close(0)
    watcher.close(0)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"garbage"], "malformed"),
        ([P.MSGPACK, b"\xc1"], "malformed"),
        ([b"xml", b"<a/>"], "bad_encoding"),
        ([P.MSGPACK, P.encode(P.Envelope(body=P.Ping(), topic="bus", id="r1", v=7))], "bad_version"),
        ([P.MSGPACK, P.encode(P.Envelope(body=P.Ping(), topic="env", id="r1"))], "unknown_service"),
        ([P.MSGPACK, P.encode(P.Envelope(body=P.Note(text="?"), topic="bus", id="r1"))], "unsupported"),
        ([P.MSGPACK, b"\x00" * (P.MAX_FRAME_BYTES + 1)], "oversized"),
        ([P.JSON, msgspec.json.encode({"v": 1, "id": "r1", "topic": "bus", "body": {"kind": "nope"}})], "invalid"),
    ],
    ids=["one-frame", "garbage", "encoding", "version", "service", "unsupported", "oversized", "invalid"],
)
async def test_bad_rpc_requests_get_typed_errors(broker: Broker, frames: list[bytes], code: str) -> None:
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    dealer.connect(broker.endpoints.rpc)
    try:
        await dealer.send_multipart(frames)
        enc, payload = await asyncio.wait_for(dealer.recv_multipart(), 10)
        reply = P.decode(payload, enc)
        assert isinstance(reply.body, P.Error)
        assert reply.body.code == code
        if code in ("bad_version", "unknown_service", "unsupported", "invalid"):
            assert reply.reply_to == "r1"  # the id was readable, so the error is matched
        async with connect(broker.endpoints.url) as bus:  # the broker still serves others
            assert isinstance(await bus.request("bus", P.Ping()), P.Pong)
            assert (await bus.status()).rpc_errors >= (0 if code == "unsupported" else 1)
    finally:
        dealer.close(0)


async def test_acked_publish_on_reserved_topic_is_refused(broker: Broker) -> None:
    async with BusClient(broker.endpoints.url) as bus:
        with pytest.raises(RpcError) as err:
            await bus.request("bus", P.Publish(message=P.make(P.Note(text="x"), topic="$bus/x")))
        assert err.value.code == "invalid"


async def test_json_clients_interoperate(broker: Broker) -> None:
    async with connect(broker.endpoints.url, encoding=P.JSON) as js, connect(broker.endpoints.url) as mp:
        sub = mp.subscribe("mix/")
        await sub.ready()
        await js.publish("mix/a", P.Note(text="from json", data={"k": [1, 2]}))
        got = await sub.get(10)
        assert got.body == P.Note(text="from json", data={"k": [1, 2]})
        assert isinstance(await js.request("bus", P.Ping()), P.Pong)
        assert (await js.history(1, "mix/"))[0].body.text == "from json"


async def test_publish_without_broker_fails_with_unavailable(tmp_path: Path) -> None:
    async with connect(f"ipc://{tmp_path}/nobody", timeout=0.3) as bus:
        with pytest.raises(RpcError) as err:
            await bus.publish("x/y", P.Note(text="x"))
        assert err.value.code == "unavailable"
        with pytest.raises(TimeoutError):
            await bus.request("bus", P.Ping(), timeout=0.3)


async def _log_rows_for_chunks(run_dir: Path, linger: float, chunks: int, size: int) -> int:
    """Rows (batches) a broker logs for `chunks` bursts of `size` messages 5 ms apart."""
    async with Broker(run_dir, heartbeat=0.1, linger=linger) as broker:
        raw = zmq.asyncio.Context.instance().socket(zmq.XPUB)
        raw.setsockopt(zmq.XPUB_NODROP, 1)
        raw.connect(broker.endpoints.pub)
        await raw.recv()
        try:
            async with connect(broker.endpoints.url) as bus:
                sub = bus.subscribe("s/")
                await sub.ready()
                for c in range(chunks):
                    for i in range(size):
                        env = P.make(P.Note(text=f"{c}.{i}"), topic="s/x")
                        await raw.send_multipart([b"s/x", P.MSGPACK, P.encode(env)])
                    await asyncio.sleep(0.005)
                got = await drain(sub, chunks * size)
                assert [e.body.text for e in got] == [f"{c}.{i}" for c in range(chunks) for i in range(size)]
        finally:
            raw.close(0)
        return broker._log._conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]


async def test_linger_grows_batches_while_messages_stream_in(tmp_path: Path) -> None:
    off = await _log_rows_for_chunks(tmp_path / "off", 0.0, chunks=20, size=50)
    lingering = await _log_rows_for_chunks(tmp_path / "on", 0.05, chunks=20, size=50)
    assert off >= 10  # about a batch per burst or more (40-120 measured): 5 ms gaps are long
    assert lingering * 2 < off, (lingering, off)


async def test_a_lone_message_never_waits_for_the_linger(tmp_path: Path) -> None:
    async with Broker(tmp_path / "run", heartbeat=0.1, linger=1.0) as broker:
        async with connect(broker.endpoints.url) as bus:
            sub = bus.subscribe("q/")
            await sub.ready()
            for i in range(5):  # request-and-reply pace: each is read alone, none lingers 1 s
                await bus.publish("q/x", P.Note(text=str(i)))
                assert (await sub.get(0.5)).body.text == str(i)


def test_linger_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linger"):
        Broker(tmp_path / "run", linger=-1)
