"""The blocking client (scripts, notebooks) against a broker in its own process, and the
`mlgym bus` / `mlgym demo` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.bus.broker import BrokerProcess, spawn
from mlgym.bus.sync import SyncBusClient


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> BrokerProcess:
    b = spawn(tmp_path_factory.mktemp("sync") / "run", heartbeat=0.1)
    yield b
    b.stop()


def test_sync_publish_subscribe_request_history(broker: BrokerProcess) -> None:
    with SyncBusClient(broker.url, sender="notebook") as bus:
        sub = bus.subscribe("nb/")
        sub.ready(10)
        seqs = [bus.publish("nb/x", P.Note(text=str(i)), acked=True) for i in range(3)]
        bus.publish("nb/y", P.Note(text="plain"))
        got = [sub.get(10) for _ in range(4)]
        assert [e.body.text for e in got] == ["0", "1", "2", "plain"]
        assert [e.seq for e in got[:3]] == seqs
        with pytest.raises(TimeoutError):
            sub.get(0.2)
        assert isinstance(bus.request("bus", P.Ping()), P.Pong)
        with pytest.raises(RpcError) as err:
            bus.request("bus", P.Note(text="?"))
        assert err.value.code == "unsupported"
        assert [e.body.text for e in bus.history(seqs[0], "nb/")] == ["0", "1", "2", "plain"]
        replay = list(bus.subscribe("nb/", from_seq=seqs[0]).iter(timeout=0.5))
        assert [e.body.text for e in replay] == ["0", "1", "2", "plain"]
        sub.close()
        with pytest.raises(StopIteration):
            sub.get(1)


def test_sync_clients_in_threads(broker: BrokerProcess) -> None:
    with SyncBusClient(broker.url) as reader:
        sub = reader.subscribe("threads/")
        sub.ready(10)

        def work(k: int) -> None:
            with SyncBusClient(broker.url, sender=f"t{k}") as bus:
                for i in range(20):
                    bus.publish("threads/x", P.Note(text=f"{k}-{i}"))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = {sub.get(10).body.text for _ in range(60)}
        assert got == {f"{k}-{i}" for k in range(3) for i in range(20)}


def test_run_directory_works_as_url(broker: BrokerProcess) -> None:
    with SyncBusClient(broker.run_dir) as bus:
        assert isinstance(bus.request("bus", P.StatusRequest()), P.BusStatus)


def test_tail_prints_messages(broker: BrokerProcess) -> None:
    with SyncBusClient(broker.url) as bus:
        seq = bus.publish("tail/x", P.Note(text="for the tail"), acked=True)
    out = subprocess.run(
        [sys.executable, "-m", "mlgym.cli", "bus", "tail", "--run-dir", str(broker.run_dir),
         "--from-seq", str(seq), "--count", "1", "tail/"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "tail/x [note]" in out.stdout and "for the tail" in out.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "mlgym.cli", "bus", "tail", "--url", broker.url, "--json",
         "--from-seq", str(seq), "--count", "1", "tail/"],
        capture_output=True, text=True, timeout=60,
    )
    env = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert env["seq"] == seq and env["body"] == {"kind": "note", "text": "for the tail"}


def test_log_prints_the_event_log_without_a_broker(tmp_path: Path) -> None:
    run = tmp_path / "run"
    b = spawn(run)
    try:
        with SyncBusClient(b.url) as bus:
            seqs = [bus.publish(f"log/{t}", P.Note(text=f"n{i}"), acked=True) for i, t in enumerate("abab")]
    finally:
        b.stop()  # the log is read from the file alone
    cmd = [sys.executable, "-m", "mlgym.cli", "bus", "log", str(run)]
    out = subprocess.run([*cmd, "log/b", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    envs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["seq"], e["body"]["text"]) for e in envs] == [(seqs[1], "n1"), (seqs[3], "n3")]
    assert all(e["epoch"] == 1 and e["topic"] == "log/b" for e in envs)
    out = subprocess.run([*cmd, "--from-seq", str(seqs[1]), "--to-seq", str(seqs[2])],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == [str(seqs[1]), str(seqs[2])]
    missing = subprocess.run([*cmd[:-1], str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no event log" in missing.stderr
    (run / "events.sqlite.data").unlink()  # the index alone: a clear error, not a traceback
    no_data = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert no_data.returncode == 1 and "events.sqlite.data is missing" in no_data.stderr
    assert "Traceback" not in no_data.stderr


def test_demo_runs_and_ends_with_json(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mlgym.cli", "bus", "demo", "--messages", "50"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["ok"] and summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["messages"] == 1 + 50 + 50 + 2
    assert lines[-2].startswith("bus demo:")


def test_serve_refuses_bind_all_without_tcp(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mlgym.cli", "bus", "serve", "--run-dir", str(tmp_path),
                          "--bind-all"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--bind-all needs --tcp" in out.stderr
