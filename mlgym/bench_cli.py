"""`mlgym bench NAME`: runs bench/NAME.py from the repository, passing the remaining arguments.

The benchmarks are scripts (read them, copy them, run them with python) rather than library
code; this command only finds them."""

from __future__ import annotations

import runpy
import sys

import click

from mlgym.paths import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name: str, args: tuple[str, ...]) -> None:
    """Run a benchmark: bus, codec, env, tasks, agents, sweep or view. The last line printed
    is one JSON object."""
    script = BENCH_DIR / f"{name}.py"
    if not script.is_file():
        known = sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise click.ClickException(f"no benchmark {name!r} (known: {', '.join(known) or 'none'})")
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")
