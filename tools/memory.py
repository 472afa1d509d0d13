"""The team's shared memory: notes written by agents, searched by BM25 (SQLite FTS5).

Kept per task across runs (one SQLite file, rows tagged with their task), so what one run
learned is there for the next. A note that is already there (the same words, or nearly:
see `near_duplicate`) is merged into the existing entry instead of stored again: its count goes
up, its author joins the entry's sources and its tags are added, so repeated findings do not
crowd the top of a search. Search ranks with FTS5's bm25 and reports a relevance in [0, 1]
(tools/ranking.py). No model is downloaded. An optional embedding re-ranker can be plugged in
with `embed=`, any callable mapping texts to vectors (for example a sentence-transformers
model that is already on disk); its scores are then cosine similarities.
"""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from mlgym import paths
from mlgym.bus.protocol import MemoryHit
from mlgym.tools import ranking

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
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, text, tags)
    VALUES ('delete', old.id, old.text, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF text, tags ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, text, tags)
    VALUES ('delete', old.id, old.text, old.tags);
  INSERT INTO memories_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
"""
# Added in version 2 (stores of version 1 are migrated on open; their exact duplicates merged).
_COLUMNS_V2 = {"norm": "TEXT NOT NULL DEFAULT ''", "count": "INTEGER NOT NULL DEFAULT 1",
               "sources": "TEXT NOT NULL DEFAULT '[]'", "updated": "REAL NOT NULL DEFAULT 0"}

MAX_TEXT = 64 * 1024
NEAR_RATIO = 0.9  # difflib word-sequence similarity at which two notes are the same note
NEAR_CANDIDATES = 8  # how many of the best FTS matches a new note is compared with


class MemoryInputError(ValueError):
    """Bad input to the memory store (empty text, text too long, bad k)."""


def normalise(text: str) -> str:
    """The words of a note, lower-cased, single-spaced: case, punctuation and spacing do not
    make two notes different."""
    return " ".join(re.findall(r"\w+", text.lower()))


def near_duplicate(a: str, b: str) -> bool:
    """Two normalised notes say the same thing: their word sequences are at least 90% alike
    (difflib) AND they hold the same numbers in the same order ("lr 3e-4 scored 0.61" and
    "lr 3e-4 scored 0.66" are two findings, however alike the words)."""
    if a == b:
        return True
    wa, wb = a.split(), b.split()
    if [w for w in wa if w[0].isdigit()] != [w for w in wb if w[0].isdigit()]:
        return False
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    return matcher.real_quick_ratio() >= NEAR_RATIO and matcher.ratio() >= NEAR_RATIO


class MemoryStore:
    """Thread-safe store; the memory service calls it from worker threads."""

    def __init__(self, path: str | Path, *, embed: Embedder | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)
            self._migrate()
        self._embed = embed

    def _migrate(self) -> None:
        have = {r[1] for r in self._db.execute("PRAGMA table_info(memories)")}
        missing = {k: v for k, v in _COLUMNS_V2.items() if k not in have}
        for name, decl in missing.items():
            self._db.execute(f"ALTER TABLE memories ADD COLUMN {name} {decl}")
        self._db.execute("CREATE INDEX IF NOT EXISTS memories_norm ON memories(task, norm)")
        if not missing:
            return
        rows = self._db.execute("SELECT id, task, author, tags, text, created FROM memories "
                                "ORDER BY id").fetchall()
        first: dict[tuple[str, str], int] = {}
        for mid, task, author, tags, text, created in rows:
            norm = normalise(text)
            keep = first.get((task, norm))
            if keep is None:
                first[(task, norm)] = mid
                self._db.execute("UPDATE memories SET norm=?, sources=?, updated=? WHERE id=?",
                                 (norm, json.dumps([author] if author else []), created, mid))
            else:
                self._merge(keep, author, tags.split(), created)
                self._db.execute("DELETE FROM memories WHERE id=?", (mid,))

    def write(self, text: str, *, tags: Sequence[str] = (), author: str = "",
              task: str = "") -> tuple[int, int]:
        """Store a note, or merge it into the same note already stored for `task`. Returns
        (memory id, how many times the note has now been written: 1 for a new entry)."""
        text = text.strip()
        if not text:
            raise MemoryInputError("memory_write needs some text")
        if len(text) > MAX_TEXT:
            raise MemoryInputError(f"memory text is {len(text)} characters; the limit is {MAX_TEXT}")
        norm = normalise(text)
        now = time.time()
        with self._lock, self._db:
            same = self._find_same(task, norm)
            if same is not None:
                return same, self._merge(same, author, tags, now)
            cur = self._db.execute(
                "INSERT INTO memories(task, author, tags, text, created, norm, count, sources, "
                "updated) VALUES (?,?,?,?,?,?,1,?,?)",
                (task, author, " ".join(dict.fromkeys(tags)), text, now, norm,
                 json.dumps([author] if author else []), now),
            )
            return int(cur.lastrowid), 1  # type: ignore[arg-type]

    def _find_same(self, task: str, norm: str) -> int | None:
        row = self._db.execute("SELECT id FROM memories WHERE task=? AND norm=? LIMIT 1",
                               (task, norm)).fetchone()
        if row is not None:
            return int(row[0])
        if not norm:
            return None
        terms = ranking.query_terms(norm)
        candidates = self._db.execute(
            "SELECT m.id, m.norm FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid "
            "WHERE memories_fts MATCH ? AND m.task = ? ORDER BY bm25(memories_fts) LIMIT ?",
            (ranking.fts_any(terms), task, NEAR_CANDIDATES)).fetchall()
        return next((int(mid) for mid, other in candidates if near_duplicate(norm, other)), None)

    def _merge(self, mid: int, author: str, tags: Sequence[str], when: float) -> int:
        old_tags, sources, count = self._db.execute(
            "SELECT tags, sources, count FROM memories WHERE id=?", (mid,)).fetchone()
        sources = json.loads(sources)
        if author and author not in sources:
            sources.append(author)
        merged_tags = " ".join(dict.fromkeys([*old_tags.split(), *tags]))
        self._db.execute("UPDATE memories SET count=count+1, sources=?, updated=?, tags=? "
                         "WHERE id=?", (json.dumps(sources), when, merged_tags, mid))
        return int(count) + 1

    def search(self, query: str, k: int = 5, *, task: str = "") -> list[MemoryHit]:
        """Best k memories for `query`, best first, with `score` the relevance in [0, 1]
        (tools/ranking.py: coverage of the query's words x bm25 relative to the best hit) and
        `bm25` FTS5's raw value. With `task`, only that task's memories."""
        if k < 1 or k > 100:
            raise MemoryInputError(f"k must be between 1 and 100, got {k}")
        terms = ranking.query_terms(query)
        if not terms:
            return []
        limit = k * (4 if self._embed else 1)
        sql = (
            "SELECT m.id, m.text, m.tags, m.author, bm25(memories_fts), m.created, m.count, "
            "m.sources FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid "
            "WHERE memories_fts MATCH ? " + ("AND m.task = ? " if task else "")
            + "ORDER BY bm25(memories_fts) LIMIT ?"
        )
        args = (ranking.fts_any(terms), *((task,) if task else ()), limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            matched = ranking.matched_terms(self._db, "memories_fts", terms, [r[0] for r in rows])
        scores = ranking.relevance([r[4] for r in rows],
                                   [matched[r[0]] / len(terms) for r in rows])
        hits = [
            MemoryHit(memory_id=r[0], text=r[1], tags=r[2].split(), author=r[3], score=s,
                      created=r[5], count=r[6], sources=json.loads(r[7]), bm25=r[4])
            for r, s in zip(rows, scores)
        ]
        hits.sort(key=lambda h: (-h.score, h.bm25))
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
        return [msgspec.structs.replace(h, score=s) for s, h in scored]

    def count(self, task: str = "") -> int:
        """How many entries (a merged note counts once)."""
        return self._one("SELECT count(*) FROM memories", task)

    def writes(self, task: str = "") -> int:
        """How many notes were written, merged ones included."""
        return self._one("SELECT coalesce(sum(count), 0) FROM memories", task)

    def _one(self, sql: str, task: str) -> int:
        with self._lock:
            if task:
                return int(self._db.execute(sql + " WHERE task=?", (task,)).fetchone()[0])
            return int(self._db.execute(sql).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
