"""`mlgym analyze RUN_DIR|RUNS_DIR [--out DIR] [--json] [--no-figures]`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec


@click.command("analyze")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the analysis here [default: PATH/analysis/; for a folder of runs, each "
    "run's own in RUN/analysis/].",
)
@click.option("--json", "as_json", is_flag=True, help="End with the analysis as one JSON line.")
@click.option("--no-figures", is_flag=True, help="Leave out the PNG and SVG figures.")
def analyze(path: Path, out: Path | None, as_json: bool, no_figures: bool) -> None:
    """How a team collaborated, from a run's event log alone: per member turns, tokens, dollars,
    steps, messages and time busy / waiting / blocked; the communication graph; who wrote the
    artefact behind each validation and the final submission; the first improvement over the
    baseline; wasted work. Given a folder of runs: the same for each, and a comparison by team
    design (score against tokens and wall clock, AUP per design). docs/teams.md."""
    from mlgym.agents.analyze import report, runs
    from mlgym.bus.broker import LOG_FILE

    if (path / LOG_FILE).is_file():
        a = runs.analyse_run(path)
        dest = out or path / report.ANALYSIS_DIR
        d = report.write_run(a, dest, figures=not no_figures)
        click.echo((dest / report.REPORT_FILE).read_text(), err=as_json)
        click.echo(f"written to {dest}", err=True)
        if as_json:
            click.echo(msgspec.json.encode(d).decode())
        return
    if not runs.find_runs(path):
        raise click.ClickException(f"{path} holds no run (no {LOG_FILE} in it or below it)")
    summary, problems = runs.analyse_folder(path, out, figures=not no_figures)
    for p in problems:
        click.echo(f"cannot analyse {p}", err=True)
    if summary["runs"]:
        click.echo(report.folder_markdown(summary), err=as_json)
        click.echo(f"written to {out or path / report.ANALYSIS_DIR}", err=True)
    if as_json:
        click.echo(msgspec.json.encode(summary).decode())
    if not summary["runs"]:
        sys.exit(1)
