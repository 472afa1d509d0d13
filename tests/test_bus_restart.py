"""SIGKILL of a broker process: nothing acknowledged or delivered is lost, the restarted broker
has a new epoch and continues the sequence, and a live subscriber resynchronises."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlgym.bus import connect
from mlgym.bus import protocol as P
from mlgym.bus.broker import spawn


async def test_sigkill_loses_nothing_acknowledged_and_subscribers_resync(tmp_path: Path) -> None:
    run = tmp_path / "run"
    broker = spawn(run, heartbeat=0.1)
    try:
        async with connect(broker.url, sender="t", timeout=20) as bus:
            sub = bus.subscribe("k/", from_seq=1)
            await sub.ready()
            acked = [await bus.publish("k/a", P.Note(text=f"a{i}"), acked=True) for i in range(40)]
            for i in range(40):  # fire-and-forget too: whatever was delivered must be logged
                await bus.publish("k/f", P.Note(text=f"f{i}"))
            before = [await sub.get(10) for _ in range(60)]
            old_epoch = broker.epoch
            assert {e.epoch for e in before} == {old_epoch}

            broker.kill()  # SIGKILL: no flush, no goodbye
            broker = spawn(run, heartbeat=0.1)
            assert broker.epoch == old_epoch + 1

            after = [await bus.publish("k/b", P.Note(text=f"b{i}"), acked=True) for i in range(10)]
            assert min(after) > max(acked)  # the sequence continues, never reused

            history = await bus.history(1, "k/")
            logged = {e.seq for e in history}
            assert set(acked) <= logged and set(after) <= logged
            assert {e.seq for e in before} <= logged  # delivered implies durable
            assert len(logged) == len(history)  # no seq twice

            # the subscriber lived through the crash: it gets everything, in order, once
            rest = []
            while not rest or rest[-1].seq < max(after):
                rest.append(await sub.get(20))
            seen = [e.seq for e in before + rest]
            assert seen == sorted(set(seen))
            assert set(seen) == logged
            assert sub.epoch == broker.epoch and sub.epoch_changes >= 1
            assert rest[-1].epoch == broker.epoch
    finally:
        broker.stop()
    # the log on disk agrees, and the epoch is recorded
    with sqlite3.connect(run / "events.sqlite") as db:
        epochs = {e for (e,) in db.execute("SELECT DISTINCT epoch FROM batches")}
        assert epochs == {old_epoch, old_epoch + 1}


async def test_restart_without_messages_still_gets_a_new_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    epochs = []
    for _ in range(3):
        b = spawn(run)
        epochs.append(b.epoch)
        b.kill()
    assert epochs == [1, 2, 3]


async def test_one_broker_per_run_directory(tmp_path: Path) -> None:
    from mlgym.bus.broker import Broker

    run = tmp_path / "run"
    first = spawn(run)
    try:
        with pytest.raises(RuntimeError, match="another broker"):
            await Broker(run).start()
        async with connect(first.url) as bus:  # the running one is untouched
            assert (await bus.status()).epoch == first.epoch
    finally:
        first.stop()
