"""`mlgym sweep plan|run|status|report`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlgym.sweep.spec import SweepError


def _plan(path: Path, out: Path | None, limit: int | None = None):
    """A sweep file, or a sweep folder (its plan's sweep file, re-read)."""
    from mlgym.sweep import spec
    from mlgym.sweep.folder import COPY_FILE, Folder

    try:
        if path.is_dir():
            old = Folder(path).load_plan()
            source = Path(old.source) if Path(old.source).is_file() else path / COPY_FILE
            return spec.plan(source, out or path, limit)
        return spec.plan(path, out, limit)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def sweep() -> None:
    """Grids of runs: team designs x models x tasks x seeds, in parallel, resumable, on this
    machine or a Ray cluster (docs/sweeps.md)."""


@sweep.command("plan")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The sweep folder [default: the file's `out`, else sweeps/<name>].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N runs of the plan (seed-major: every cell of the table once "
                   "before any second seed); a smoke test before the whole sweep.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the runs and the totals.")
def plan_cmd(file: Path, out: Path | None, limit: int | None, as_json: bool) -> None:
    """The runs FILE expands to, with their ids, and an estimate of the cost where prices are
    known (tokens per step from the file's [estimate]; capped by each run's dollar budget)."""
    from mlgym.agents.progress import dollars

    p = _plan(file, out, limit)
    known = [r.est_usd for r in p.runs if r.est_usd is not None]
    unknown = sum(r.est_usd is None for r in p.runs)
    cap = sum(r.dollars_cap for r in p.runs if r.est_usd != 0.0)  # free models cost nothing
    totals = {"runs": len(p.runs), "est_usd": round(sum(known), 4), "unpriced_runs": unknown,
              "cap_usd": round(cap, 2), "tasks": len({r.task for r in p.runs}),
              "designs": len({r.design for r in p.runs}), "models": len({r.models for r in p.runs})}
    if as_json:
        click.echo(json.dumps({"sweep": p.sweep.name, "out": p.out, "totals": totals,
                               "runs": [{"id": r.id, "task": r.task, "design": r.design, "models": r.models,
                                         "seed": r.seed, "repeat": r.repeat, "est_usd": r.est_usd,
                                         "resources": r.resources} for r in p.runs]}))
        return
    width = max(len(r.id) for r in p.runs)
    click.echo(f"{'run id':<{width}}  {'task':<28} {'design':<10} {'models':<20} seed rep  est $")
    for r in p.runs:
        est = "?" if r.est_usd is None else dollars(r.est_usd)
        click.echo(f"{r.id:<{width}}  {r.task:<28} {r.design:<10} {r.models:<20} {r.seed:>4} {r.repeat:>3}  {est}")
    click.echo(f"\n{totals['runs']} runs ({totals['tasks']} tasks x {totals['designs']} designs x "
               f"{totals['models']} model sets x seeds x repeats) -> {p.out}")
    click.echo(f"estimated cost ${dollars(totals['est_usd'])}"
               + (f" + {unknown} run(s) with models of unknown price" if unknown else "")
               + (f"; at most ${dollars(cap)} (the runs' dollar budgets)" if cap else ""))


@sweep.command("run")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="__file__", metavar="auto|ADDRESS|local",
              help="Run on a Ray cluster: `auto` (the one this machine belongs to), an address "
                   "(HOST:PORT or ray://HOST:10001), or `local` (a private one-node cluster). "
                   "Bare --ray: the file's [ray] address, else auto.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Runs at once [default: the file's; with --ray, the cluster's CPUs / CPUs per run].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The sweep folder [default: the file's `out`, else sweeps/<name>].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N runs of the plan (seed-major: every cell of the table once "
                   "before any second seed); a smoke test before the whole sweep.")
@click.option("--force", is_flag=True, help="Go on although finished runs were made with other settings.")
@click.option("--no-progress", is_flag=True, help="No live table (the finished lines only).")
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--json", "as_json", is_flag=True, help="End with the summary as one JSON line.")
def run_cmd(file: Path, ray_address: str | None, concurrency: int | None, out: Path | None, limit: int | None,
            force: bool, no_progress: bool, no_report: bool, as_json: bool) -> None:
    """Run the sweep FILE (or go on with a sweep folder): finished runs are skipped, stopped ones
    resumed, infrastructure failures retried. Ctrl-C stops cleanly; run it again to go on."""
    from mlgym.sweep.executors import LocalExecutor
    from mlgym.sweep.progress import SweepProgress
    from mlgym.sweep.runner import Sweep

    p = _plan(file, out, limit)
    try:
        if ray_address is not None:
            from mlgym.sweep.ray_exec import RayExecutor

            address = (p.sweep.ray.address or "auto") if ray_address == "__file__" else ray_address
            executor = RayExecutor(address, storage=p.sweep.ray.storage, concurrency=concurrency,
                                   cpus_per_run=max(r.resources["cpus"] for r in p.runs))
        else:
            executor = LocalExecutor(concurrency or p.sweep.concurrency)
        progress = SweepProgress(p.sweep.name, executor.name, live=not no_progress)
        summary = Sweep(p, executor, progress, force=force).run()
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sweep {summary['sweep']}: {summary['done']}/{summary['runs']} done, {summary['failed']} failed, "
               f"{summary['remaining']} remaining, {summary['retries']} retries, {summary['seconds']:.0f} s, "
               f"${summary['spend_usd']:.4f} -> {summary['dir']}", err=True)
    if summary["interrupted"]:
        click.echo(f"stopped; go on with: mlgym sweep run {file}", err=True)
    elif not no_report and summary["done"]:
        from mlgym.sweep.report import write_report

        rep = write_report(Path(summary["dir"]))
        summary["report"] = rep["report"]
        click.echo(f"report: {rep['report']}", err=True)
    if as_json:
        click.echo(json.dumps(summary))
    if summary["interrupted"]:
        sys.exit(130)
    if summary["failed"] or summary["remaining"]:
        sys.exit(1)


@sweep.command("status")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def status_cmd(folder: Path, as_json: bool) -> None:
    """Where each run of a sweep folder stands: done, failed, stopped (resumable) or to do."""
    from mlgym.sweep.report import run_table

    try:
        rows = run_table(folder)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rows))
        return
    width = max((len(r["id"]) for r in rows), default=6)
    for r in rows:
        score = "" if r["score"] is None else f"{r['score']:.4g}"
        click.echo(f"{r['id']:<{width}}  {r['state']:<8} {r['attempts']:>2} tries  {score:>9}  {r['reason']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    click.echo(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@sweep.command("report")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="End with the numbers as one JSON line.")
def report_cmd(folder: Path, as_json: bool) -> None:
    """`mlgym score` over the sweep's finished runs (one method per design x model set) and a
    Markdown report with the tables and plots, in FOLDER/report/."""
    from mlgym.sweep.report import write_report

    try:
        rep = write_report(folder)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(Path(rep["report"]).read_text())
    if as_json:
        click.echo(json.dumps(rep))
