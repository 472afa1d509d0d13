"""`mlgym bus ...`, `mlgym protocol schema`, `mlgym keys init`."""

from __future__ import annotations

import asyncio
import importlib
import json
import sqlite3
import sys
from pathlib import Path

import click
import msgspec

from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError

# subcommands that pull in optional dependencies load only when named
_LAZY = {"record": "mlgym.bus.recorder:record"}


class _BusGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _LAZY:
            module, _, attr = _LAZY[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=_BusGroup)
def bus() -> None:
    """The message bus: broker, live tail, demo."""


@bus.command()
@click.option("--run-dir", required=True, envvar="MLGYM_RUN_DIR", type=click.Path(file_okay=False),
              help="Run directory: event log, bus.json and (by default) the ipc sockets.")
@click.option("--tcp", default=None, metavar="HOST:PORT",
              help="Serve on TCP ports PORT..PORT+2 instead of ipc (PORT 0: pick free ports).")
@click.option("--bind-all", is_flag=True, help="With --tcp: listen on all interfaces (0.0.0.0).")
@click.option("--keys", default=None, type=click.Path(file_okay=False, exists=True),
              help="CurveZMQ keys folder from `mlgym keys init`: encrypt and refuse unknown clients.")
@click.option("--history", default=10_000, show_default=True, help="Messages kept in memory for replay.")
@click.option("--heartbeat", default=0.5, show_default=True, help="Seconds between heartbeats.")
@click.option("--batch", default=512, show_default=True, help="Most messages logged per commit.")
@click.option("--hwm", default=100_000, show_default=True,
              help="Queue limit per peer; a subscriber further behind loses messages (and refills).")
@click.option("--linger-ms", default=0.5, show_default=True, type=click.FloatRange(0, 1000),
              help="Pause after a read of several messages so batches grow: less CPU per message "
                   "under steady traffic, up to this much more latency. 0: off.")
def serve(run_dir: str, tcp: str | None, bind_all: bool, keys: str | None, history: int,
          heartbeat: float, batch: int, hwm: int, linger_ms: float) -> None:
    """Run the broker until SIGINT/SIGTERM."""
    from mlgym.bus.broker import serve as run
    from mlgym.bus.security import server_curve

    if bind_all and not tcp:
        raise click.UsageError("--bind-all needs --tcp HOST:PORT")
    if tcp and ":" not in tcp:
        raise click.UsageError("--tcp takes HOST:PORT")
    curve = server_curve(keys) if keys else None
    try:
        asyncio.run(run(run_dir, tcp=tcp, bind_all=bind_all, curve=curve, history=history,
                        heartbeat=heartbeat, batch=batch, hwm=hwm,
                        linger=linger_ms / 1000))
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


@bus.command()
@click.option("--url", default=None, help="Bus URL (ipc://..., tcp://..., mqtt://...).")
@click.option("--run-dir", default=None, envvar="MLGYM_RUN_DIR", type=click.Path(file_okay=False),
              help="Or the run directory of a running broker (reads its bus.json).")
@click.option("--keys", default=None, type=click.Path(file_okay=False, exists=True),
              help="CurveZMQ keys folder (client key and the server's public key).")
@click.option("--from-seq", type=int, default=None, help="Replay history from this seq first.")
@click.option("--count", type=int, default=0, help="Exit after this many messages (0: never).")
@click.option("--json", "as_json", is_flag=True, help="Print each envelope as one JSON line.")
@click.argument("prefixes", nargs=-1)
def tail(url: str | None, run_dir: str | None, keys: str | None, from_seq: int | None, count: int,
         as_json: bool, prefixes: tuple[str, ...]) -> None:
    """Print bus messages as they arrive (topic PREFIXES, default everything)."""
    from mlgym.bus import connect

    target = url or run_dir
    if not target:
        raise click.UsageError("give --url or --run-dir")

    async def run() -> None:
        async with connect(target, sender="tail", curve=keys) as client:
            async with client.subscribe(*prefixes, from_seq=from_seq) as sub:
                n = 0
                async for env in sub:
                    click.echo(json.dumps(msgspec.to_builtins(env)) if as_json else format_line(env))
                    n += 1
                    if count and n >= count:
                        return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except CLIENT_ERRORS as exc:
        raise click.ClickException(one_line(exc)) from None


# What a bus client raises when it cannot reach or log in to a broker, or is given a bad URL,
# key folder or run directory: said in one line, not a traceback. (MqttBusError is a
# ConnectionError; RpcError covers a broker that answered with an error.)
CLIENT_ERRORS = (ConnectionError, TimeoutError, OSError, ValueError, RpcError)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (its type's name when it has none, as TimeoutError)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@bus.command("log")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("prefixes", nargs=-1)
@click.option("--from-seq", type=int, default=1, show_default=True, help="First seq to print.")
@click.option("--to-seq", type=int, default=0, help="Last seq to print (0: the end).")
@click.option("--json", "as_json", is_flag=True, help="Print each envelope as one JSON line.")
def log_cmd(run_dir: str, prefixes: tuple[str, ...], from_seq: int, to_seq: int, as_json: bool) -> None:
    """Print a run's event log (RUN_DIR/events.sqlite and its .data file), no broker needed
    (topic PREFIXES, default everything)."""
    from mlgym.bus.broker import LOG_FILE
    from mlgym.bus.eventlog import LogCorrupt, LogReader

    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise click.ClickException(f"no event log at {path}")
    reader = LogReader(path)
    try:
        for rows in reader.read(from_seq, to_seq, prefixes or ("",)):
            for seq, epoch, _ts, _topic, encoding, payload in rows:
                try:
                    env = P.decode(payload, encoding.encode())
                except P.ProtocolError as exc:  # a body kind this version does not know
                    click.echo(f"{seq:>8} e{epoch} undecodable: {exc.message}", err=True)
                    continue
                env.seq, env.epoch = seq, epoch
                click.echo(json.dumps(msgspec.to_builtins(env)) if as_json else format_line(env))
    except (sqlite3.DatabaseError, LogCorrupt) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    finally:
        reader.close()


def format_line(env: P.Envelope, width: int = 100) -> str:
    """One readable line per message: seq, epoch, topic, kind, sender, body summary."""
    fields = msgspec.to_builtins(env.body)
    fields.pop("kind", None)
    summary = json.dumps(fields, ensure_ascii=False)
    if len(summary) > width:
        summary = summary[: width - 3] + "..."
    return f"{env.seq:>8} e{env.epoch} {env.topic} [{env.kind}] {env.sender or '-'}: {summary}"


@bus.command("demo")
@click.option("--messages", default=200, show_default=True, help="Work items the planner sends.")
def bus_demo(messages: int) -> None:
    """A broker and a few publisher/subscriber processes exchanging typed messages."""
    from mlgym.bus.demo import main

    main(messages)


@click.group()
def protocol() -> None:
    """The wire protocol."""


@protocol.command()
@click.option("--indent", default=2, show_default=True)
def schema(indent: int) -> None:
    """Print the JSON Schema of the envelope and every message body."""
    click.echo(json.dumps(P.json_schema(), indent=indent or None, sort_keys=True))


@click.group()
def keys() -> None:
    """CurveZMQ keys for TCP endpoints."""


@keys.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--client", "clients", multiple=True, default=("client",), show_default=True,
              help="Client keypair names to create and allow (repeatable).")
def keys_init(directory: str, clients: tuple[str, ...]) -> None:
    """Create server and client keypairs in DIRECTORY and allow the clients."""
    from mlgym.bus.security import init_keys

    files = init_keys(directory, clients)
    for name, path in sorted(files.items()):
        click.echo(f"{name:24} {path}")
    click.echo(f"serve with:  mlgym bus serve --run-dir RUN --tcp 127.0.0.1:5550 --keys {Path(directory)}",
               err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(bus())
