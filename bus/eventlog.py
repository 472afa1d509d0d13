"""The run's append-only event log: every bus message, as published, in an SQLite index and
a data file beside it (`events.sqlite` and `events.sqlite.data`).

Why one row per batch (the messages of one commit, msgpack-packed), not one per message: the
broker's hot path binds and inserts one row per commit whatever its size, where a row per 1 KiB
message cost ~3 us of CPU each; with the one-thread proxy loop this took the broker from 19 to
12.5 us of CPU per message (docs/performance.md). Readers unpack batches and filter by topic
themselves (`LogReader`), so callers still see one row per message.

Why the packed batches go to a data file and the row only says where (offset, length): in
SQLite every byte is written twice, into the WAL and again when a checkpoint copies it into the
database, and read once more in between; the insert, half of it the kernel's writing (page
cache, block allocation), was a quarter of the broker's proxy thread, and the checkpointer
added a tenth more. Appended to a plain file each byte is written once. The order keeps it as
safe as before: the data is written before the row that points to it is committed, so a
committed row always has its data, and a writer that opens the log cuts off anything past the
last committed row (a crash between the two). Against power loss, where
a committed row can survive and its data not: the checkpointer fdatasyncs the data file and the
next commit records how far that reached; a writer that opens the log after an unclean stop
checks the rows beyond that mark and drops any whose data is not intact (those messages were
lost with the power, as the last commits of a WAL can be). Rows of logs written before version
3 keep their batches inline (`records`), and are read as they are.

Why SQLite in WAL mode with synchronous=NORMAL: a commit is durable against a crash of the
broker process (SIGKILL, OOM) without an fsync per batch; only a power loss can lose the last
commits. Readers use their own connections, so history reads never block the writer.
Checkpointing (copying the WAL back into the database, with its fsync) runs on a separate
connection in a background thread, so the writer's batches stay short and even.

Why the writer never shrinks the WAL (no journal_size_limit): SQLite truncates an oversized WAL
inside the next COMMIT, and truncating a few hundred MB after a burst stalled that commit, and
every message behind it, for 20-150 ms (the bus bench's p99, when batches were inline; the
WAL now grows by a page or two per commit, but the rule stays). The WAL is reused from its
start after each full checkpoint instead, and the checkpointer truncates it only in a lull.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from mlgym import log

logger = log.get(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    first_seq   INTEGER PRIMARY KEY,
    last_seq    INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    ts          REAL    NOT NULL,
    records     BLOB    NOT NULL,  -- the packed batch; empty when it is in the data file
    data_offset INTEGER,           -- where in the data file (NULL: inline, version 2 rows)
    data_length INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
# PRAGMA user_version; 1 (no batches table): one row per message in `events`; 2: batches inline
SCHEMA_VERSION = 3
DATA_SUFFIX = ".data"  # the data file is the index's name plus this

# payload bytes in one batch row at most (more are split over rows; one larger message gets a
# row of its own): SQLite refuses values over 1 GB, and a row is read into memory whole
MAX_ROW_BYTES = 32 * 1024 * 1024
WAL_KEEP = 64 * 1024 * 1024  # a WAL larger than this is truncated in the next lull
LULL = 5.0  # seconds without an append that count as a lull
# the data file's page cache: synced once this much was appended since the last sync (not
# waiting for the interval), and only its newest CACHE_KEEP bytes are left cached (see
# EventLog._sync_data)
SYNC_EVERY = 16 * 1024 * 1024
CACHE_KEEP = 64 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# (seq, epoch, ts, topic, encoding, payload): one message, as callers see it
Row = tuple[int, int, float, str, str, bytes]
# (topic, encoding, payload): one message inside a batch, as stored
Record = tuple[str, str, bytes]

# (first seq, epoch, ts, records): messages first seq, first seq + 1, ... committed together
Batch = tuple[int, int, float, Sequence[Record]]
# (first seq, last seq, epoch, ts, records encoded): one row of the log as stored, records a
# msgpack array of [topic, encoding, payload] (`encode_rows`, `decode_records`)
LogRow = tuple[int, int, int, float, bytes]

_INSERT = "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_INLINE = "INSERT INTO batches (first_seq, last_seq, epoch, ts, records) VALUES (?, ?, ?, ?, ?)"
_SET_META = "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value"
_encode_records = msgspec.msgpack.Encoder().encode
decode_records: Callable[[bytes], list[Record]] = msgspec.msgpack.Decoder(list[Record]).decode


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def data_path(path: str | Path) -> Path:
    """The data file of the log at `path`."""
    path = Path(path)
    return path.with_name(path.name + DATA_SUFFIX)


class LogCorrupt(Exception):
    """A committed row whose data is missing or unreadable (the data file was removed,
    truncated or overwritten by something else)."""


class EventLog:
    """Writer side (one per broker) plus helpers to open independent readers."""

    def __init__(self, path: str | Path, checkpoint_interval: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path)
        # SQLite's default 4 KiB pages: with the batches in the data file a commit changes a
        # few small rows, and every commit writes whole pages to the WAL (16 KiB pages, chosen
        # when the batches were inline, cost 33 us per single-message commit against 24)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        self._conn.execute("PRAGMA journal_size_limit=-1")  # see the module docstring
        self._conn.execute("PRAGMA cache_size=-32768")
        self._conn.executescript(SCHEMA)
        self._upgrade()
        self._data = os.open(data_path(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._data_end, mark = self._recover()
        # how far the data file is known to be on disk (the checkpointer moves it), and the
        # mark the index has for it (the next commit records a newer one)
        self._synced = self._synced_logged = mark
        self._uncached = self._uncached_before = 0  # the data file's page cache was dropped up to here
        self._drop_cache = hasattr(os, "posix_fadvise")
        self._last_append = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # the checkpointer: sync now (or stop)
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(checkpoint_interval,), name="eventlog-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    # ------------------------------------------------------------------ writer

    def _upgrade(self) -> None:
        """Bring a log written by an older version to this schema, in one transaction: the
        per-message `events` table of version 1 becomes (inline) batches, nothing dropped
        before its copy is committed with it; version 2's batches table gains the data file
        columns (its rows stay inline)."""
        conn = self._conn
        if "data_offset" not in _columns(conn, "batches"):
            conn.execute("ALTER TABLE batches ADD COLUMN data_offset INTEGER")
            conn.execute("ALTER TABLE batches ADD COLUMN data_length INTEGER")
        if "events" in _tables(conn):
            logger.info("upgrading the event log to batches (once; a large log takes a while)", path=str(self.path))
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute("SELECT seq, epoch, ts, topic, encoding, payload FROM events ORDER BY seq")
                while rows := cur.fetchmany(512):
                    conn.executemany(_INSERT_INLINE, encode_rows(_group(rows)))
                conn.execute("DROP TABLE events")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            logger.info("event log upgraded to batches", path=str(self.path))
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def head(self) -> tuple[int, int]:
        """(highest seq, highest epoch) in the log; (0, 0) when empty."""
        seq, epoch = self._conn.execute(
            "SELECT COALESCE(MAX(last_seq), 0), COALESCE(MAX(epoch), 0) FROM batches").fetchone()
        return int(seq), max(int(epoch), self._meta_int("epoch"))

    def _meta_int(self, key: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def begin_epoch(self) -> tuple[int, int]:
        """Start a new broker epoch: returns (epoch, next seq). Committed before the broker
        publishes anything, so an epoch number is never reused even if no message is logged."""
        head_seq, last_epoch = self.head()
        epoch = last_epoch + 1
        self._conn.execute(_SET_META, ("epoch", str(epoch)))
        return epoch, head_seq + 1

    def _recover(self) -> tuple[int, int]:
        """(where the next batch goes in the data file, the synced mark): the end of the last
        committed row's data. Anything after it (written, but its row never committed) is cut
        off; after an unclean stop, rows past the synced mark whose data is not intact are
        dropped."""
        conn = self._conn
        end_row = conn.execute(
            "SELECT data_offset + data_length FROM batches WHERE data_offset IS NOT NULL "
            "ORDER BY first_seq DESC LIMIT 1").fetchone()
        end = int(end_row[0]) if end_row else 0
        synced = self._meta_int("data_synced")
        if end > synced:
            end = self._drop_broken_tail(synced)
        if os.fstat(self._data).st_size != end:
            os.ftruncate(self._data, end)
        return end, min(synced, end)

    def _drop_broken_tail(self, synced: int) -> int:
        """Check the rows whose data lies past `synced`; drop the first broken one and every
        row after it. Returns the end of the data kept."""
        conn = self._conn
        rows = conn.execute(
            "SELECT first_seq, last_seq, data_offset, data_length FROM batches "
            "WHERE data_offset IS NOT NULL AND data_offset + data_length > ? ORDER BY first_seq",
            (synced,)).fetchall()
        end = synced
        for first, last, offset, length in rows:
            blob = os.pread(self._data, length, offset)
            try:
                intact = len(blob) == length and len(decode_records(blob)) == last - first + 1
            except msgspec.DecodeError:
                intact = False
            if not intact:
                logger.warning("event log: dropping rows whose data did not survive an unclean stop",
                               path=str(self.path), from_seq=first)
                conn.execute("DELETE FROM batches WHERE first_seq >= ?", (first,))
                break
            end = offset + length
        return end

    def append_batches(self, batches: Sequence[Batch]) -> None:
        """Append batches of messages, each (first seq, epoch, time, records) with consecutive
        seqs from its first, in one transaction; returns once it is committed."""
        self.append_rows(encode_rows(batches))

    def append_rows(self, rows: Sequence[LogRow]) -> None:
        """Append rows already encoded (`encode_rows`, or the broker's C loop, which writes
        them as it receives) in one transaction; returns once it is committed. The broker's
        hot path: one write to the data file and one insert per row, whatever its size.

        The data is written first, at the end of the last committed row's: if anything fails
        before the commit, a retry writes the same place again."""
        if not rows:
            return
        offset, params = self._data_end, []
        for first, last, epoch, ts, blob in rows:
            params.append((first, last, epoch, ts, b"", offset, len(blob)))
            offset += len(blob)
        _pwrite_all(self._data, [r[4] for r in rows], self._data_end)
        synced = self._synced
        conn = self._conn
        if len(params) == 1 and synced == self._synced_logged:
            conn.execute(_INSERT, params[0])  # autocommit: one statement is one transaction
        else:
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT, params)
                if synced != self._synced_logged:
                    conn.execute(_SET_META, ("data_synced", str(synced)))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._synced_logged = synced
        self._data_end = offset
        self._last_append = time.monotonic()
        if offset - self._synced >= SYNC_EVERY:
            self._wake.set()

    def append(self, rows: Sequence[Row]) -> None:
        """Append rows with consecutive seqs in one transaction; returns once committed."""
        self.append_batches(_group(rows))

    def close(self) -> None:
        self._stop_checkpointer()
        try:
            os.fdatasync(self._data)
            self._conn.execute(_SET_META, ("data_synced", str(self._data_end)))  # a clean stop: nothing to check
        except (OSError, sqlite3.Error) as exc:
            logger.warning("could not record the data file as synced", error=str(exc))
        os.close(self._data)
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # readers still open: the next start will finish it
            logger.warning("final checkpoint failed", error=str(exc))
        self._conn.close()

    def _stop_checkpointer(self) -> None:
        self._stop.set()
        self._wake.set()
        self._checkpointer.join(timeout=5)

    def _checkpoint_loop(self, interval: float) -> None:
        """A PASSIVE checkpoint every `interval` seconds when something was appended: small,
        even chunks of copying (deferring it to lulls makes one huge copy that hurts whatever
        comes next). A WAL grown past WAL_KEEP is truncated only after LULL quiet seconds,
        because truncating holds the write lock. The data file is synced with each checkpoint,
        and in between whenever SYNC_EVERY bytes were appended (`append_rows` wakes it)."""
        conn = _connect(self.path)
        wal = self.path.with_name(self.path.name + "-wal")
        checkpointed_at = 0.0
        next_checkpoint = time.monotonic() + interval
        try:
            while True:
                self._wake.wait(max(0.0, next_checkpoint - time.monotonic()))
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    now = time.monotonic()
                    due = now >= next_checkpoint
                    last = self._last_append
                    if (due and last > checkpointed_at) or self._data_end - self._synced >= SYNC_EVERY:
                        self._sync_data()
                    if not due:
                        continue
                    next_checkpoint = now + interval
                    if last > checkpointed_at:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        checkpointed_at = last
                    elif now - last >= LULL and _size(wal) > WAL_KEEP:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except (sqlite3.Error, OSError) as exc:
                    logger.warning("checkpoint failed", error=str(exc))
        finally:
            conn.close()

    def _sync_data(self) -> None:
        """fdatasync the data file (the next commit records how far: see _recover), then drop
        the synced part of it from the page cache, but for its newest CACHE_KEEP bytes.

        Why drop it: the log is appended and hardly ever re-read (recent history is served from
        the broker's memory), so cached pages of it only grow the page cache, by the full write
        rate. Every new page must come from free memory, and in a VM that hands free memory
        back to its host (free page reporting, ballooning: this project's CI machines) a page
        the host took back costs a fault into the host on first touch: appending 600 KB went
        from 0.17 to 1.6-1.9 ms once about 1 GB had been written, and the broker's write took a
        third to a half of its proxy thread. Dropped pages are clean (just synced) and go back
        to the allocator, which hands them straight to the next appends (docs/performance.md)."""
        end = self._data_end
        os.fdatasync(self._data)
        self._synced = end
        upto = (end - CACHE_KEEP) // _PAGE * _PAGE  # whole pages: a partial one would stay
        if upto > self._uncached and self._drop_cache:
            # from the previous call's start: the kernel leaves a few pages at the end of a
            # range that were written moments before (still on a CPU's LRU batch); the next
            # call takes them
            start = self._uncached_before
            try:
                os.posix_fadvise(self._data, start, upto - start, os.POSIX_FADV_DONTNEED)
            except OSError as exc:  # only advice: a file system that refuses it keeps its cache
                logger.info("event log: the data file's page cache is left alone", error=str(exc))
                self._drop_cache = False
                return
            self._uncached_before, self._uncached = self._uncached, upto


def _group(rows: Sequence[Row]) -> list[Batch]:
    """Rows as batches: a new batch wherever the epoch or time changes or a seq is skipped."""
    batches: list[Batch] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][1:3] != rows[start][1:3] or rows[i][0] != rows[i - 1][0] + 1:
            first, epoch, ts = rows[start][:3]
            batches.append((first, epoch, ts, [(r[3], r[4], r[5]) for r in rows[start:i]]))
            start = i
    return batches


def encode_rows(batches: Sequence[Batch]) -> list[LogRow]:
    """Batches as the log's rows, each split into rows of at most MAX_ROW_BYTES of payload."""
    return [(first, first + len(recs) - 1, epoch, ts, _encode_records(recs))
            for batch_first, epoch, ts, batch in batches
            for first, recs in _pieces(batch_first, batch)]


def _pieces(first: int, records: Sequence[Record]) -> Iterator[tuple[int, Sequence[Record]]]:
    """(first seq, records) runs of at most MAX_ROW_BYTES of payload, in order."""
    start, size = 0, 0
    for i, rec in enumerate(records):
        if size and size + len(rec[2]) > MAX_ROW_BYTES:
            yield first + start, records[start:i]
            start, size = i, 0
        size += len(rec[2])
    if start < len(records):
        yield first + start, records[start:] if start else records


def batch_rows(batches: Iterable[Batch], from_seq: int, to_seq: int, prefixes: Sequence[str]) -> Iterator[Row]:
    """The rows of `batches` (in seq order) with from_seq <= seq <= to_seq whose topic starts
    with one of `prefixes` (none, or "": every topic). Shared by the log's readers and the
    broker's in-memory window, which keep the same batches."""
    want = tuple(prefixes)
    match_all = not want or "" in want
    for first, epoch, ts, records in batches:
        if first > to_seq:
            return
        if first + len(records) <= from_seq:
            continue
        seq = first - 1
        for topic, encoding, payload in records:
            seq += 1
            if seq < from_seq or not (match_all or topic.startswith(want)):
                continue
            if seq > to_seq:
                return
            yield (seq, epoch, ts, topic, encoding, payload)


def _pwrite_all(fd: int, blobs: list[bytes], offset: int) -> None:
    """Write `blobs` back to back from `offset` (os.pwritev may write less than asked)."""
    views = [memoryview(b) for b in blobs if b]
    while views:
        n = os.pwritev(fd, views[:512], offset)  # IOV_MAX is 1024 on Linux
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class LogReader:
    """A read-only connection for history queries; use one per thread (asyncio.to_thread)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn = _connect(self.path)
        self._conn.execute("PRAGMA query_only=1")
        tables = _tables(self._conn)
        # an old log nobody has upgraded, or a new file whose writer has not made its tables
        self._legacy = "events" in tables and "batches" not in tables
        self._data: int | None = None

    def _blob(self, inline: bytes, offset: int | None, length: int | None) -> bytes:
        """A row's packed batch: inline, or read from the data file."""
        if offset is None:
            return inline
        if self._data is None:
            try:
                self._data = os.open(data_path(self.path), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise LogCorrupt(f"{data_path(self.path)} is missing: the log's rows point into it") from None
        blob = os.pread(self._data, length, offset)
        if len(blob) != length:
            raise LogCorrupt(f"{data_path(self.path)} ends at {offset + len(blob)}, a row needs bytes "
                             f"{offset}-{offset + length}")
        return blob

    def read(
        self, from_seq: int, to_seq: int = 0, prefixes: Sequence[str] = ("",), limit: int = 0,
        chunk: int = 1000,
    ) -> Iterator[list[Row]]:
        """Rows with from_seq <= seq <= to_seq (0: no upper bound) whose topic starts with one
        of `prefixes`, in seq order, in lists of at most `chunk` rows."""
        if self._legacy:
            yield from self._read_legacy(from_seq, to_seq, prefixes, limit, chunk)
            return
        last = to_seq or (1 << 62)
        # asked on every read: a reader may be opened before its writer has made the table
        inline_only = "data_offset" not in _columns(self._conn, "batches")  # version 2
        location = "NULL, NULL" if inline_only else "data_offset, data_length"
        cur = self._conn.execute(
            f"SELECT first_seq, epoch, ts, records, {location} FROM batches WHERE first_seq >= "
            "(SELECT COALESCE(MAX(first_seq), 0) FROM batches WHERE first_seq <= ?) AND first_seq <= ? "
            "ORDER BY first_seq", (from_seq, last))
        batches = ((first, epoch, ts, self._records(first, inline, offset, length))
                   for first, epoch, ts, inline, offset, length in cur)
        out: list[Row] = []
        left = limit or -1
        for row in batch_rows(batches, from_seq, last, prefixes):
            out.append(row)
            left -= 1
            if len(out) >= chunk or not left:
                yield out
                out = []
                if not left:
                    return
        if out:
            yield out

    def head(self) -> int:
        """The highest seq in the log; 0 when it is empty or its writer has not made its
        tables yet. One lookup by the primary key: cheap enough to poll."""
        try:
            if self._legacy:
                row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
            else:
                row = self._conn.execute("SELECT last_seq FROM batches ORDER BY first_seq DESC LIMIT 1").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        return int(row[0]) if row and row[0] is not None else 0

    def _records(self, first: int, inline: bytes, offset: int | None, length: int | None) -> list[Record]:
        try:
            return decode_records(self._blob(inline, offset, length))
        except msgspec.DecodeError as exc:
            raise LogCorrupt(f"the batch from seq {first} in {self.path} does not decode: {exc}") from None

    def _read_legacy(
        self, from_seq: int, to_seq: int, prefixes: Sequence[str], limit: int, chunk: int
    ) -> Iterator[list[Row]]:
        """The same from a version 1 log (one row per message) that no writer has upgraded."""
        sql = "SELECT seq, epoch, ts, topic, encoding, payload FROM events WHERE seq >= ?"
        args: list[object] = [from_seq]
        if to_seq:
            sql += " AND seq <= ?"
            args.append(to_seq)
        prefixes = [p for p in prefixes]
        if prefixes and "" not in prefixes:
            # substr() comparison: exact prefix match, no LIKE wildcards to escape
            sql += " AND (" + " OR ".join("substr(topic, 1, ?) = ?" for _ in prefixes) + ")"
            for p in prefixes:
                args += [len(p), p]
        sql += " ORDER BY seq"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        cur = self._conn.execute(sql, args)
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            yield rows

    def close(self) -> None:
        if self._data is not None:
            os.close(self._data)
            self._data = None
        self._conn.close()

