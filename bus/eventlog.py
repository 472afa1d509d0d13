"""The run's append-only event log: every bus message, as published, in one SQLite file.

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

from mlgym import log

logger = log.get(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    epoch    INTEGER NOT NULL,
    ts       REAL    NOT NULL,
    topic    TEXT    NOT NULL,
    encoding TEXT    NOT NULL,
    payload  BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

WAL_KEEP = 64 * 1024 * 1024  # a WAL larger than this is truncated in the next lull
LULL = 5.0  # seconds without an append that count as a lull

# (seq, epoch, ts, topic, encoding, payload)
Row = tuple[int, int, float, str, str, bytes]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class EventLog:
    """Writer side (one per broker) plus helpers to open independent readers."""

    def __init__(self, path: str | Path, checkpoint_interval: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path)
        # 16 KiB pages: ~25% less CPU per 1 KiB row than the default 4 KiB (only applies to a
        # new file; must precede the switch to WAL)
        self._conn.execute("PRAGMA page_size=16384")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        self._conn.execute("PRAGMA journal_size_limit=-1")  # see the module docstring
        self._conn.execute("PRAGMA cache_size=-32768")
        self._conn.executescript(SCHEMA)
        self._last_append = 0.0
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(checkpoint_interval,), name="eventlog-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    # ------------------------------------------------------------------ writer

    def head(self) -> tuple[int, int]:
        """(highest seq, highest epoch) in the log; (0, 0) when empty."""
        seq, epoch = self._conn.execute("SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(epoch), 0) FROM events").fetchone()
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

    def append(self, rows: Sequence[Row]) -> None:
        """Append one batch in one transaction; returns once it is committed."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._last_append = time.monotonic()

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

    def read(
        self, from_seq: int, to_seq: int = 0, prefixes: Sequence[str] = ("",), limit: int = 0,
        chunk: int = 1000,
    ) -> Iterator[list[Row]]:
        """Rows with from_seq <= seq <= to_seq (0: no upper bound) whose topic starts with one
        of `prefixes`, in seq order, in lists of at most `chunk` rows."""
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

