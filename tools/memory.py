"""The team's shared memory: notes written by agents, searched by BM25 (SQLite FTS5).

Kept per task across runs (one SQLite file, rows tagged with their task), so what one run
learned is there for the next. No model is downloaded: ranking is FTS5's built-in BM25.
An optional embedding re-ranker can be plugged in with `embed=`, any callable mapping texts to
vectors (for example a sentence-transformers model that is already on disk).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mlgym import paths
from mlgym.bus.protocol import MemoryHit

Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]

def default_db() -> Path:
    """The per-user store (~/.mlgym/memory.sqlite, or under MLGYM_HOME): what `mlgym memory`
    serves and searches, and what `mlgym run --memory shared` gives a team."""
    return paths.home() / "memory.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories(
  id INTEGER PRIMARY KEY, task TEXT NOT NULL, author TEXT NOT NULL, tags TEXT NOT NULL,
  text TEXT NOT NULL, created REAL NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
  text, tags, content='memories', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
  INSERT INTO memories_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
"""

MAX_TEXT = 64 * 1024


class MemoryInputError(ValueError):
    """Bad input to the memory store (empty text, text too long, bad k)."""


def _fts_query(query: str) -> str:
    """Turn free text into an FTS5 query: each word quoted (so punctuation and FTS operators in
    agent text cannot break the syntax), OR-ed so partial matches still rank."""
    words = re.findall(r"\w+", query.lower())
    return " OR ".join(f'"{w}"' for w in words)


class MemoryStore:
    """Thread-safe store; the memory service calls it from worker threads."""

    def __init__(self, path: str | Path, *, embed: Embedder | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._embed = embed

    def write(self, text: str, *, tags: Sequence[str] = (), author: str = "", task: str = "") -> int:
        text = text.strip()
        if not text:
            raise MemoryInputError("memory_write needs some text")
        if len(text) > MAX_TEXT:
            raise MemoryInputError(f"memory text is {len(text)} characters; the limit is {MAX_TEXT}")
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO memories(task, author, tags, text, created) VALUES (?,?,?,?,?)",
                (task, author, " ".join(tags), text, time.time()),
            )
            return int(cur.lastrowid)

    def search(self, query: str, k: int = 5, *, task: str = "") -> list[MemoryHit]:
        """Best k memories for `query` (BM25; higher score is better). With `task`, only that
        task's memories."""
        if k < 1 or k > 100:
            raise MemoryInputError(f"k must be between 1 and 100, got {k}")
        fts = _fts_query(query)
        if not fts:
            return []
        sql = (
            "SELECT m.id, m.text, m.tags, m.author, -bm25(memories_fts) AS score, m.created "
            "FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid "
            "WHERE memories_fts MATCH ? " + ("AND m.task = ? " if task else "") +
            "ORDER BY bm25(memories_fts) LIMIT ?"
        )
        args: tuple = (fts, task, k * (4 if self._embed else 1)) if task else (fts, k * (4 if self._embed else 1))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        hits = [
            MemoryHit(memory_id=r[0], text=r[1], tags=r[2].split(), author=r[3], score=float(r[4]), created=r[5])
            for r in rows
        ]
        if self._embed and hits:
            hits = self._rerank(query, hits)
        return hits[:k]

    def _rerank(self, query: str, hits: list[MemoryHit]) -> list[MemoryHit]:
        vectors = self._embed([query, *(h.text for h in hits)])  # type: ignore[misc]
        q = vectors[0]

        def cos(a: Sequence[float], b: Sequence[float]) -> float:
            dot = sum(x * y for x, y in zip(a, b))
            na = sum(x * x for x in a) ** 0.5
            nb = sum(y * y for y in b) ** 0.5
            return dot / (na * nb) if na and nb else 0.0

        scored = [(cos(q, v), h) for v, h in zip(vectors[1:], hits)]
        scored.sort(key=lambda p: p[0], reverse=True)
        return [MemoryHit(h.memory_id, h.text, h.tags, h.author, s, h.created) for s, h in scored]

    def count(self, task: str = "") -> int:
        with self._lock:
            if task:
                return self._db.execute("SELECT count(*) FROM memories WHERE task=?", (task,)).fetchone()[0]
            return self._db.execute("SELECT count(*) FROM memories").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
