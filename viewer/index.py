"""A run's event log as the viewer serves it: summaries by sequence number, kept in memory,
grown by reading the log from where it stopped.

Why read the log rather than subscribe to the bus: the broker commits every message to the log
before it publishes it, so the log's sequence numbers are the bus's, with no gap, and reading
it needs no socket, key or running broker (a finished run reads the same way). Readers have
their own SQLite connections in WAL mode and never block the broker's writes. A reader only
keeps a read transaction for one chunk, so the broker's checkpoints are not held back.

An index reads CHUNK rows per call in a worker thread (never on the event loop) and wakes the
requests that wait for a sequence number. It reads only as far as it is asked (the first page
of a big run waits for one short read, not for the whole log), to the head when the overview
is asked for, and, while a page follows the run (an SSE stream is open), polls the log every
POLL seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgspec

from mlgym import log
from mlgym.bus.broker import LOG_FILE
from mlgym.bus.eventlog import LogCorrupt, LogReader
from mlgym.viewer.timeline import Timeline, decode_full

logger = log.get(__name__)

CHUNK = 4000  # rows per read in the worker thread
FIRST_CHUNK = 500  # the first read is short: a run's page shows its first rows after it
POLL = 0.05  # seconds between looks at the log's head while a page follows the run
_encode = msgspec.json.Encoder().encode


class RunIndex:
    """Summaries of one run's events (JSON, one per seq) and the run's totals so far."""

    def __init__(self, run_dir: Path, members: dict[str, str] | None = None):
        self.run_dir = run_dir
        self.path = run_dir / LOG_FILE
        self.timeline = Timeline(members=dict(members or {}))
        self.entries: list[bytes] = []  # entries[i] is the summary of seq first + i
        self.titles: list[str] = []  # ... and its title, lower case (search)
        self.first = 0
        self.head = 0  # the highest seq indexed
        self.caught_up = False  # the last read reached the log's head at that moment
        self.error = ""
        self.watchers = 0
        self._reader: LogReader | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._follower: asyncio.Task | None = None
        self._started = self._done = 0  # reads begun and finished (they run one at a time)
        self._wanted = 0  # the follower goes on until this read is done (see reach)
        self._target = 0  # ... and until this seq is indexed

    # ------------------------------------------------------------------ reading

    def _read_chunk(self) -> list[tuple[bytes, str]]:
        """Read up to CHUNK rows after the head (worker thread; calls are serialised by the
        lock). Returns the new summaries (JSON) with their titles in lower case."""
        if self._reader is None:
            if not self.path.exists():
                return []
            self._reader = LogReader(self.path)
        out: list[tuple[bytes, str]] = []
        limit = self._limit()
        try:
            for rows in self._reader.read(self.head + 1, limit=limit, chunk=limit):
                for row in rows:
                    if self.first == 0:
                        self.first = row[0]
                    elif row[0] != self.first + len(self.entries) + len(out):
                        # a hole in the log (rows dropped after a power loss): keep positions
                        while row[0] > self.first + len(self.entries) + len(out):
                            missing = self.first + len(self.entries) + len(out)
                            out.append(
                                (
                                    _encode(
                                        {
                                            "seq": missing,
                                            "kind": "missing",
                                            "lane": "?",
                                            "title": "not in the event log",
                                        }
                                    ),
                                    "",
                                )
                            )
                    summary = self.timeline.add(row)
                    out.append((_encode(summary), summary.get("title", "").lower()))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):  # else: the broker has not made its tables yet
                raise
        return out

    def _limit(self) -> int:
        return CHUNK if self.entries else FIRST_CHUNK

    async def extend(self) -> int:
        """Read once after the head; returns how many events were added."""
        async with self._lock:
            self._started += 1
            try:
                new = await asyncio.to_thread(self._read_chunk)
            except (sqlite3.Error, LogCorrupt, OSError) as exc:
                self.error = str(exc)
                logger.warning(
                    "viewer: cannot read the event log", path=str(self.path), error=self.error
                )
                new = []
            limit = self._limit()
            self.entries.extend(e for e, _ in new)
            self.titles.extend(t for _, t in new)
            self.head = self.first + len(self.entries) - 1 if self.entries else 0
            self.caught_up = len(new) < limit
            self._done = self._started
        async with self._changed:
            self._changed.notify_all()
        return len(new)

    async def catch_up(self) -> None:
        """Read until the head of the log as it is when this is called."""
        while True:
            await self.extend()
            if self.caught_up:
                return

    def start(self) -> None:
        """Make sure the follower task runs: it reads to the head, then polls the log while a
        page follows the run (`watchers`), and stops once nobody does."""
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(
                self._follow(), name=f"viewer-index:{self.run_dir.name}"
            )

    async def _follow(self) -> None:
        while True:
            await self.extend()
            if self.watchers > 0:
                if self.caught_up:
                    await asyncio.sleep(POLL)
                continue
            if self._done < self._wanted or (not self.caught_up and self.head < self._target):
                continue
            return

    def read_all(self) -> None:
        """Read to the log's head in the background."""
        self._target = 1 << 62
        self.start()

    async def reach(self, seq: int, timeout: float = 30.0) -> None:
        """Wait until `seq` is indexed, or a read that began after this call found the log's
        head before it (a seq past the head is not waited for)."""
        if self.head >= seq:
            return
        need = self._started + 1
        self._wanted = max(self._wanted, need)
        self._target = max(self._target, seq)
        self.start()
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(
                        lambda: self.head >= seq or (self._done >= need and self.caught_up)
                    ),
                    timeout,
                )

    async def wait_after(self, seq: int, timeout: float) -> None:
        """Wait until an event after `seq` is indexed, or `timeout` seconds."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.head > seq), timeout)

    # ------------------------------------------------------------------ serving

    def reading(self) -> asyncio.Lock:
        """Hold it to read the timeline's dicts: no read of the log runs meanwhile."""
        return self._lock

    async def overview(self) -> dict[str, Any]:
        """The run's totals and lists as of now (taken between two reads: the worker thread
        changes them while it reads)."""
        await self.catch_up()
        async with self.reading():
            return {
                **self.timeline.overview(),
                "head": self.head,
                "first": self.first or 1,
                "error": self.error,
            }

    def slice(self, from_seq: int, to_seq: int) -> list[bytes]:
        """Summaries with from_seq <= seq <= to_seq that are indexed."""
        if not self.entries:
            return []
        lo = max(from_seq, self.first) - self.first
        hi = min(to_seq, self.head) - self.first + 1
        return self.entries[lo:hi] if hi > lo else []

    def search(self, text: str, after: int, limit: int) -> tuple[list[int], int]:
        """(seqs of the first `limit` events after `after` whose title holds `text`, whatever
        their case, then from the start; how many match in all)."""
        needle = text.lower()
        hits = [i for i, t in enumerate(self.titles) if needle in t]
        cut = next((k for k, i in enumerate(hits) if self.first + i > after), len(hits))
        ordered = hits[cut:] + hits[:cut]
        return [self.first + i for i in ordered[:limit]], len(hits)

    def detail(self, seq: int) -> dict[str, Any] | None:
        """One event in full, read from the log (worker thread)."""
        reader = LogReader(self.path)
        try:
            for rows in reader.read(seq, seq, limit=1):
                for s, epoch, ts, topic, encoding, payload in rows:
                    env = decode_full(encoding, payload)
                    env.update(
                        seq=s,
                        epoch=epoch,
                        ts=ts,
                        topic=topic,
                        encoding=encoding,
                        bytes=len(payload),
                    )
                    return env
        finally:
            reader.close()
        return None

    def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class Indexes:
    """The indexes of the runs being looked at: at most `keep` of those nobody follows."""

    def __init__(self, keep: int = 6):
        self.keep = keep
        self._by_dir: OrderedDict[Path, RunIndex] = OrderedDict()

    def get(self, run_dir: Path, members: dict[str, str] | None = None) -> RunIndex:
        idx = self._by_dir.get(run_dir)
        if idx is None:
            idx = self._by_dir[run_dir] = RunIndex(run_dir, members)
        self._by_dir.move_to_end(run_dir)
        idle = [d for d, i in self._by_dir.items() if i.watchers <= 0 and d != run_dir]
        for d in idle[: max(0, len(idle) - self.keep)]:
            self._by_dir.pop(d).close()
        return idx

    def peek(self, run_dir: Path) -> RunIndex | None:
        return self._by_dir.get(run_dir)

    def close(self) -> None:
        for idx in self._by_dir.values():
            idx.close()
        self._by_dir.clear()
