"""The event log: batches read back as rows, older schemas read and upgraded, the WAL's
handling (never shrunk by the writer, truncated in a lull), and the data file's crash
safety (a write whose row never committed is cut off; data lost with the power is dropped with
its rows, not served)."""

from __future__ import annotations

import os
import sqlite3
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

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
    monkeypatch.setattr(eventlog, "WAL_KEEP", 32 * 1024)
    monkeypatch.setattr(eventlog, "LULL", 0.5)
    log = EventLog(tmp_path / "events.sqlite", checkpoint_interval=0.05)
    wal = tmp_path / "events.sqlite-wal"
    try:
        for k in range(20):
            log.append(_rows(1 + k * 100, 100))
        assert wal.stat().st_size > 2 * 32 * 1024  # index rows only (the data is in its own file)
        # passive checkpoints copy the WAL back but leave its size alone while appends go on
        log.append(_rows(2001, 10))
        assert wal.stat().st_size >= 32 * 1024
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
    assert reader.head() == 6
    reader.close()


def _old_log(path, table: str, epoch: int, rows: list[tuple]) -> None:
    """A log as an older version wrote it: `table`'s definition, a meta table, `rows`."""
    with sqlite3.connect(path) as db:
        db.executescript(f"CREATE TABLE {table}; CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                         f"INSERT INTO meta VALUES ('epoch', '{epoch}');")
        db.executemany(f"INSERT INTO {table.split()[0]} VALUES ({', '.join('?' * len(rows[0]))})", rows)


def _version_1_log(path, rows):
    """A log as version 1 wrote it: one row per message in `events`."""
    _old_log(path, "events (seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, ts REAL NOT NULL,"
             " topic TEXT NOT NULL, encoding TEXT NOT NULL, payload BLOB NOT NULL)", 3, rows)


def test_a_reader_sees_the_head_grow_from_a_log_not_yet_made(tmp_path):
    path = tmp_path / "events.sqlite"
    sqlite3.connect(path).close()  # the file exists, its writer has not made its tables yet
    reader = LogReader(path)
    assert reader.head() == 0
    log = EventLog(path)
    try:
        assert reader.head() == 0
        log.append([(1, 1, 1.0, "t/a", "msgpack", b"1"), (2, 1, 1.0, "t/a", "msgpack", b"2")])
        assert reader.head() == 2
        log.append_batches([(3, 1, 2.0, [("t/a", "msgpack", b"3")] * 5)])
        assert reader.head() == 7
    finally:
        log.close()
        reader.close()


def test_a_version_1_log_is_read_as_is_and_upgraded_by_the_writer(tmp_path):
    path = tmp_path / "events.sqlite"
    rows = [(s, 1 + s // 700, 10.0 + s // 300, "t/even" if s % 2 == 0 else "t/odd", "msgpack", b"x%d" % s)
            for s in range(1, 1501)]
    _version_1_log(path, rows)
    reader = LogReader(path)  # nobody has upgraded it: the reader still understands it
    assert [r for c in reader.read(1, prefixes=["t/even"]) for r in c] == rows[1::2]
    assert reader.head() == 1500
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


def _read_all(path) -> list[eventlog.Row]:
    reader = LogReader(path)
    try:
        return [r for c in reader.read(1) for r in c]
    finally:
        reader.close()


def _version_2_log(path, batches):
    """A log as version 2 wrote it: batches inline, no data file columns."""
    _old_log(path, "batches (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, epoch INTEGER NOT NULL,"
             " ts REAL NOT NULL, records BLOB NOT NULL)", 2,
             [(f, f + len(r) - 1, e, ts, eventlog._encode_records(r)) for f, e, ts, r in batches])


def test_a_version_2_log_is_read_as_is_and_extended_in_the_data_file(tmp_path):
    path = tmp_path / "events.sqlite"
    old = [(1, 1, 1.0, [("t/a", "msgpack", b"a1"), ("t/b", "json", b"b2")]), (3, 2, 2.0, [("t/a", "msgpack", b"a3")])]
    _version_2_log(path, old)
    old_rows = [(1, 1, 1.0, "t/a", "msgpack", b"a1"), (2, 1, 1.0, "t/b", "json", b"b2"), (3, 2, 2.0, "t/a", "msgpack", b"a3")]
    assert _read_all(path) == old_rows
    log = EventLog(path)
    try:
        assert log.begin_epoch() == (3, 4)
        log.append_batches([(4, 3, 3.0, [("t/a", "msgpack", b"new")])])
        assert log._conn.execute("SELECT data_offset FROM batches WHERE first_seq = 1").fetchone() == (None,)
    finally:
        log.close()
    assert _read_all(path) == old_rows + [(4, 3, 3.0, "t/a", "msgpack", b"new")]
    assert eventlog.data_path(path).stat().st_size > 0


def test_data_written_but_never_committed_is_cut_off(tmp_path):
    """A crash between writing a batch's data and committing its row leaves bytes past the
    last row's end: the next writer cuts them off and appends where the committed data ends."""
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    log.append(_rows(1, 10))
    log.close()
    end = eventlog.data_path(path).stat().st_size
    with open(eventlog.data_path(path), "ab") as f:
        f.write(b"half a batch")
    log = EventLog(path)
    try:
        assert eventlog.data_path(path).stat().st_size == end
        log.append(_rows(11, 5))
    finally:
        log.close()
    assert [r[0] for r in _read_all(path)] == list(range(1, 16))


def _unclean(log: EventLog) -> None:
    """Stop a writer the way a crash does: no final sync, no clean-stop mark."""
    log._stop_checkpointer()
    os.close(log._data)
    log._conn.close()


def test_data_lost_with_the_power_is_dropped_with_its_rows(tmp_path):
    """Rows can survive a power loss whose data did not: past the last synced mark a new
    writer checks each row, drops the first broken one and everything after it, and the log
    reads as the intact prefix."""
    path = tmp_path / "events.sqlite"
    log = EventLog(path, checkpoint_interval=0.05)
    log.append(_rows(1, 20))
    assert _wait_for(lambda: log._synced == log._data_end)  # the checkpointer synced it...
    log.append(_rows(21, 10))  # ...and this commit records the mark
    synced = int(log._conn.execute("SELECT value FROM meta WHERE key='data_synced'").fetchone()[0])
    assert synced > 0
    log._stop_checkpointer()  # no more syncs: what follows is past the mark
    log.append(_rows(31, 10))
    log.append(_rows(41, 10))
    offset = log._conn.execute("SELECT data_offset FROM batches WHERE first_seq = 31").fetchone()[0]
    _unclean(log)
    with open(eventlog.data_path(path), "r+b") as f:  # the power took batch 31-40's data
        f.seek(offset)
        f.write(b"\0" * 4096)
    log = EventLog(path)
    try:
        assert log.head()[0] == 30
        assert eventlog.data_path(path).stat().st_size == offset
        log.append(_rows(31, 3))
    finally:
        log.close()
    assert [r[0] for r in _read_all(path)] == list(range(1, 34))


def test_a_clean_stop_needs_no_check_and_an_unclean_one_keeps_intact_rows(tmp_path, monkeypatch):
    path = tmp_path / "events.sqlite"
    log = EventLog(path, checkpoint_interval=60)
    log.append(_rows(1, 10))
    _unclean(log)  # nothing synced: every row is checked, and all are intact
    log = EventLog(path, checkpoint_interval=60)
    assert log.head()[0] == 10
    log.append(_rows(11, 10))
    log.close()  # a clean stop marks everything synced
    checked = []
    monkeypatch.setattr(EventLog, "_drop_broken_tail", lambda self, synced: checked.append(synced))
    log = EventLog(path)
    log.close()
    assert checked == []
    assert [r[0] for r in _read_all(path)] == list(range(1, 21))


def test_a_missing_data_file_is_a_clear_error(tmp_path):
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    log.append(_rows(1, 3))
    log.close()
    eventlog.data_path(path).unlink()
    reader = LogReader(path)
    with pytest.raises(eventlog.LogCorrupt, match="missing"):
        list(reader.read(1))
    reader.close()


def _cached_bytes(path) -> int:
    """How much of a file is in the page cache (mincore on a mapping that touches nothing)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(v & 1 for v in vec) * mmap.PAGESIZE
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this OS")
def test_the_data_file_is_synced_as_it_grows_and_only_its_newest_part_stays_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "SYNC_EVERY", 256 * 1024)
    monkeypatch.setattr(eventlog, "CACHE_KEEP", 1024 * 1024)
    # a checkpoint interval far away: only the bytes written make the checkpointer sync
    log = EventLog(tmp_path / "events.sqlite", checkpoint_interval=3600)
    data = eventlog.data_path(tmp_path / "events.sqlite")
    written = []
    try:
        for k in range(80):  # 8 MB of data, 100 KB per commit
            rows = [(1 + k * 100 + i, 1, 1.0, "t/x", "msgpack", os.urandom(1024)) for i in range(100)]
            log.append(rows)
            written += rows
        end = data.stat().st_size
        assert end > 8_000_000
        assert _wait_for(lambda: log._synced >= end - 256 * 1024), "the checkpointer did not sync as the file grew"
        # dropped up to CACHE_KEEP before the last sync, which is at most SYNC_EVERY behind
        assert end - log._uncached <= 1024 * 1024 + 2 * 256 * 1024
        # the kernel keeps a few pages of the newest dropped range that were written moments
        # before (the next drop takes them): a margin of one more SYNC_EVERY
        cached = _cached_bytes(data)
        assert cached <= 1024 * 1024 + 3 * 256 * 1024, f"{cached} of {end} bytes of the data file still cached"
        assert _read_all(tmp_path / "events.sqlite") == written  # what left the cache is on disk
    finally:
        log.close()


def test_a_file_system_that_refuses_the_cache_advice_changes_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "SYNC_EVERY", 256 * 1024)
    monkeypatch.setattr(eventlog, "CACHE_KEEP", 256 * 1024)
    calls = []

    def refuse(*args):
        calls.append(args)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refuse, raising=False)
    log = EventLog(tmp_path / "events.sqlite", checkpoint_interval=0.05)
    data = eventlog.data_path(tmp_path / "events.sqlite")
    try:
        for k in range(20):
            log.append(_rows(1 + k * 100, 100))
        assert _wait_for(lambda: not log._drop_cache), "the advice was never tried"
        for k in range(20, 40):  # syncing goes on, without the advice
            log.append(_rows(1 + k * 100, 100))
        end = data.stat().st_size
        assert _wait_for(lambda: log._synced == end)
        assert len(calls) == 1
        assert [r[0] for r in _read_all(tmp_path / "events.sqlite")] == list(range(1, 4001))
    finally:
        log.close()
