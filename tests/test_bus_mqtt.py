"""The bus over MQTT: a real mosquitto on a free loopback port, the real recorder, real clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.mqtt import MqttBusClient, MqttBusError, MqttSubscription, boundary_prefixes, chain_of
from mlgym.bus.recorder import Recorder
from conftest import require

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- mosquitto


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mosquitto:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_mosquitto(workdir: Path, extra: list[str] | None = None, *,
                    anonymous: bool = True, port: int = 0) -> Mosquitto:
    """Start mosquitto with a generated config and wait until it accepts connections."""
    require(shutil.which("mosquitto") is not None, "mosquitto is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    lines = []
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to user mosquitto and cannot read tmp_path
    lines += [f"listener {port} 127.0.0.1", f"allow_anonymous {'true' if anonymous else 'false'}",
              "persistence false", "set_tcp_nodelay true", *(extra or [])]
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / "mosquitto.log"
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mosquitto did not listen on {port}: {log.read_text()}")
            time.sleep(0.05)
    return Mosquitto(port, proc, log)


@pytest.fixture
def broker(tmp_path):
    mq = start_mosquitto(tmp_path / "mosquitto")
    yield mq
    mq.stop()


@pytest.fixture
async def recorder(broker, tmp_path):
    async with Recorder(broker.url, tmp_path / "run") as rec:
        yield rec


async def drain(sub, n: int, timeout: float = 10.0) -> list[p.Envelope]:
    return [await sub.get(timeout) for _ in range(n)]


# --------------------------------------------------------------------------- pure mapping


def test_topic_mapping_helpers():
    assert boundary_prefixes("env/s1/obs") == ["", "env/", "env/s1/"]
    assert boundary_prefixes("a") == [""]
    assert chain_of("env/s") == "env/"
    assert chain_of("env/") == "env/"
    assert chain_of("env") == ""


def test_bad_names_refused():
    with pytest.raises(ValueError, match="wildcards"):
        MqttBusClient("mqtt://127.0.0.1:1", prefix="a/#")
    with pytest.raises(ValueError, match="not an MQTT URL"):
        MqttBusClient("tcp://127.0.0.1:1")


# --------------------------------------------------------------------------- publish / subscribe


async def test_publish_subscribe_through_mosquitto(broker, recorder):
    async with MqttBusClient(broker.url, sender="pub", run="r1") as pub, \
            MqttBusClient(broker.url, sender="sub") as sub_client:
        narrow = sub_client.subscribe("env/s")  # not at a level boundary: env/s1, env/s2, not env/x
        everything = sub_client.subscribe("")
        await narrow.ready(10)
        await everything.ready(10)
        topics = ["env/s1/obs", "env/x/obs", "env/s2/obs", "team/plan", "env/s1/obs"]
        for i, topic in enumerate(topics):
            await pub.publish(topic, p.Note(text=f"m{i}", data={"i": i}))
        got = await drain(narrow, 3)
        assert [(e.topic, e.body.text) for e in got] == [
            ("env/s1/obs", "m0"), ("env/s2/obs", "m2"), ("env/s1/obs", "m4")]
        assert all(isinstance(e.body, p.Note) and e.sender == "pub" and e.run == "r1" for e in got)
        assert [e.seq for e in got] == sorted(e.seq for e in got)
        assert {e.epoch for e in got} == {recorder.epoch}
        all_msgs = await drain(everything, 5)
        assert [e.seq for e in all_msgs] == list(range(all_msgs[0].seq, all_msgs[0].seq + 5))
        assert [e.body.data["i"] for e in all_msgs] == [0, 1, 2, 3, 4]
        await narrow.close()
        await everything.close()


async def test_json_publisher_interoperates(broker, recorder):
    async with MqttBusClient(broker.url, sender="j", encoding=p.JSON) as pub, \
            MqttBusClient(broker.url) as sub_client:
        sub = sub_client.subscribe("j/")
        await sub.ready(10)
        await pub.publish("j/1", p.Note(text="json", data={"x": [1, 2]}))
        env = await sub.get(10)
        assert env.body == p.Note(text="json", data={"x": [1, 2]}) and env.seq >= 1
        (logged,) = await sub_client.history(env.seq, "j/", env.seq)
        assert logged.body == env.body and logged.seq == env.seq


async def test_late_joiner_replays_then_goes_live_in_order(broker, recorder):
    async with MqttBusClient(broker.url, sender="pub") as pub, \
            MqttBusClient(broker.url, sender="late") as late_client:
        for i in range(50):
            await pub.publish(f"t/{i % 3}", p.Note(text=str(i)))

        async def keep_publishing():
            for i in range(50, 120):
                await pub.publish(f"t/{i % 3}", p.Note(text=str(i)))

        writer = asyncio.create_task(keep_publishing())
        sub = late_client.subscribe("t/", from_seq=1)  # joins while messages keep coming
        got = await drain(sub, 120)
        await writer
        assert [e.seq for e in got] == list(range(1, 121))  # in order, no gap, no duplicate
        assert [int(e.body.text) for e in got] == list(range(120))
        mid = late_client.subscribe("t/1", from_seq=60)
        got_mid = await drain(mid, len([i for i in range(59, 120) if i % 3 == 1]))
        assert all(e.topic == "t/1" and e.seq >= 60 for e in got_mid)
        await sub.close()
        await mid.close()


async def test_gap_is_refilled_from_history(broker, recorder, monkeypatch):
    """A subscriber that falls behind overflows its inbox: it knows it dropped something and
    catches up from history once drained, in order, without duplicates."""
    monkeypatch.setattr(MqttSubscription, "INBOX", 4)
    monkeypatch.setattr(MqttSubscription, "OUTBOX", 2)
    async with MqttBusClient(broker.url, sender="pub") as pub, \
            MqttBusClient(broker.url, sender="slow") as slow:
        sub = slow.subscribe("g/")
        await sub.ready(10)
        for i in range(60):
            await pub.publish(f"g/{i % 2}", p.Note(text=str(i)))
            await pub.publish("other/noise", p.Note(text="noise"))
        await pub.publish("g/end", p.Note(text="60"), acked=True)  # all stamped copies sent
        for _ in range(200):  # until the unread subscriber has overflowed
            if sub.dropped:
                break
            await asyncio.sleep(0.05)
        got = await drain(sub, 61)
        assert [int(e.body.text) for e in got] == list(range(61))
        assert [e.seq for e in got] == sorted({e.seq for e in got})
        assert sub.dropped > 0
        await sub.close()


async def test_lost_stamped_copy_is_seen_by_prev_chain(broker, recorder, monkeypatch):
    """The broker loses one stamped copy (here: the recorder never sends it): the next message
    of the chain carries `prev` pointing past what the subscriber has, so the missing one is
    fetched from history and delivered first."""
    send = recorder._send

    def lossy(seq, item):
        publish = send(seq, item)  # stamps seq 3 into the chains like any other
        if seq == 3:
            publish.close()  # ... but the copy never reaches the broker
            return asyncio.sleep(0)
        return publish

    monkeypatch.setattr(recorder, "_send", lossy)
    async with MqttBusClient(broker.url, sender="pub") as pub, \
            MqttBusClient(broker.url, sender="sub") as client:
        sub = client.subscribe("c/a", "c/b")  # one chain "c/", two members
        await sub.ready(10)
        for topic in ["c/a", "c/b", "c/a", "c/x", "c/b"]:
            await pub.publish(topic, p.Note(text=topic))
        got = await drain(sub, 4)
        assert [(e.seq, e.topic) for e in got] == [(1, "c/a"), (2, "c/b"), (3, "c/a"), (5, "c/b")]
        assert sub.refills == 1
        await sub.close()


async def test_recorder_restart_loses_nothing_and_changes_epoch(broker, tmp_path):
    run = tmp_path / "run"
    rec = Recorder(broker.url, run)
    await rec.start()
    first_epoch = rec.epoch
    async with MqttBusClient(broker.url, sender="pub") as pub, \
            MqttBusClient(broker.url, sender="sub") as sub_client:
        sub = sub_client.subscribe("r/")
        await sub.ready(10)
        for i in range(3):
            await pub.publish("r/x", p.Note(text=str(i)))
        before = await drain(sub, 3)
        await rec.close()
        for i in range(3, 6):  # the broker queues these for the recorder's persistent session
            await pub.publish("r/x", p.Note(text=str(i)))
        rec = Recorder(broker.url, run)
        await rec.start()
        try:
            await pub.publish("r/x", p.Note(text="6"))
            after = await drain(sub, 4)
        finally:
            await rec.close()
        got = before + after
        assert [e.body.text for e in got] == [str(i) for i in range(7)]
        assert [e.seq for e in got] == list(range(1, 8))
        assert [e.epoch for e in got] == [first_epoch] * 3 + [first_epoch + 1] * 4
        await sub.close()


async def test_malformed_raw_publish_is_counted_not_logged(broker, recorder):
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as raw, \
            MqttBusClient(broker.url, sender="ok") as client:
        sub = client.subscribe("m/")
        await sub.ready(10)
        await raw.publish("mlgym/m/bad", b"\xc1 not msgpack", qos=1)
        liar = p.encode(p.make(p.Note(text="topic mismatch"), topic="m/elsewhere"))
        await raw.publish("mlgym/m/liar", liar, qos=1)
        await client.publish("m/good", p.Note(text="good"))
        env = await sub.get(10)
        assert env.body.text == "good"
        status = await client.status()
        assert status.dropped_malformed == 2 and status.head_seq == env.seq == 1
        with pytest.raises(ValueError, match="empty"):
            await client.publish("", p.Note(text="x"))
        await sub.close()


async def test_unknown_body_kind_is_logged_and_skipped_by_python_subscribers(broker, recorder):
    """As with the ZeroMQ broker, the recorder checks envelopes, not bodies: a kind newer than
    this code is logged and gets a seq; the Python subscription counts it in `bad` and goes on
    without taking its seq for a gap (no refill), live and when replaying history."""
    newer = msgspec.msgpack.encode({"v": 1, "id": p.new_id(), "topic": "u/x", "sender": "js",
                                    "body": {"kind": "x_newer_kind", "plan": [1, 2]}})
    no_kind = msgspec.msgpack.encode({"v": 1, "topic": "u/x", "body": {"text": "no kind"}})
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as raw, \
            MqttBusClient(broker.url, sender="ok") as client:
        sub = client.subscribe("u/")
        await sub.ready(10)
        await raw.publish("mlgym/u/x", newer, qos=1)
        await raw.publish("mlgym/u/x", no_kind, qos=1)
        await client.publish("u/x", p.Note(text="after"))
        env = await sub.get(10)
        assert env.body.text == "after" and env.seq == 2
        assert sub.bad == 1 and sub.refills == 0
        status = await client.status()
        assert status.dropped_malformed == 1 and status.head_seq == 2
        assert [e.seq for e in await client.history(1, "u/")] == [2]
        assert [r.payload for r in await client.records(1, "u/")][0] == newer
        replay = client.subscribe("u/", from_seq=1)
        assert (await replay.get(10)).seq == 2 and replay.bad == 1
        await sub.close()
        await replay.close()


# --------------------------------------------------------------------------- RPC


async def test_request_reply_and_acked_publish(broker, recorder):
    async with MqttBusClient(broker.url, sender="a") as a, MqttBusClient(broker.url, sender="b") as b:
        pong = await a.request("bus", p.Ping(payload=b"hello"))
        assert pong == p.Pong(service="bus", epoch=recorder.epoch, payload=b"hello")
        seq = await a.publish("acked/1", p.Note(text="durable"), acked=True)
        assert seq == recorder.head
        (env,) = await a.history(seq, "acked/")
        assert env.body.text == "durable" and env.seq == seq
        with pytest.raises(RpcError) as err:
            await a.request("bus", p.Note(text="not a request"))
        assert err.value.code == "unsupported"
        # a team's own kind, acked (docs/protocol.md, Versioning); a body without a kind is not
        team = p.AnyEnvelope(body={"kind": "x_team_vote", "n": 2}, topic="acked/team", id="t1")
        seq = (await a.request("bus", p.Publish(message=team))).seq
        (rec,) = await a.records(seq, "acked/team")
        assert msgspec.msgpack.decode(rec.payload)["body"] == {"kind": "x_team_vote", "n": 2}
        with pytest.raises(RpcError, match="kind") as err:
            await a.request("bus", p.Publish(message=p.AnyEnvelope(body={}, topic="acked/team")))
        assert err.value.code == "invalid"

        async def double(env: p.Envelope) -> p.Body:
            if not isinstance(env.body, p.Note):
                raise RpcError("unsupported", "notes only")
            return p.Note(text=env.body.text * 2, data={"from": env.sender})

        await b.serve("echo", double)
        reply = await a.request("echo", p.Note(text="ab"))
        assert reply == p.Note(text="abab", data={"from": "a"})
        with pytest.raises(asyncio.TimeoutError, match="nobody"):
            await a.request("nobody", p.Ping(), timeout=0.5)


async def test_history_streams_in_chunks(broker, recorder):
    async with MqttBusClient(broker.url, sender="h") as client:
        payload = "x" * 300_000  # ~4 records per 1 MiB chunk
        for i in range(10):
            await client.publish("big/t", p.Note(text=payload, data={"i": i}), acked=True)
        chunks = [c async for c in client.stream("bus", p.HistoryRequest(prefix="big/"))]
        assert len(chunks) > 1 and chunks[-1].done and not any(c.done for c in chunks[:-1])
        records = [r for c in chunks for r in c.records]
        assert [r.seq for r in records] == list(range(1, 11))


# --------------------------------------------------------------------------- security


def test_wrong_password_is_refused_clearly(tmp_path):
    require(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd is not installed")
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), "alice", "s3cret"], check=True)
    mq = start_mosquitto(tmp_path / "mq", [f"password_file {pwfile}"], anonymous=False)
    url = f"mqtt://alice:s3cret@127.0.0.1:{mq.port}"
    bad = f"mqtt://alice:wrong@127.0.0.1:{mq.port}"
    env = {**os.environ, "MLGYM_MQTT_PASSWORD": "s3cret"}
    recorder_proc = subprocess.Popen(
        [sys.executable, "-m", "mlgym.cli", "bus", "record",
         "--mqtt", f"mqtt://alice@127.0.0.1:{mq.port}", "--run-dir", str(tmp_path / "run")],
        env=env, stderr=subprocess.PIPE, text=True)

    async def scenario():
        with pytest.raises(MqttBusError, match="refused the login.*check the username and password"):
            async with MqttBusClient(bad):
                pass
        with pytest.raises(MqttBusError, match="refused the login"):
            async with MqttBusClient(f"mqtt://127.0.0.1:{mq.port}"):  # anonymous
                pass
        async with MqttBusClient(url, sender="alice") as client:
            for _ in range(100):  # the recorder process may still be connecting
                try:
                    pong = await client.request("bus", p.Ping(), timeout=0.5)
                    break
                except asyncio.TimeoutError:
                    continue
            assert isinstance(pong, p.Pong)
            seq = await client.publish("auth/x", p.Note(text="in"), acked=True)
            assert seq == 1

    try:
        asyncio.run(scenario())
    finally:
        recorder_proc.send_signal(signal.SIGTERM)
        _, err = recorder_proc.communicate(timeout=20)
        mq.stop()
    assert recorder_proc.returncode == 0, err
    assert (tmp_path / "run" / "events.sqlite").exists()

    bad_proc = subprocess.run(
        [sys.executable, "-m", "mlgym.cli", "bus", "record",
         "--mqtt", bad, "--run-dir", str(tmp_path / "run2")],
        capture_output=True, text=True, timeout=60)
    # mosquitto is stopped now: the CLI must fail with a readable message, not a traceback
    assert bad_proc.returncode != 0 and "Traceback" not in bad_proc.stderr
    assert "cannot connect" in bad_proc.stderr or "refused" in bad_proc.stderr


def test_bus_commands_refuse_a_wrong_password_in_one_line(tmp_path):
    """`mlgym bus tail` and `mlgym bus record` against a password-protected mosquitto with a
    wrong password (in the URL, or from $MLGYM_MQTT_PASSWORD): exit 1 and one line saying the
    login was refused, no traceback; the same for a broker that is not there."""
    require(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd is not installed")
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), "alice", "s3cret"], check=True)
    mq = start_mosquitto(tmp_path / "mq", [f"password_file {pwfile}"], anonymous=False)
    cli = [sys.executable, "-m", "mlgym.cli", "bus"]
    in_url = f"mqtt://alice:wrong@127.0.0.1:{mq.port}"
    from_env = f"mqtt://alice@127.0.0.1:{mq.port}"
    env = {**os.environ, "MLGYM_MQTT_PASSWORD": "wrong"}
    runs = {
        "tail (password in the URL)": cli + ["tail", "--url", in_url, "--count", "1"],
        "tail (password from the env)": cli + ["tail", "--url", from_env, "--count", "1"],
        "record": cli + ["record", "--mqtt", in_url, "--run-dir", str(tmp_path / "run")],
    }
    try:
        for what, argv in runs.items():
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert proc.returncode == 1, (what, proc.stderr)
            assert len(lines) == 1 and "Traceback" not in proc.stderr, (what, proc.stderr)
            assert lines[0].startswith("Error: MQTT broker"), what
            assert "refused the login" in lines[0], what
            assert "wrong" not in lines[0]  # the password is never printed
    finally:
        mq.stop()
    gone = subprocess.run(cli + ["tail", "--url", in_url, "--count", "1"], capture_output=True,
                          text=True, timeout=60)
    lines = [ln for ln in gone.stderr.splitlines() if ln.strip()]
    assert gone.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), gone.stderr


def _make_certs(d: Path) -> dict[str, Path]:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=mlgym-test-ca")
    ssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return {name: d / f"{name}" for name in ("ca.crt", "server.crt", "server.key")}


async def test_tls_with_ca(tmp_path):
    certs = _make_certs(tmp_path / "certs")
    mq = start_mosquitto(tmp_path / "mq", [
        f"cafile {certs['ca.crt']}", f"certfile {certs['server.crt']}",
        f"keyfile {certs['server.key']}"])
    try:
        url = f"mqtts://127.0.0.1:{mq.port}?ca={certs['ca.crt']}"
        async with Recorder(url, tmp_path / "run"), MqttBusClient(url, sender="tls") as client:
            sub = client.subscribe("secure/")
            await sub.ready(10)
            await client.publish("secure/x", p.Note(text="over tls"))
            assert (await sub.get(10)).body.text == "over tls"
            await sub.close()
        with pytest.raises(MqttBusError, match="TLS|certificate"):
            async with MqttBusClient(f"mqtts://127.0.0.1:{mq.port}"):  # system CAs only
                pass
    finally:
        mq.stop()


async def test_second_recorder_takes_over_and_first_stops(broker, tmp_path):
    first = Recorder(broker.url, tmp_path / "run1")
    await first.start()
    serving = asyncio.create_task(first.serve_forever())
    second = Recorder(broker.url, tmp_path / "run2")
    await second.start()
    try:
        with pytest.raises(MqttBusError, match="took over prefix"):
            await asyncio.wait_for(serving, 30)
        async with MqttBusClient(broker.url, sender="c") as client:
            seq = await client.publish("after/takeover", p.Note(text="x"), acked=True)
            status = await client.request("bus", p.StatusRequest())
        assert seq == 1 and second.head == 1 and first.head == 0
        assert status.epoch == second.epoch
    finally:
        await second.close()


def test_connect_url_and_sync_client_over_mqtt(broker, tmp_path):
    from mlgym.bus import connect
    from mlgym.bus.sync import SyncBusClient

    url = broker.url + "?prefix=team7"
    assert isinstance(connect(url, sender="x"), MqttBusClient)
    recorder_proc = subprocess.Popen(
        [sys.executable, "-m", "mlgym.cli", "bus", "record", "--mqtt", url,
         "--run-dir", str(tmp_path / "run")], stderr=subprocess.PIPE, text=True)
    try:
        with SyncBusClient(url, sender="sync") as bus:
            for _ in range(100):  # the recorder process may still be connecting
                try:
                    bus.request("bus", p.Ping(), timeout=0.3)
                    break
                except TimeoutError:
                    continue
            sub = bus.subscribe("notes/")
            sub.ready(10)
            assert bus.publish("notes/a", p.Note(text="one"), acked=True) == 1
            env = sub.get(10)
            assert (env.seq, env.body.text, env.sender) == (1, "one", "sync")
            assert [e.body.text for e in bus.history(1, "notes/")] == ["one"]
    finally:
        recorder_proc.send_signal(signal.SIGTERM)
        _, err = recorder_proc.communicate(timeout=20)
    assert recorder_proc.returncode == 0, err


async def test_clients_reconnect_after_broker_restart(tmp_path):
    mq = start_mosquitto(tmp_path / "mq")
    try:
        async with Recorder(mq.url, tmp_path / "run") as rec, \
                MqttBusClient(mq.url, sender="pub") as pub, \
                MqttBusClient(mq.url, sender="sub") as client:
            sub = client.subscribe("k/")
            await sub.ready(10)
            await pub.publish("k/1", p.Note(text="before"))
            assert (await sub.get(10)).body.text == "before"
            mq.stop()
            mq = start_mosquitto(tmp_path / "mq", port=mq.port)  # same config and port
            for _ in range(200):  # until the recorder is back (it answers RPC again)
                try:
                    await pub.request("bus", p.Ping(), timeout=0.5)
                    break
                except (asyncio.TimeoutError, MqttBusError):
                    await asyncio.sleep(0.05)
            seq = await pub.publish("k/2", p.Note(text="after"), acked=True)
            env = await sub.get(20)  # live, or from history if it re-subscribed late
            assert (env.seq, env.body.text) == (seq, "after") and seq == 2
            assert rec._link.reconnects >= 1 and client._link.reconnects >= 1
    finally:
        mq.stop()
