"""`mlgym view [PATH]`: serve the web viewer for a run folder, a folder of runs or a sweep."""

from __future__ import annotations

import os
import webbrowser
from pathlib import Path

import click


@click.command()
@click.argument("path", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback requires the token in the URL.",
)
@click.option(
    "--port", default=0, type=click.IntRange(0, 65535), help="Port (default: a free one)."
)
@click.option(
    "--token",
    default=None,
    envvar="MLGYM_VIEW_TOKEN",
    help="The URL token (made up when --host is not loopback; give one to require it anyway).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the URL in a browser.")
def view(path: Path | None, host: str, port: int, token: str | None, open_browser: bool) -> None:
    """Watch runs in a browser: the run list, each run's agents as lanes with the messages
    between them, scores and budgets over time, artefacts, live while a run goes on
    (docs/viewer.md). PATH defaults to ./runs (or $MLGYM_RUNS)."""
    from mlgym.viewer.serve import prepare, serve

    root = path or Path(os.environ.get("MLGYM_RUNS") or Path.cwd() / "runs")
    if not root.is_dir():
        raise click.ClickException(
            f"no folder {root}: give a run folder, a folder of runs or a sweep folder"
        )
    try:
        served = prepare(str(root), host=host, port=port, token=token)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    click.echo(
        f"mlgym view: serving {root.resolve()} on {served.host}:{served.port} (Ctrl-C stops)",
        err=True,
    )
    click.echo(served.url, nl=True)
    if open_browser:
        webbrowser.open(served.url)
    serve(served)
