"""The event log's WAL handling: the writer never shrinks the WAL (that stalled commits),
the checkpointer truncates it once the log has been quiet for a while."""

from __future__ import annotations

import time

from mlgym.bus import eventlog
from mlgym.bus.eventlog import EventLog, LogReader


def _rows(start: int, n: int) -> list[eventlog.Row]:
    return [(s, 1, 1.0, "t/x", "msgpack", b"p" * 1024) for s in range(start, start + n)]


def _wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_wal_truncated_only_in_a_lull(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "WAL_KEEP", 64 * 1024)
    monkeypatch.setattr(eventlog, "LULL", 0.5)
    log = EventLog(tmp_path / "events.sqlite", checkpoint_interval=0.05)
    wal = tmp_path / "events.sqlite-wal"
    try:
        for k in range(20):
            log.append(_rows(1 + k * 100, 100))
        grown = wal.stat().st_size
        assert grown > 1024 * 1024
        # passive checkpoints copy the WAL back but leave its size alone while appends go on
        log.append(_rows(2001, 10))
        assert wal.stat().st_size >= 64 * 1024
        assert _wait_for(lambda: wal.stat().st_size == 0), "WAL not truncated in the lull"
        log.append(_rows(2011, 5))  # the log still takes appends afterwards
        reader = LogReader(tmp_path / "events.sqlite")
        seqs = [r[0] for chunk in reader.read(1) for r in chunk]
        reader.close()
        assert seqs == list(range(1, 2016))
    finally:
        log.close()


def test_writer_does_not_set_a_journal_size_limit(tmp_path):
    log = EventLog(tmp_path / "events.sqlite")
    try:
        assert log._conn.execute("PRAGMA journal_size_limit").fetchone()[0] == -1
    finally:
        log.close()
