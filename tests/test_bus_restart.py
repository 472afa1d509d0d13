"""The broker as its own process. SIGKILL of it: nothing acknowledged or delivered is lost, the
restarted broker has a new epoch and continues the sequence, and a live subscriber
resynchronises. Its process settings: malloc keeps freed memory for the next burst."""

from __future__ import annotations

import asyncio
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlgym.bus import connect
from mlgym.bus import protocol as P
from mlgym.bus.broker import spawn

# Allocates 32 MB in 8 KiB blocks (the size libzmq's I/O thread allocates per read), frees it,
# and counts the page faults of doing it again: whether the freed memory stayed with malloc.
_REFAULTS = """
import ctypes, resource, sys
from mlgym.bus.broker import keep_freed_memory
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
tuned = keep_freed_memory() if sys.argv[1] == "keep" else None
def burst():
    blocks = [libc.malloc(8192) for _ in range(4000)]
    for b in blocks:
        ctypes.memset(b, 1, 8192)
    for b in blocks:
        libc.free(b)
burst()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
burst()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


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


async def test_an_acked_publish_waits_out_a_killed_broker_and_is_logged_once(
        tmp_path: Path) -> None:
    """A broker killed with an acked publish in flight: the client sends it again until a
    broker answers (issue #16 finding 8: an env server's score event must not be lost), and
    the same envelope id is logged once, whether the broker saw it before it died or not."""
    run = tmp_path / "run"
    broker = spawn(run, heartbeat=0.1)
    try:
        async with connect(broker.url, sender="t", ack_timeout=0.5) as bus:
            env = P.make(P.Note(text="once"), topic="k/once", sender="t")
            first = await bus.publish_envelope(env, acked=True)
            assert await bus.publish_envelope(env, acked=True) == first  # a retry of a logged one
            assert (await bus.status()).duplicates_acked == 1
            broker.kill()
            late = P.make(P.Note(text="while down"), topic="k/down", sender="t")
            pending = asyncio.create_task(bus.publish_envelope(late, acked=True))
            await asyncio.sleep(1.5)  # several attempts go unanswered
            assert not pending.done()
            broker = spawn(run, heartbeat=0.1)
            seq = await asyncio.wait_for(pending, 30)
            assert bus.ack_retries >= 2
            # the restarted broker knows the ids logged before it: the retry is not logged again
            assert await bus.publish_envelope(env, acked=True) == first
            texts = [e.body.text for e in await bus.history(1, "k/")]
            assert texts == ["once", "while down"] and seq > first
    finally:
        broker.stop()


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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc tuning is for glibc only")
def test_the_broker_process_keeps_freed_memory_for_the_next_burst() -> None:
    def refaults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _REFAULTS, mode], capture_output=True,
                             text=True, check=True, timeout=60).stdout.split()
        return out[0], int(out[1])

    default, kept = refaults("default"), refaults("keep")
    assert default[1] > 4000, default  # glibc's defaults hand the 32 MB back: ~8,000 pages again
    assert kept == ("True", kept[1]) and kept[1] < 200, kept


def test_the_linger_option_reaches_the_broker_process(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="--linger-ms"):  # `mlgym bus serve` refuses 2,000 ms
        spawn(tmp_path / "bad", linger=2.0)
    with spawn(tmp_path / "off", linger=0) as broker:
        assert broker.proc.poll() is None and "--linger-ms" in broker.proc.args
