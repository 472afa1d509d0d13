"""The research commands an agent runs itself, outside the environment: shared memory (the
"memory" RPC service) and literature search (tools/literature). Their output is what the
agent sees, so failures become readable observations, never exceptions."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from mlgym import paths
from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.tools import literature as lit

NOTES_DIR = Path(__file__).resolve().parent / "papers"  # short offline notes, used when no paper folder is set
MAX_PDF_CHARS = 12_000


class Research:
    def __init__(self, *, memory: RpcClient | None, task: str, author: str, role: str):
        self.memory = memory
        self.task = task
        self.author = author
        self.role = role
        self._provider: lit.Provider | None = None
        self.sources: list[str] = []  # links seen in searches, cited in answers

    # ------------------------------------------------------------------ memory

    async def memory_write(self, text: str) -> tuple[str, int]:
        if self.memory is None:
            return "Error: no memory service in this run.", 1
        try:
            reply = await self.memory.request("memory", P.MemoryWrite(text=text, tags=[self.role], author=self.author,
                                                                      task=self.task), timeout=30)
        except (RpcError, TimeoutError) as exc:
            return f"Error: the memory service failed: {exc}", 1
        assert isinstance(reply, P.MemoryWritten)
        if reply.count > 1:
            return (f"The shared memory already had this note (entry {reply.memory_id}); merged: "
                    f"written {reply.count} times now."), 0
        return f"Saved to the shared memory (entry {reply.memory_id}).", 0

    async def memory_read(self, query: str, k: int = 5) -> tuple[str, int]:
        if self.memory is None:
            return "Error: no memory service in this run.", 1
        try:
            reply = await self.memory.request("memory", P.MemorySearch(query=query, k=k, task=self.task), timeout=30)
        except (RpcError, TimeoutError) as exc:
            return f"Error: the memory service failed: {exc}", 1
        assert isinstance(reply, P.MemoryHits)
        if not reply.hits:
            return f'No memory entries match "{query}".', 0
        lines = [f'{len(reply.hits)} memory entries for "{query}":']
        for h in reply.hits:
            seen = f", written {h.count}x" if h.count > 1 else ""
            who = h.author or "unknown"
            lines.append(f"[{h.memory_id}] (relevance {h.score:.2f}, {who}{seen}) {h.text}")
        return "\n".join(lines), 0

    # ------------------------------------------------------------------ literature

    def provider(self) -> lit.Provider:
        """The paper folder ($MLGYM_PAPERS, else the shipped notes) first, then the online
        providers unless MLGYM_OFFLINE=1. The folder's index lives under ~/.mlgym."""
        if self._provider is None:
            folder = Path(os.environ.get("MLGYM_PAPERS") or NOTES_DIR)
            digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
            index = paths.home() / "literature" / f"index-{digest}.sqlite"
            index.parent.mkdir(parents=True, exist_ok=True)
            providers: list[lit.Provider] = [lit.OfflineProvider(folder, index_path=index)]
            if os.environ.get("MLGYM_OFFLINE") != "1":
                cache = lit.ResultCache()
                providers += [lit.OpenAlexProvider(cache=cache), lit.SemanticScholarProvider(cache=cache),
                              lit.ArxivProvider(cache=cache)]
            self._provider = lit.FallbackChain(providers)
        return self._provider

    async def literature_search(self, query: str, n: int = 5) -> tuple[str, int]:
        try:
            papers = await self.provider().search(query, max(1, min(n, 20)))
        except lit.LiteratureError as exc:
            return f"Error: literature search failed: {exc}", 1
        self.sources += [p.url or p.title for p in papers]
        return lit.format_results(query, papers), 0

    async def parse_pdf_url(self, url: str) -> tuple[str, int]:
        if not url.startswith(("http://", "https://")):
            local = Path(url)
            folder = Path(os.environ.get("MLGYM_PAPERS") or NOTES_DIR).resolve()
            if not local.resolve().is_relative_to(folder):
                return f"Error: only http(s) URLs or files in the paper folder ({folder}) can be read.", 1
        try:
            text = await asyncio.wait_for(lit.parse_pdf(url), 120)
        except lit.LiteratureError as exc:
            return f"Error: {exc}", 1
        except TimeoutError:
            return f"Error: reading {url} took too long.", 1
        if len(text) > MAX_PDF_CHARS:
            text = text[:MAX_PDF_CHARS] + f"\n[... {len(text) - MAX_PDF_CHARS} more characters not shown]"
        return text, 0
