"""Offline literature search over a local folder of papers (PDF, Markdown, text), indexed with
SQLite FTS5 (porter stemming; title, abstract and body columns, bm25 with column weights) and
re-indexed only for files whose size or mtime changed. Queries drop stop words and a paper must
hold enough of the remaining words (tools/ranking.py)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from pypdf import PdfReader

from mlgym import log
from mlgym.tools import ranking

from .base import LiteratureError, Paper, Provider

logger = log.get(__name__)

SUFFIXES = {".pdf", ".md", ".markdown", ".txt"}
MAX_CHARS = 2_000_000  # per document: enough for any paper, bounded for hostile files

# Version 2 added the abstract column; an index of another version is rebuilt from the files.
INDEX_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs(path TEXT PRIMARY KEY, mtime REAL, size INTEGER, title TEXT);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(
  path UNINDEXED, title, abstract, body, tokenize='porter unicode61');
"""
# bm25 column weights (path, title, abstract, body): FTS5 multiplies a word's count in each
# column by the column's weight before bm25's saturation, so one mention in the title counts as
# ten in the body and one in the abstract as five. Every chunk row of a paper holds the paper's
# title and abstract, so they choose the paper and the body chooses the passage shown. (With
# 5 and 3, a short body that repeats a word still beat a paper with it in title or abstract.)
WEIGHTS = (0.0, 10.0, 5.0, 1.0)
MAX_ABSTRACT = 2000


def extract_text(path: Path) -> str:
    """Plain text of a PDF (pypdf), Markdown or text file."""
    if path.suffix.lower() == ".pdf":
        reader = PdfReader(str(path))
        parts, total = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            parts.append(text)
            total += len(text)
            if total > MAX_CHARS:
                break
        return "\n".join(parts)[:MAX_CHARS]
    return path.read_text(errors="replace")[:MAX_CHARS]


def _title(path: Path, text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if len(line) > 3:
            return line[:200]
    return path.stem


_ABSTRACT_HEAD = re.compile(r"^\W*abstract\b[\s.:\u2014\u2013-]*", re.I | re.M)
_SECTION = re.compile(
    r"^\s*(?:#+\s*|\d+\.?\s+|[IVX]+\.\s+)?(?:introduction|keywords|index terms)\b", re.I | re.M)


def _abstract(text: str, title: str) -> str:
    """A paper's abstract: the text after an "Abstract" heading (or "Abstract -" lead-in) up
    to the introduction or the next heading; without one, the first paragraph after the title
    (a note's lead paragraph). Bounded to MAX_ABSTRACT characters."""
    head = _ABSTRACT_HEAD.search(text[:20_000])
    if head:
        rest = text[head.end():head.end() + 4 * MAX_ABSTRACT]
        end = _SECTION.search(rest)
        rest = rest[:end.start()] if end else rest
        md_heading = re.search(r"^\s*#", rest, re.M)
        rest = rest[:md_heading.start()] if md_heading else rest
        return " ".join(rest.split())[:MAX_ABSTRACT]
    paras = [p.strip() for p in re.split(r"\n\s*\n", text[:20_000]) if p.strip()]
    for para in paras:
        flat = " ".join(para.split())
        if flat.lstrip("#").strip() != title and not para.lstrip().startswith("#"):
            return flat[:MAX_ABSTRACT]
    return ""


def _chunks(text: str, size: int = 1500) -> list[str]:
    paras = re.split(r"\n\s*\n", text)
    out, cur = [], ""
    for p in paras:
        if len(cur) + len(p) > size and cur:
            out.append(cur)
            cur = ""
        cur += p.strip() + "\n\n"
    if cur.strip():
        out.append(cur)
    return out


class OfflineProvider(Provider):
    name = "offline"

    def __init__(self, folder: str | Path, index_path: str | Path | None = None):
        self.folder = Path(folder).expanduser()
        self.index_path = Path(index_path) if index_path else self.folder / ".mlgym-index.sqlite"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path)
        if db.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
            with db:  # an index from another version: start again, the files are the truth
                db.executescript("DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS docs;")
                db.execute(f"PRAGMA user_version={INDEX_VERSION}")
        db.executescript(_SCHEMA)
        return db

    def index(self) -> int:
        """(Re)index changed files; returns how many files were (re)indexed."""
        if not self.folder.is_dir():
            raise LiteratureError(f"paper folder {self.folder} does not exist")
        db = self._connect()
        changed = 0
        try:
            known = {r[0]: (r[1], r[2]) for r in db.execute("SELECT path, mtime, size FROM docs")}
            seen = set()
            for path in sorted(self.folder.rglob("*")):
                if path.suffix.lower() not in SUFFIXES or not path.is_file() or path.name.startswith("."):
                    continue
                st = path.stat()
                key = str(path)
                seen.add(key)
                if known.get(key) == (st.st_mtime, st.st_size):
                    continue
                try:
                    text = extract_text(path)
                except Exception as exc:  # a broken PDF must not stop the index
                    logger.warning("cannot read paper", path=key, error=str(exc))
                    continue
                title = _title(path, text)
                abstract = _abstract(text, title)
                with db:
                    db.execute("DELETE FROM chunks WHERE path=?", (key,))
                    db.executemany(
                        "INSERT INTO chunks(path, title, abstract, body) VALUES (?,?,?,?)",
                        [(key, title, abstract, c) for c in _chunks(text)],
                    )
                    db.execute("INSERT OR REPLACE INTO docs VALUES (?,?,?,?)", (key, st.st_mtime, st.st_size, title))
                changed += 1
            for gone in set(known) - seen:
                with db:
                    db.execute("DELETE FROM chunks WHERE path=?", (gone,))
                    db.execute("DELETE FROM docs WHERE path=?", (gone,))
        finally:
            db.close()
        return changed

    def _search(self, query: str, n: int) -> list[Paper]:
        """Papers ranked by bm25 (title, abstract and body weighted, see WEIGHTS) over the
        query's words less stop words (tools/ranking.py); a paper must hold enough of them
        (ranking.min_should_match), so one common word shared with the query is not a hit."""
        self.index()
        terms = ranking.query_terms(query)
        if not terms:
            return []
        weights = ", ".join(str(w) for w in WEIGHTS)
        db = self._connect()
        try:
            rows = db.execute(
                f"SELECT rowid, path, title, abstract, snippet(chunks, 3, '', '', ' ... ', 48), "
                f"bm25(chunks, {weights}) AS rank FROM chunks WHERE chunks MATCH ? "
                "ORDER BY rank LIMIT ?",
                (ranking.fts_any(terms), n * 16),
            ).fetchall()
            matched = ranking.matched_terms(db, "chunks", terms, [r[0] for r in rows])
        finally:
            db.close()
        need = ranking.min_should_match(len(terms))
        best: dict[str, Paper] = {}
        for rowid, path, title, abstract, snippet, _rank in rows:  # best chunk per document
            if path in best or matched[rowid] < need:
                continue
            best[path] = Paper(title=title, source=self.name, url=Path(path).as_uri(),
                               abstract=abstract, snippet=snippet)
            if len(best) == n:
                break
        return list(best.values())

    async def search(self, query: str, n: int = 5) -> list[Paper]:
        return await asyncio.to_thread(self._search, query, n)
