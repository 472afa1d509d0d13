"""The `mlgym` command. Subcommands live beside the code they drive and load lazily, so
`mlgym --help` stays fast and one broken extra never breaks the others."""

from __future__ import annotations

import importlib

import click

from mlgym import __version__, log

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "demo": "mlgym.demo:demo",
    "bus": "mlgym.bus.cli:bus",
    "protocol": "mlgym.bus.cli:protocol",
    "keys": "mlgym.bus.cli:keys",
    "bench": "mlgym.bench_cli:bench",
    "env": "mlgym.env_server.cli:env",
    "audit": "mlgym.env_server.audit.cli:audit",
    "image": "mlgym.env_server.image_cli:image",
    "baseline": "mlgym.env_server.commands:baseline",
    "evaluate": "mlgym.env_server.commands:evaluate",
    "tasks": "mlgym.tasks.cli:tasks",
    "data": "mlgym.tasks.cli:data",
    "score": "mlgym.tasks.cli:score",
    "memory": "mlgym.tools.cli:memory",
    "agent": "mlgym.agents.cli:agent",
    "run": "mlgym.agents.cli:run",
    "resume": "mlgym.agents.cli:resume",
    "analyze": "mlgym.agents.analyze.cli:analyze",
    "sweep": "mlgym.sweep.cli:sweep",
    "view": "mlgym.viewer.cli:view",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            why = str(exc)  # `exc` is unbound once the except block ends; the command runs later

            @click.command(name=name, help=f"(unavailable: {why})")
            def unavailable() -> None:
                raise click.ClickException(f"`mlgym {name}` is unavailable: {why}")

            return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlgym")
@click.option("--log-json", "log_json", type=click.Path(dir_okay=False), default=None,
              help="Also write logs as JSON lines to FILE.")
@click.option("--log-level", default=None, help="debug, info, warning or error (default info).")
def cli(log_json: str | None, log_level: str | None) -> None:
    """MLGym on a message bus: environment server, ACI, tasks and agent teams."""
    log.configure(level=log_level, json_file=log_json)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
