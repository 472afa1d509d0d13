"""What a literature provider is, and the chain that falls back from one provider to the next."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import msgspec

from mlgym import log

logger = log.get(__name__)


class Paper(msgspec.Struct, omit_defaults=True):
    title: str
    source: str  # provider name
    url: str = ""
    authors: list[str] = []
    year: int = 0
    abstract: str = ""
    snippet: str = ""  # the passage that matched, for offline search


class LiteratureError(RuntimeError):
    """Search failed in a way the agent should be told about (offline, rate-limited, bad input)."""


class Provider(abc.ABC):
    name: str = "provider"

    @abc.abstractmethod
    async def search(self, query: str, n: int = 5) -> list[Paper]:
        """Up to n papers for the query, best first."""


class FallbackChain(Provider):
    """Try providers in order; the first that finds papers wins. One that finds none, or fails,
    passes the query on to the next (a paper folder without the topic falls through to the
    online providers). No papers anywhere: an empty list if some provider answered, else one
    error that lists why each failed."""

    name = "chain"

    def __init__(self, providers: Sequence[Provider]):
        if not providers:
            raise ValueError("FallbackChain needs at least one provider")
        self.providers = list(providers)

    async def search(self, query: str, n: int = 5) -> list[Paper]:
        query = query.strip()
        if not query:
            raise LiteratureError("literature_search needs a query")
        if not 1 <= n <= 50:
            raise LiteratureError(f"n must be between 1 and 50, got {n}")
        failures = []
        for provider in self.providers:
            try:
                papers = await provider.search(query, n)
            except LiteratureError as exc:
                logger.info("literature provider failed, trying next", provider=provider.name, error=str(exc))
                failures.append(f"{provider.name}: {exc}")
                continue
            if papers:
                return papers
        if len(failures) < len(self.providers):
            return []
        raise LiteratureError("no literature provider could answer: " + "; ".join(failures))


def format_results(query: str, papers: Sequence[Paper]) -> str:
    """The observation an agent sees for `literature_search`."""
    if not papers:
        return f'No papers found for "{query}".'
    lines = [f'Found {len(papers)} papers for "{query}":']
    for i, p in enumerate(papers, 1):
        head = f"{i}. {p.title}"
        if p.year:
            head += f" ({p.year})"
        lines.append(head)
        if p.authors:
            lines.append("   Authors: " + ", ".join(p.authors[:6]) + (" et al." if len(p.authors) > 6 else ""))
        if p.url:
            lines.append(f"   URL: {p.url}")
        text = p.snippet or p.abstract
        if text:
            text = " ".join(text.split())
            lines.append("   " + (text[:600] + "..." if len(text) > 600 else text))
        lines.append(f"   [source: {p.source}]")
    return "\n".join(lines)
