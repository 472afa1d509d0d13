"""`mlgym memory ...`: the shared-memory service and a way to look inside it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from mlgym import paths
from mlgym.tools.memory import default_db


@click.group()
def memory() -> None:
    """The team's shared memory (SQLite FTS5, kept per task across runs)."""


@memory.command("serve")
@click.option("--endpoint", default=None, help="ZeroMQ endpoint to bind (default ipc://~/.mlgym/memory.sock).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite file (default ~/.mlgym/memory.sqlite).")
def serve(endpoint: str | None, db: Path | None) -> None:
    """Serve memory_write / memory_read over the wire protocol until interrupted."""
    from mlgym.tools.memory_service import run_memory

    endpoint = endpoint or f"ipc://{paths.home()}/memory.sock"
    click.echo(f"memory service on {endpoint}", err=True)
    try:
        asyncio.run(run_memory(endpoint, db or default_db()))
    except KeyboardInterrupt:
        pass


@memory.command("search")
@click.argument("query")
@click.option("-k", default=5, show_default=True)
@click.option("--task", default="", help="Only this task's memories.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None)
def search(query: str, k: int, task: str, db: Path | None) -> None:
    """Search the memory file directly (no service needed): relevance, times written, sources,
    tags, text."""
    from mlgym.tools.memory import MemoryStore

    store = MemoryStore(db or default_db())
    hits = store.search(query, k, task=task)
    if not hits:
        click.echo(f'no memory entries match "{query}"')
        return
    click.echo("# [id] relevance xN (sources; tags) text -- relevance in [0, 1]: share of the "
               "query's words the entry holds x its bm25 relative to the best hit; xN: written "
               "N times (merged)")
    for hit in hits:
        sources = ",".join(hit.sources) or hit.author or "?"
        click.echo(f"[{hit.memory_id}] {hit.score:.2f} x{hit.count} ({sources}; "
                   f"{' '.join(hit.tags)}) {hit.text}")
