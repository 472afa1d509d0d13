"""The run's append-only event log: every bus message, as published, in one SQLite file.

Why one row per batch (the messages of one commit, msgpack-packed), not one per message: the
broker's hot path binds and inserts one row per commit whatever its size, where a row per 1 KiB
message cost ~3 us of CPU each; with the one-thread proxy loop this took the broker from 19 to
12.5 us of CPU per message (docs/performance.md). Readers unpack batches and filter by topic
themselves (`LogReader`), so callers still see one row per message.

Why SQLite in WAL mode with synchronous=NORMAL: a commit is durable against a crash of the
broker process (SIGKILL, OOM) without an fsync per batch; only a power loss can lose the last
commits. Readers use their own connections, so history reads never block the writer.
Checkpointing (copying the WAL back into the database, with its fsync) runs on a separate
connection in a background thread, so the writer's batches stay short and even.

Why the writer never shrinks the WAL (no journal_size_limit): SQLite truncates an oversized WAL
inside the next COMMIT, and truncating a few hundred MB after a burst stalled that commit, and
every message behind it, for 20-150 ms (the bus bench's p99). The WAL is reused from its start
after each full checkpoint instead, and the checkpointer truncates it only in a lull.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from mlgym import log

logger = log.get(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    first_seq INTEGER PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    ts        REAL    NOT NULL,
    records   BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
SCHEMA_VERSION = 2  # PRAGMA user_version; 1 (no batches table): one row per message in `events`

# payload bytes in one batch row at most (more are split over rows; one larger message gets a
# row of its own): SQLite refuses values over 1 GB, and a row is read into memory whole
MAX_ROW_BYTES = 32 * 1024 * 1024
WAL_KEEP = 64 * 1024 * 1024  # a WAL larger than this is truncated in the next lull
LULL = 5.0  # seconds without an append that count as a lull

# (seq, epoch, ts, topic, encoding, payload): one message, as callers see it
Row = tuple[int, int, float, str, str, bytes]
# (topic, encoding, payload): one message inside a batch, as stored
Record = tuple[str, str, bytes]

# (first seq, epoch, ts, records): messages first seq, first seq + 1, ... committed together
Batch = tuple[int, int, float, Sequence[Record]]

_INSERT = "INSERT INTO batches VALUES (?, ?, ?, ?, ?)"
_encode_records = msgspec.msgpack.Encoder().encode
_decode_records = msgspec.msgpack.Decoder(list[tuple[str, str, bytes]]).decode


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


class EventLog:
    """Writer side (one per broker) plus helpers to open independent readers."""

    def __init__(self, path: str | Path, checkpoint_interval: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path)
        # 16 KiB pages: a batch blob is written with ~30% less CPU than in the default 4 KiB
        # pages (measured alone); 64 KiB pages save a little more but make every small commit
        # (a few messages at moderate rates) write a 64 KiB page (only applies to a new file;
        # must precede the switch to WAL)
        self._conn.execute("PRAGMA page_size=16384")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        self._conn.execute("PRAGMA journal_size_limit=-1")  # see the module docstring
        self._conn.execute("PRAGMA cache_size=-32768")
        self._conn.executescript(SCHEMA)
        self._upgrade()
        self._last_append = 0.0
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(checkpoint_interval,), name="eventlog-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    # ------------------------------------------------------------------ writer

    def _upgrade(self) -> None:
        """Bring a log written by an older version to this schema, in one transaction: the
        per-message `events` table of version 1 becomes batches (nothing is dropped before
        its copy is committed with it)."""
        conn = self._conn
        if "events" in _tables(conn):
            logger.info("upgrading the event log to batches (once; a large log takes a while)", path=str(self.path))
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute("SELECT seq, epoch, ts, topic, encoding, payload FROM events ORDER BY seq")
                while rows := cur.fetchmany(512):
                    conn.executemany(_INSERT, _params(_group(rows)))
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
        row = self._conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        meta_epoch = int(row[0]) if row else 0
        return int(seq), max(int(epoch), meta_epoch)

    def begin_epoch(self) -> tuple[int, int]:
        """Start a new broker epoch: returns (epoch, next seq). Committed before the broker
        publishes anything, so an epoch number is never reused even if no message is logged."""
        head_seq, last_epoch = self.head()
        epoch = last_epoch + 1
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES('epoch', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(epoch),),
        )
        return epoch, head_seq + 1

    def append_batches(self, batches: Sequence[Batch]) -> None:
        """Append batches of messages, each (first seq, epoch, time, records) with consecutive
        seqs from its first, in one transaction; returns once it is committed. The broker's
        hot path: one bind and one insert per batch, whatever its size."""
        params = _params(batches)
        if not params:
            return
        conn = self._conn
        if len(params) == 1:  # autocommit: one statement is one transaction
            conn.execute(_INSERT, params[0])
        else:
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._last_append = time.monotonic()

    def append(self, rows: Sequence[Row]) -> None:
        """Append rows with consecutive seqs in one transaction; returns once committed."""
        self.append_batches(_group(rows))

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(timeout=5)
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # readers still open: the next start will finish it
            logger.warning("final checkpoint failed", error=str(exc))
        self._conn.close()

    def _checkpoint_loop(self, interval: float) -> None:
        """A PASSIVE checkpoint every `interval` seconds when something was appended: small,
        even chunks of copying (deferring it to lulls makes one huge copy that hurts whatever
        comes next). A WAL grown past WAL_KEEP is truncated only after LULL quiet seconds,
        because truncating holds the write lock."""
        conn = _connect(self.path)
        wal = self.path.with_name(self.path.name + "-wal")
        checkpointed_at = 0.0
        try:
            while not self._stop.wait(interval):
                last = self._last_append
                try:
                    if last > checkpointed_at:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        checkpointed_at = last
                    elif time.monotonic() - last >= LULL and _size(wal) > WAL_KEEP:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    logger.warning("checkpoint failed", error=str(exc))
        finally:
            conn.close()


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


def _params(batches: Sequence[Batch]) -> list[tuple[int, int, int, float, bytes]]:
    """INSERT parameters for batches, each split into rows of at most MAX_ROW_BYTES."""
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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class LogReader:
    """A read-only connection for history queries; use one per thread (asyncio.to_thread)."""

    def __init__(self, path: str | Path):
        self._conn = _connect(Path(path))
        self._conn.execute("PRAGMA query_only=1")
        tables = _tables(self._conn)
        # an old log nobody has upgraded, or a new file whose writer has not made its tables
        self._legacy = "events" in tables and "batches" not in tables

    def read(
        self, from_seq: int, to_seq: int = 0, prefixes: Sequence[str] = ("",), limit: int = 0,
        chunk: int = 1000,
    ) -> Iterator[list[Row]]:
        """Rows with from_seq <= seq <= to_seq (0: no upper bound) whose topic starts with one
        of `prefixes`, in seq order, in lists of at most `chunk` rows."""
        if self._legacy:
            yield from self._read_legacy(from_seq, to_seq, prefixes, limit, chunk)
            return
        want = tuple(prefixes)
        match_all = not want or "" in want
        last = to_seq or (1 << 62)
        cur = self._conn.execute(
            "SELECT first_seq, epoch, ts, records FROM batches WHERE first_seq >= "
            "(SELECT COALESCE(MAX(first_seq), 0) FROM batches WHERE first_seq <= ?) AND first_seq <= ? "
            "ORDER BY first_seq", (from_seq, last))
        out: list[Row] = []
        left = limit or -1
        for first, epoch, ts, blob in cur:
            seq = first - 1
            for topic, encoding, payload in _decode_records(blob):
                seq += 1
                if seq < from_seq or not (match_all or topic.startswith(want)):
                    continue
                if seq > last:
                    break
                out.append((seq, epoch, ts, topic, encoding, payload))
                left -= 1
                if len(out) >= chunk or not left:
                    yield out
                    out = []
                    if not left:
                        return
        if out:
            yield out

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
        self._conn.close()

