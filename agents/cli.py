"""`mlgym agent`, `mlgym run`, `mlgym resume`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from mlgym import log

logger = log.get(__name__)


def call_options(f):
    """The model call's limits, shared by `mlgym agent` (values) and `mlgym run` (overrides)."""
    f = click.option("--max-retries", type=click.IntRange(min=0), default=None,
                     help="Retries of a model call after transient errors (timeouts, refused "
                          "connections, 429, 5xx) [default: 5; mlgym run: the team file's].")(f)
    f = click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Longest the model server may send nothing, seconds [default: 120; mlgym "
                          "run: the team file's].")(f)
    f = click.option("--call-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Wall clock for one try of a model call, streaming included, seconds "
                          "[default: 300; mlgym run: the team file's].")(f)
    return f


@click.command("agent")
@click.option("--role", default="",
              help="Role: a shipped one (planner, coder, literature, single, reviewer, ...) or "
                   "one the run's team declares [default: the role the run gives --name].")
@click.option("--name", default=None, help="Agent name on the bus (default: the role).")
@click.option("--run", "run_id", default="", help="The run id (default: the one the bus announces).")
@click.option("--bus", "bus_url", required=True,
              help="Bus URL (ipc://..., tcp://HOST:PORT, mqtt[s]://[user@]HOST:PORT) or the run "
                   "directory. On MQTT the run's topics are under ?prefix=, by default "
                   "mlgym/<run id> (give --run); the password comes from $MLGYM_MQTT_PASSWORD "
                   "or a file (docs/mqtt.md), never the command line.")
@click.option("--model", required=True, help="Model spec: scripted:auto, replay:RUN_DIR, openai:gpt-4o, ...")
@click.option("--history", default="last:5", show_default=True,
              help="'full', 'last:N' or 'stable:K' (cache-friendly) observations kept.")
@click.option("--mode", type=click.Choice(["text", "tools"]), default="text", show_default=True,
              help="Classic DISCUSSION + fenced command, or function calling.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=0), default=None,
              help="Output cap per model call [default (0): 4096, 32768 for reasoning models].")
@call_options
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Stream replies (a runaway reply is cut, a cancelled call hangs up).")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True, help="Longest `wait`, seconds.")
@click.option("--max-item-steps", type=int, default=15, show_default=True, help="Coder: turns per work item.")
@click.option("--keys", type=click.Path(file_okay=False, exists=True), default=None,
              help="CURVE key folder for a tcp bus (`mlgym keys init`).")
def agent(role: str, name: str | None, run_id: str, bus_url: str, model: str, history: str, mode: str,
          temperature: float, max_tokens: int | None, max_retries: int | None,
          stall_timeout: float | None, call_timeout: float | None, stream: bool,
          wait_timeout: float, max_item_steps: int, keys: str | None) -> None:
    """Run one agent of a run: it joins the bus, reads the run's RunInfo, and works until the run
    ends or it is told to stop. Can run on another machine than the run (tcp bus)."""
    from mlgym.agents.history import check_spec
    from mlgym.agents.runtime import Agent, Options
    from mlgym.bus import is_mqtt

    try:
        check_spec(history)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--history") from None
    if is_mqtt(bus_url):
        from mlgym.bus.mqtt_link import MqttSettings, for_run

        bus_url = for_run(bus_url, run_id)  # the run's topics: mlgym/<run id> unless named
        if for_run(bus_url, "any") != bus_url:  # neither --run nor ?prefix=: no run to find
            raise click.UsageError("on an MQTT bus give --run RUN_ID (a run's topics are under "
                                   "mlgym/<run id>) or the URL's ?prefix=")
        try:
            MqttSettings.from_url(bus_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--bus") from None
    given = (("max_tokens", max_tokens), ("max_retries", max_retries),
             ("stall_timeout_s", stall_timeout), ("call_timeout_s", call_timeout))
    limits = {k: v for k, v in given if v is not None}
    if not name and not role:
        raise click.UsageError("give --name (a member of the run) or --role")
    opts = Options(name=name or role, role=role, run=run_id, bus=bus_url, model=model, history=history, mode=mode,
                   temperature=temperature, stream=stream, wait_timeout_s=wait_timeout,
                   max_item_steps=max_item_steps, curve=keys, **limits)
    try:
        status = asyncio.run(Agent(opts).run())
    except ConnectionError as exc:  # the bus refused the login: one line, no traceback
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"agent": opts.name, "exit_status": status}))


def _per_agent(values: tuple[str, ...], convert: Any = str, option: str = "",
               ) -> tuple[Any, dict[str, Any]]:
    """`--OPTION V` for every agent, `--OPTION NAME=V` for one agent or role (repeatable). An
    agent name has no ":", so a model spec with a "=" in its query stays whole."""
    default, per = None, {}
    for v in values:
        head, eq, rest = v.partition("=")
        try:
            if eq and ":" not in head:
                per[head] = convert(rest)
            else:
                default = convert(v)
        except ValueError as exc:
            raise click.BadParameter(f"{v!r}: {exc}", param_hint=option) from None
    return default, per


def _print_result(result: dict, as_json: bool) -> None:
    from mlgym.agents.progress import summary_lines

    for line in summary_lines(result):
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps(result))


@click.command("run")
@click.option("--task", required=True, help="Task id (`mlgym tasks list`).")
@click.option("--team", default="default", show_default=True,
              help="Team design: a shipped one (single, default, reviewer, parallel-3, debate, "
                   "flat) or a .toml file (docs/teams.md).")
@click.option("--model", "models", multiple=True,
              help="Model for every agent, or NAME=SPEC for one agent or role (repeatable).")
@click.option("--runs", type=int, default=1, show_default=True, help="Independent runs, one after the other.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The task's seed (the session's); with --runs N, runs get SEED..SEED+N-1.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default runs/<run id>; with --runs N, a folder of N runs).")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--steps", type=int, default=None, help="Override the team's step budget.")
@click.option("--tokens", type=int, default=None, help="Override the team's token budget.")
@click.option("--dollars", type=float, default=None, help="Override the team's dollar budget.")
@click.option("--wall-clock", type=float, default=None, help="Override the team's wall-clock budget (s).")
@click.option("--budget-match", "budget_match", default=None, metavar="DESIGN|RUNS_DIR",
              help="Give the team the same total step, token and dollar budget as a reference: a "
                   "team design (its declared budget, e.g. `single`) or a folder of runs (the "
                   "median of what they used). --steps/--tokens/--dollars still override.")
@click.option("--history", "histories", multiple=True, metavar="POLICY|NAME=POLICY",
              help="History policy for every agent, or NAME=POLICY for one agent or role "
                   "(repeatable): full, last:N, stable:K.")
@click.option("--max-tokens", "max_tokens", multiple=True, metavar="N|NAME=N",
              help="Output cap per model call for every agent, or NAME=N for one agent or role "
                   "(repeatable) [default: the team file's, else 4096; 32768 for reasoning "
                   "models].")
@call_options
@click.option("--external", multiple=True, help="Agent started separately with `mlgym agent` (repeatable).")
@click.option("--host", default=None, metavar="HOST[:PORT]",
              help="Serve the bus and services on tcp at this address (remote agents); with PORT, "
                   "on fixed ports: the broker PORT..PORT+2, env PORT+3, memory PORT+4 (with "
                   "--bus: env PORT, memory PORT+1).")
@click.option("--keys", type=click.Path(file_okay=False, exists=True), default=None,
              help="With --host: CURVE key folder (`mlgym keys init`) for the bus, env and memory sockets.")
@click.option("--bus", "bus", default=None, metavar="MQTT_URL",
              help="Run the bus over this MQTT broker, mqtt[s]://[user@]host:port[?prefix=P&ca=F"
                   "&password_file=F], instead of a ZeroMQ broker of the run's own (docs/mqtt.md). "
                   "Topics under P, default mlgym/<run id>; the password from $MLGYM_MQTT_PASSWORD "
                   "or a file, never the command line.")
@click.option("--memory", "memory", default=None, metavar="PATH|shared",
              help="The team's memory store: an SQLite file to share across runs (kept per task), or "
                   "`shared` for ~/.mlgym/memory.sqlite (what `mlgym memory` serves and searches). "
                   "Default: each run its own, RUN_DIR/memory.sqlite.")
@click.option("--no-progress", is_flag=True, help="No live table.")
@click.option("--json", "as_json", is_flag=True, help="End with the result as one JSON line.")
def run(task: str, team: str, models: tuple[str, ...], runs: int, seed: int, run_dir: Path | None, backend: str,
        steps: int | None, tokens: int | None, dollars: float | None, wall_clock: float | None,
        budget_match: str | None, histories: tuple[str, ...], max_tokens: tuple[str, ...],
        max_retries: int | None,
        stall_timeout: float | None, call_timeout: float | None,
        external: tuple[str, ...], host: str | None, keys: str | None, bus: str | None,
        memory: str | None, no_progress: bool, as_json: bool) -> None:
    """Run a team of agents on TASK: broker, environment server, memory service and one process per
    agent, supervised, with budgets; writes a run directory (event log, result.json, .traj files)."""
    import msgspec

    from mlgym.agents import config as C
    from mlgym.agents.supervisor import RunError, new_run_id, run_team

    try:
        cfg = C.load_team(team)
    except C.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    default, per = _per_agent(models)
    cfg = C.override_models(cfg, default, per)
    try:
        cfg = C.override_agents(cfg, "history", *_per_agent(histories, str, "--history"))
        cfg = C.override_agents(cfg, "max_tokens", *_per_agent(max_tokens, int, "--max-tokens"))
        cfg = C.override_agents(cfg, "max_retries", max_retries)
        cfg = C.override_agents(cfg, "stall_timeout_s", stall_timeout)
        cfg = C.override_agents(cfg, "call_timeout_s", call_timeout)
    except C.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if budget_match:
        try:
            cfg = C.budget_match(cfg, budget_match)
        except C.ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    b = cfg.budget
    b = C.Budget(steps=b.steps if steps is None else steps, tokens=b.tokens if tokens is None else tokens,
                 dollars=b.dollars if dollars is None else dollars,
                 wall_clock_s=b.wall_clock_s if wall_clock is None else wall_clock)
    memory_db = _memory_db(memory)
    _check_bus(bus, runs)
    if host:
        from mlgym.bus.endpoints import split_host

        try:
            split_host(host)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--host") from None
    agents = [msgspec.structs.replace(a, external=a.external or a.name in external) for a in cfg.agents]
    cfg = msgspec.structs.replace(cfg, budget=b, agents=agents)
    results = []
    for i in range(runs):
        rid = new_run_id(task, cfg.name) + (f"-r{i + 1}" if runs > 1 else "")
        rdir = (run_dir / rid if runs > 1 else run_dir) if run_dir else None
        run_bus = bus
        if bus and runs > 1:  # each run's topics its own: PREFIX/<run id>, mlgym/<run id>
            from mlgym.bus.mqtt_link import for_run

            run_bus = for_run(bus, rid, nested=True)
        if external:
            where = _bus_for_agents(run_bus, rid) if run_bus else rdir or "runs/" + rid
            click.echo(f"run id {rid}; start the external agents with: mlgym agent --run {rid} --bus {where} ...",
                       err=True)
        try:
            result = asyncio.run(run_team(task, cfg, run_dir=rdir, run_id=rid, backend=backend, host=host,
                                          keys=keys, progress=not no_progress, seed=seed + i,
                                          memory=memory_db, bus=run_bus))
        except RunError as exc:
            raise click.ClickException(str(exc)) from None
        _print_result(result, as_json)
        results.append(result)
    if any(not r.get("final_submission") for r in results):
        sys.exit(1)


def _check_bus(bus: str | None, runs: int) -> None:
    """--bus: an MQTT URL that parses (its password file readable)."""
    if bus is None:
        return
    from mlgym.bus import is_mqtt
    from mlgym.bus.mqtt_link import MqttSettings

    if not is_mqtt(bus):
        raise click.BadParameter("an MQTT broker's URL, mqtt://... or mqtts://... (without "
                                 "--bus the run starts a ZeroMQ broker of its own)",
                                 param_hint="--bus")
    try:
        MqttSettings.from_url(bus)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bus") from None


def _bus_for_agents(bus: str, run_id: str) -> str:
    from mlgym.agents.mqttbus import run_bus

    return f"'{run_bus(bus, run_id)[0]}'"


def _memory_db(memory: str | None) -> Path | None:
    """--memory: None (the run's own store), `shared` (the per-user store) or a file path."""
    if memory is None:
        return None
    if memory == "shared":
        from mlgym.tools.memory import default_db

        return default_db()
    path = Path(memory).expanduser()
    if path.is_dir():
        raise click.BadParameter(f"{memory} is a directory; give the SQLite file (e.g. {path / 'memory.sqlite'})",
                                 param_hint="--memory")
    return path


@click.command("resume")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-progress", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def resume(run_dir: Path, no_progress: bool, as_json: bool) -> None:
    """Continue a stopped run: same run directory, event log and budgets (what is left of them);
    the agents rebuild their conversations from the log."""
    from mlgym.agents.supervisor import RunError, resume_run

    try:
        result = asyncio.run(resume_run(run_dir, progress=not no_progress))
    except RunError as exc:
        raise click.ClickException(str(exc)) from None
    _print_result(result, as_json)
