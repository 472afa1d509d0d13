"""`mlgym audit`: run the adversarial suite against a backend and print what held."""

from __future__ import annotations

import asyncio
import json
import sys

import click


@click.command("audit")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local",
              show_default=True, help="The sandbox backend to attack.")
@click.option("--tasks", "task_list", default=None, metavar="ID[,ID...]",
              help="Tasks whose secrets the attacks go after (default: battleOfSexes).")
@click.option("--image", default="", help="docker only: the task image to attack "
              "(default: $MLGYM_DOCKER_IMAGE or mlgym/task:latest).")
@click.option("--only", default=None, metavar="NAME[,NAME...]", help="Run just these attacks.")
@click.option("--list", "list_only", is_flag=True, help="List the attacks and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print only the summary JSON object.")
def audit(backend: str, task_list: str | None, image: str, only: str | None, list_only: bool,
          as_json: bool) -> None:
    """Attack this machine's environment server as a hostile agent would — symlinks, FIFOs,
    races, fork bombs, disk floods, stolen sessions, forged scores — with canaries on the host,
    and report attack, expected, observed, PASS/FAIL. The last line is one JSON object.
    Exit status 1 when anything failed. Run it as the user the server runs as."""
    from mlgym import log
    from mlgym.env_server.audit import ATTACKS, AuditError, run_audit

    if list_only:
        for a in ATTACKS:
            click.echo(f"{a.name:34} #{a.finding:6} {a.expected}")
        return
    log.configure(level="error")
    tasks = [t for t in (task_list or "").split(",") if t] or None
    names = [n for n in (only or "").split(",") if n] or None

    def show(o) -> None:
        if as_json:
            return
        mark = "PASS" if o.passed else "FAIL"
        click.echo(f"{mark}  {o.attack:34} #{o.finding:6} {o.seconds:6.1f} s")
        click.echo(f"      expected: {o.expected}")
        click.echo(f"      observed: {o.observed}")

    try:
        outcomes = asyncio.run(run_audit(backend, tasks, names, progress=show, image=image))
    except (ValueError, AuditError) as exc:
        raise click.ClickException(str(exc)) from None
    failed = [o.attack for o in outcomes if not o.passed]
    summary = {"backend": backend, "tasks": tasks or ["battleOfSexes"],
               "attacks": len(outcomes), "passed": len(outcomes) - len(failed),
               "failed": len(failed), "failures": failed}
    if not as_json:
        click.echo(f"\n{summary['passed']}/{summary['attacks']} attacks held off on the "
                   f"{backend} backend" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    click.echo(json.dumps(summary))
    sys.exit(1 if failed else 0)
