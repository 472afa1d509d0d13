"""Query handling shared by the memory store and offline literature search, both SQLite FTS5
tables with the porter tokenizer (so "rates" finds "rate") and ranked by FTS5's bm25.

FTS5 has no stop-word list, so stop words are dropped from queries here: a query "tit for
tat" must not match every text that says "for". The index keeps them (phrases stay exact).

STOP_WORDS is a short list of English function words (articles, pronouns, prepositions,
conjunctions, auxiliary verbs, the contraction fragments "s", "t", "ll"...), written for this
module. It leaves out every content word on purpose: scikit-learn's list (a dependency here)
also drops words such as "system", "interest", "detail", "fire", "part" and "top", which
its own documentation warns about, and a research query needs them.

`relevance` turns bm25 into a score in [0, 1] (see its docstring and docs/agents.md).
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable, Sequence

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each either few for
from further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself neither no nor not of off on once only or other our
ours ourselves out over own same shall she should so some such than that the their theirs
them themselves then there these they this those through to too under until up upon very was
we were what when where which while who whom whose why will with within without would yet you
your yours yourself yourselves
s t d ll m re ve
""".split())

MAX_TERMS = 32  # a pasted paragraph as a query is cut to its first 32 distinct words
_WORD = re.compile(r"\w+")


def query_terms(text: str) -> list[str]:
    """The distinct words of a query, lower-cased, stop words dropped, in order. A query made
    of stop words only ("to be or not to be") keeps them all, rather than finding nothing."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    kept = [w for w in words if w not in STOP_WORDS] or words
    return kept[:MAX_TERMS]


def fts_any(terms: Sequence[str]) -> str:
    """An FTS5 query matching any of `terms`: each quoted, so punctuation and FTS5 operators
    in agent text (AND, NEAR, *, ^, column:) are plain words."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def min_should_match(n_terms: int) -> int:
    """How many of a query's n (non-stop) words a result must contain: all of one or two,
    then half, rounded up (3 -> 2, 4 -> 2, 5 -> 3). One shared word among three, such as
    "noise" in "gradient noise transformers", is not enough to be a result."""
    return n_terms if n_terms <= 2 else math.ceil(n_terms / 2)


def matched_terms(db: sqlite3.Connection, table: str, terms: Sequence[str],
                  rowids: Iterable[int]) -> dict[int, int]:
    """For each rowid, how many of `terms` its row contains (asked of FTS5 itself, one query
    per term, so the tokenizer's stemming applies exactly as in the ranking)."""
    ids = list(dict.fromkeys(rowids))
    hits = dict.fromkeys(ids, 0)
    if not ids:
        return hits
    marks = ",".join("?" * len(ids))
    sql = f"SELECT rowid FROM {table} WHERE {table} MATCH ? AND rowid IN ({marks})"
    for term in terms:
        for (rowid,) in db.execute(sql, (fts_any([term]), *ids)):
            hits[rowid] += 1
    return hits


def relevance(bm25: Sequence[float], coverage: Sequence[float]) -> list[float]:
    """Scores in [0, 1] for one search's results, from FTS5's bm25 values (negative, lower is
    better) and each result's coverage (the share of the query's words it contains):

        relevance = coverage * (bm25 / best bm25 of this search)

    1.0 is the best match of the search when it holds every query word; a result with half
    the words and half the best one's bm25 gets 0.25. The bm25 ratio only compares results of
    one search; coverage means the same in every search. (FTS5 clamps the weight of a word
    found in half or more of the rows to almost zero, so in a store of a few notes raw bm25 is
    ~0 everywhere: the ratio stays meaningful there, the raw value does not.)"""
    best = min(bm25, default=0.0)
    out = []
    for b, c in zip(bm25, coverage):
        ratio = b / best if best < 0 else 1.0
        out.append(round(max(0.0, min(1.0, c * ratio)), 4))
    return out
