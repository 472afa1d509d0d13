"""The event log's WAL handling: the writer never shrinks the WAL (that stalled commits),
the checkpointer truncates it once the log has been quiet for a while."""

from __future__ import annotations

import sqlite3
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------- batches


_TOPICS = ["a/x", "a/y", "b/x", "ab", "b"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=8),
    picks=st.lists(st.integers(0, len(_TOPICS) - 1), min_size=60, max_size=60),
    from_seq=st.integers(0, 45),
    to_seq=st.integers(0, 45),
    prefixes=st.lists(st.sampled_from(["", "a/", "b", "a/x", "zz"]), max_size=3),
    limit=st.integers(0, 10),
    chunk=st.integers(1, 6),
)
def test_reader_matches_a_plain_filter_over_batches(tmp_path_factory, sizes, picks, from_seq, to_seq, prefixes, limit, chunk):
    """Whatever the batch boundaries, a read returns exactly the messages a plain filter over
    the whole sequence would, in order, in chunks of at most `chunk`."""
    path = tmp_path_factory.mktemp("log") / "events.sqlite"
    log = EventLog(path)
    rows: list[eventlog.Row] = []
    seq = 1
    try:
        for k, n in enumerate(sizes):
            recs = [(_TOPICS[picks[(seq + i) % len(picks)]], "msgpack", f"m{seq + i}".encode()) for i in range(n)]
            log.append_batches([(seq, 1 + k // 3, float(k), recs)])
            rows += [(seq + i, 1 + k // 3, float(k), *r) for i, r in enumerate(recs)]
            seq += n
        reader = LogReader(path)
        chunks = list(reader.read(from_seq, to_seq, prefixes or ("",), limit, chunk=chunk))
        reader.close()
    finally:
        log.close()
    want = [r for r in rows if r[0] >= from_seq and (not to_seq or r[0] <= to_seq)
            and (not prefixes or "" in prefixes or r[3].startswith(tuple(prefixes)))]
    if limit:
        want = want[:limit]
    assert [r for c in chunks for r in c] == want
    assert all(0 < len(c) <= chunk for c in chunks)


def test_rows_become_batches_and_read_back(tmp_path):
    """append(rows) splits where the epoch, the time or the seq run changes."""
    log = EventLog(tmp_path / "events.sqlite")
    rows = [(1, 1, 1.0, "t/a", "msgpack", b"1"), (2, 1, 1.0, "t/b", "json", b"2"),
            (3, 1, 2.0, "t/a", "msgpack", b"3"), (4, 2, 2.0, "t/a", "msgpack", b"4"),
            (6, 2, 2.0, "t/a", "msgpack", b"6")]
    try:
        log.append(rows)
        batches = log._conn.execute("SELECT first_seq, last_seq, epoch, ts FROM batches ORDER BY first_seq").fetchall()
        assert batches == [(1, 2, 1, 1.0), (3, 3, 1, 2.0), (4, 4, 2, 2.0), (6, 6, 2, 2.0)]
        assert log.head() == (6, 2)
    finally:
        log.close()
    reader = LogReader(tmp_path / "events.sqlite")
    assert [r for c in reader.read(1) for r in c] == rows
    reader.close()


def _version_1_log(path, rows):
    """A log as version 1 wrote it: one row per message in `events`."""
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, ts REAL NOT NULL,"
            " topic TEXT NOT NULL, encoding TEXT NOT NULL, payload BLOB NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('epoch', '3');")
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)


def test_a_version_1_log_is_read_as_is_and_upgraded_by_the_writer(tmp_path):
    path = tmp_path / "events.sqlite"
    rows = [(s, 1 + s // 700, 10.0 + s // 300, "t/even" if s % 2 == 0 else "t/odd", "msgpack", b"x%d" % s)
            for s in range(1, 1501)]
    _version_1_log(path, rows)
    reader = LogReader(path)  # nobody has upgraded it: the reader still understands it
    assert [r for c in reader.read(1, prefixes=["t/even"]) for r in c] == rows[1::2]
    reader.close()

    log = EventLog(path)  # a broker restarting on an old run upgrades the log in place
    try:
        assert "events" not in eventlog._tables(log._conn)
        assert log._conn.execute("PRAGMA user_version").fetchone()[0] == eventlog.SCHEMA_VERSION
        assert log.head() == (1500, 3)  # the epoch recorded in meta is kept
        assert log.begin_epoch() == (4, 1501)
        log.append_batches([(1501, 4, 20.0, [("t/new", "msgpack", b"new")])])
    finally:
        log.close()
    reader = LogReader(path)
    assert [r for c in reader.read(1) for r in c] == rows + [(1501, 4, 20.0, "t/new", "msgpack", b"new")]
    assert [r[0] for c in reader.read(1499, 1500) for r in c] == [1499, 1500]
    reader.close()


def test_a_batch_over_the_row_limit_is_split_over_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "MAX_ROW_BYTES", 100)
    sizes = [30, 30, 30, 30, 250, 10, 99, 1]  # 250 > the limit: a row of its own
    recs = [("t/x", "msgpack", bytes([i]) * n) for i, n in enumerate(sizes)]
    log = EventLog(tmp_path / "events.sqlite")
    try:
        log.append_batches([(7, 2, 5.0, recs)])
        log.append([(15 + i, 2, 6.0, *r) for i, r in enumerate(recs[:3])])
        spans = log._conn.execute("SELECT first_seq, last_seq FROM batches ORDER BY first_seq").fetchall()
        assert spans == [(7, 9), (10, 10), (11, 11), (12, 12), (13, 14), (15, 17)]
        assert log.head() == (17, 2)
    finally:
        log.close()
    reader = LogReader(tmp_path / "events.sqlite")
    rows = [r for c in reader.read(1) for r in c]
    reader.close()
    assert rows == [(7 + i, 2, 5.0, *r) for i, r in enumerate(recs)] + [(15 + i, 2, 6.0, *r) for i, r in enumerate(recs[:3])]
