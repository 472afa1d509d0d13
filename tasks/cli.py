"""`mlgym tasks ...`, `mlgym data ...` and `mlgym score ...`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlgym.tasks import registry
from mlgym.tasks.data import DataError
from mlgym.tasks.spec import SUITES, TaskSpecError


def _load(task_id: str) -> registry.Task:
    try:
        return registry.load_task(task_id)
    except registry.UnknownTask as exc:
        raise click.ClickException(str(exc)) from None
    except TaskSpecError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def tasks() -> None:
    """List, show and validate task specs (tasks/<id>/task.toml)."""


@tasks.command("list")
@click.option("--suite", type=click.Choice(SUITES), default=None, help="Only tasks of this suite.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
def list_cmd(suite: str | None, as_json: bool) -> None:
    """One line per task: id, suites, priority metric (direction), baseline score."""
    rows, broken = [], []
    for tid in registry.task_ids():
        try:
            t = registry.load_task(tid)
        except TaskSpecError as exc:
            broken.append(str(exc))
            continue
        if suite and suite not in t.spec.suites:
            continue
        m = t.spec.priority
        rows.append({"id": t.id, "name": t.spec.name, "suites": t.spec.suites, "metric": m.name,
                     "direction": m.direction, "baseline": t.spec.baseline_score})
    if as_json:
        click.echo(json.dumps(rows))
    else:
        width = max((len(r["id"]) for r in rows), default=2)
        for r in rows:
            click.echo(f"{r['id']:<{width}}  {','.join(r['suites']):<9}  "
                       f"{r['metric']} ({r['direction']})  baseline {r['baseline']:.6g}")
    for msg in broken:
        click.echo(f"INVALID {msg}", err=True)
    if broken:
        sys.exit(1)


@tasks.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="The full spec as JSON.")
def show(task_id: str, as_json: bool) -> None:
    """The spec of one task and the description the agent sees."""
    import msgspec

    t = _load(task_id)
    s = t.spec
    if as_json:
        click.echo(json.dumps({"dir": str(t.dir), "spec": msgspec.to_builtins(s)}))
        return
    click.echo(f"{s.id}: {s.name}   [{', '.join(s.suites)}]   {t.dir}")
    metrics = ", ".join(f"{m.name} ({m.direction}{', priority' if m.name == s.priority_metric else ''})"
                        for m in s.metrics)
    click.echo(f"metrics:     {metrics}")
    click.echo("baseline:    " + ", ".join(f"{k}={v:.10g}" for k, v in s.baseline.scores.items())
               + (f"   via: {' && '.join(s.baseline.commands)}" if s.baseline.commands else ""))
    click.echo(f"submission:  {s.files.submission} ({s.files.submission_kind})")
    click.echo(f"read-only:   {', '.join(s.files.read_only) or '-'}")
    secret = list(s.files.secret)
    if s.prepare is not None:  # its --secret folder: held-out answers, opponents, ...
        secret.append(f"whatever {s.prepare.entry} writes to its secret folder")
    click.echo(f"secret:      {'; '.join(secret) or '-'}  (only the evaluator sees these)")
    click.echo(f"evaluation:  {s.evaluation.entry} (timeout {s.evaluation.timeout_s:g} s, seed {s.evaluation.seed})")
    for d in s.data:
        click.echo(f"data:        {d.file} sha256 {d.sha256[:16]}... from {d.source or d.url}")
    click.echo(f"limits:      training {s.limits.training_timeout_s:g} s, {s.limits.max_steps} steps, "
               f"${s.limits.cost_limit_usd:g}, {s.limits.memory_mb} MiB, {s.limits.cpus:g} CPUs, {s.limits.gpus} GPUs")
    click.echo("")
    click.echo(s.full_description())


@tasks.command("validate")
@click.argument("task_id", required=False)
def validate(task_id: str | None) -> None:
    """Check one spec, or all of them; exit status 1 when any is invalid."""
    ids = [task_id] if task_id else registry.task_ids()
    bad = 0
    for tid in ids:
        try:
            registry.load_task(tid)
            click.echo(f"ok       {tid}")
        except (TaskSpecError, registry.UnknownTask) as exc:
            bad += 1
            click.echo(f"INVALID  {exc}", err=True)
    if bad:
        sys.exit(1)


@tasks.command("import-mlgym")
@click.argument("checkout", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("task_ids", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the task folders go (default: your task folder, $MLGYM_TASKS or "
                   "~/.mlgym/tasks, which list, run and baseline search).")
@click.option("--metric", default=None, metavar="NAME[:max|min]",
              help="The priority metric (default: a task of ours with the id, else the first).")
@click.option("--secret", multiple=True, metavar="GLOB",
              help="More workspace files to keep from the agent (restored for evaluation).")
@click.option("--prefix", default="", help="Prepended to the task ids (to keep built-in ones).")
@click.option("--force", is_flag=True, help="Replace task folders that exist.")
def import_mlgym(checkout: Path, task_ids: tuple[str, ...], out_dir: Path | None,
                 metric: str | None, secret: tuple[str, ...], prefix: str, force: bool) -> None:
    """Turn an MLGym checkout's task configs (configs/tasks/*.yaml, configs/datasets/*.yaml,
    data/<task>/) into task folders: all of them, or the TASK_IDS given (docs/tasks.md)."""
    from mlgym.tasks import mlgym_import

    out = out_dir or registry.user_tasks_root()
    try:
        done, failed = mlgym_import.import_tasks(checkout, list(task_ids), out, metric=metric,
                                                 secret=secret, prefix=prefix, force=force)
    except mlgym_import.MlgymImportError as exc:
        raise click.ClickException(str(exc)) from None
    for item in done:
        spec = registry.load_task(item.task_id, out).spec
        click.echo(f"imported {item.task_id} -> {item.path}  ({spec.priority_metric}, "
                   f"{spec.priority.direction}; baseline {spec.baseline_score:.6g})")
        for note in item.notes:
            click.echo(f"note: {note}", err=True)
    for task_id, why in failed.items():
        click.echo(f"NOT IMPORTED {task_id}: {why}", err=True)
    if any(t != "(built-in ids)" for t in failed):
        sys.exit(1)


@click.group()
def data() -> None:
    """Import local copies of task data and prepare tasks (cached in ~/.mlgym)."""


@data.command("import")
@click.argument("task_id")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def import_cmd(task_id: str, path: Path) -> None:
    """Copy TASK_ID's data files found at PATH (file or folder) into ~/.mlgym/data/TASK_ID/."""
    from mlgym.tasks.data import import_data

    t = _load(task_id)
    try:
        for p in import_data(t.spec, path):
            click.echo(f"imported {p}")
    except DataError as exc:
        raise click.ClickException(str(exc)) from None


@data.command("prepare")
@click.argument("task_id")
@click.option("--force", is_flag=True, help="Prepare again even when the cache is current.")
def prepare_cmd(task_id: str, force: bool) -> None:
    """Run the task's prepare step (split data, keep labels secret); cached."""
    t = _load(task_id)
    try:
        p = registry.prepare(t, force=force)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"public: {p.public_dir}\nsecret: {p.secret_dir}")


@click.command()
@click.argument("results", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write CSV, Markdown tables and profile plots (PNG, SVG) here.")
@click.option("--json", "as_json", is_flag=True,
              help="Print all numbers as one JSON object on stdout (instead of the Markdown).")
@click.option("--with-paper", is_flag=True,
              help="Add the MLGym-Bench paper's 12 models (bundled scores); score its 13 tasks.")
@click.option("--epsilon", type=float, default=0.05, show_default=True,
              help="Infeasible ratio = (1 + eps) x worst feasible ratio; also sets the tau bound.")
@click.option("--points", type=int, default=500, show_default=True)
@click.option("--baseline", "baseline_source", type=click.Choice(["spec", "measured"]),
              default="spec", show_default=True,
              help="Baseline score: the spec's published one, or the median measured in the runs.")
def score(results: tuple[Path, ...], out_dir: Path | None, as_json: bool, with_paper: bool,
          epsilon: float, points: int, baseline_source: str) -> None:
    """Best Attempt / Best Submission per task and method, performance profiles and AUP from
    run results files or folders, MLGym run folders included (docs/results-format.md,
    docs/scoring.md)."""
    from mlgym.tasks import score_report, scoring

    if not results and not with_paper:
        raise click.UsageError("give run results (files or folders), or --with-paper")
    if epsilon < 0 or points < 2:
        raise click.UsageError("need --epsilon >= 0 and --points >= 2")
    notes: list[str] = []
    try:
        runs = scoring.load_results(list(results), notes) if results else []
        fixed, tasks_ = [], None
        if with_paper:
            runs, fixed, tasks_ = _with_paper(runs, notes)
        report = scoring.score_runs(runs, epsilon=epsilon, points=points,
                                    baseline_source=baseline_source, fixed=fixed, tasks=tasks_,
                                    notes=notes)
    except scoring.ResultsError as exc:
        raise click.ClickException(str(exc)) from None
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps(score_report.report_json(report), allow_nan=False))
    else:
        click.echo(score_report.markdown_report(report))
    if out_dir is not None:
        for p in score_report.write_outputs(report, out_dir):
            click.echo(f"wrote {p}", err=True)


def _with_paper(runs: list, notes: list[str]) -> tuple[list, list, list[str]]:
    """The runs on the paper's tasks (others are left out, with a note), the paper's models
    as fixed scores, and the paper's task list. A user method named like a paper model is
    renamed `<name> (yours)`."""
    from mlgym.tasks import paper

    names, tasks_ = set(paper.models()), paper.tasks()
    outside = sorted({r.task for r in runs} - set(tasks_))
    if outside:
        notes.append(f"--with-paper scores the paper's {len(tasks_)} tasks; runs on "
                     f"{', '.join(outside)} are left out")
    runs = [r for r in runs if r.task in tasks_]
    for r in runs:
        if r.method in names:
            r.method = f"{r.method} (yours)"
    for m in sorted({r.method for r in runs}):
        if m.endswith(" (yours)") and m.removesuffix(" (yours)") in names:
            notes.append(f"your method {m.removesuffix(' (yours)')} is named like a paper model; "
                         f"shown as {m}")
        missing = [t for t in tasks_ if not any(r.method == m and r.task == t for r in runs)]
        if missing:
            notes.append(f"{m} has no runs on {len(missing)} of the paper's {len(tasks_)} tasks "
                         f"({', '.join(missing)}): they count as infeasible, as a model without "
                         "a result did in the paper")
    return runs, paper.fixed_scores(), tasks_
