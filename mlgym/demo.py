"""`mlgym demo`: the default team (planner, coder, literature agent) with the offline scripted
model on a lite task, end to end: broker, environment server, memory service, one process per
agent, real evaluations. Prints the score against the baseline; the last line is one JSON
object (task, score, baseline, seconds, run_dir, view: the `mlgym view` command that shows the
run in a browser, ...). The bus-only demo is `mlgym bus demo`."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path

import click


@click.command()
@click.option("--task", default="prisonersDilemma", show_default=True, help="A task with a scripted policy.")
@click.option("--team", default="default", show_default=True)
@click.option("--model", default="scripted:auto", show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the run (default runs/<run id>).")
@click.option("--progress/--no-progress", default=None, help="Live table (default: on a terminal).")
def demo(task: str, team: str, model: str, run_dir: Path | None, progress: bool | None) -> None:
    """Run the default agent team offline on a lite task (well under a minute)."""
    from mlgym.agents import config as C
    from mlgym.agents.supervisor import RunError, run_team

    os.environ.setdefault("MLGYM_OFFLINE", "1")  # the agents inherit it: no network at all
    cfg = C.override_models(C.load_team(team), model)
    started = time.monotonic()
    try:
        result = asyncio.run(run_team(task, cfg, run_dir=run_dir,
                                      progress=sys.stderr.isatty() if progress is None else progress))
    except RunError as exc:
        raise click.ClickException(str(exc)) from None
    seconds = round(time.monotonic() - started, 2)
    metric = result["metric"]["name"]
    direction = result["metric"]["direction"]
    score = ((result.get("final_submission") or {}).get("scores") or {}).get(metric)
    baseline = (result.get("baseline") or {}).get(metric)
    beat = score is not None and baseline is not None and (score > baseline if direction == "max" else score < baseline)
    click.echo(f"{task}: team `{cfg.name}` submitted {metric} = {score} against the baseline {baseline} "
               f"({'better' if beat else 'NOT better'}; {result['steps']} steps, {seconds} s)")
    for name, a in result["agents"].items():
        click.echo(f"  {name:<11} {a['role']:<10} turns {a['turns']:>3}  env steps {a['env_steps']:>3}  "
                   f"tokens {a['tokens']:>7}")
    click.echo(f"  run directory: {result['run_dir']}  (events.sqlite, result.json, trajectories/)")
    view = f"mlgym view {shlex.quote(result['run_dir'])}"
    click.echo(f"  watch it in a browser: {view}")
    click.echo(json.dumps({"task": task, "team": cfg.name, "score": score, "baseline": baseline,
                           "metric": metric, "beat_baseline": beat,
                           "best_attempt": result.get("best_attempt"),
                           "exit_status": result["exit_status"], "steps": result["steps"],
                           "seconds": seconds, "run_dir": result["run_dir"], "view": view}))
    if not beat:
        sys.exit(1)
