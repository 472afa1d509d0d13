"""Environment commands: `mlgym env serve`, `mlgym env shell`, `mlgym baseline`, `mlgym evaluate`."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import click

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.tools.turn import format_turn

logger = log.get(__name__)


@asynccontextmanager
async def embedded_server(root: Path, backend: str = "local", bus_url: str | None = None):
    """An environment server in this process, on an ipc endpoint under `root`; yields a client."""
    from mlgym.bus.rpc import RpcClient
    from mlgym.env_server.server import run_server

    root.mkdir(parents=True, exist_ok=True)
    endpoint = f"ipc://{root}/env.sock"
    ready = asyncio.Event()
    server = asyncio.create_task(run_server(endpoint, root / "sessions", bus_url, backend=backend, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        client = RpcClient(endpoint)
        try:
            yield client
        finally:
            await client.close()
    finally:
        server.cancel()
        try:
            await server
        except (asyncio.CancelledError, Exception):
            pass


# ---------------------------------------------------------------------------- serve


@click.command("serve")
@click.option("--endpoint", default=None, help="ZeroMQ endpoint to bind (default ipc://<root>/env.sock).")
@click.option("--tcp", "tcp", default=None, metavar="HOST:PORT", help="Bind tcp://HOST:PORT instead (127.0.0.1 unless you say otherwise).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where session workspaces live.")
@click.option("--bus", "bus_url", default=None, help="Bus URL to publish session events on.")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--keys", type=click.Path(file_okay=False, path_type=Path), default=None, help="CURVE key folder (`mlgym keys init`): encrypt and authenticate tcp clients.")
@click.option("--run", "run_id", default="", help="Run id stamped on events.")
@click.option("--pool", "pool_size", type=int, default=0, show_default=True,
              help="Keep this many started sandboxes per (task, backend) ready, so opening a session does not wait.")
@click.option("--warm", multiple=True, metavar="TASK", help="Fill the pool for TASK at start (repeatable).")
@click.option("--adopt", is_flag=True,
              help="Take over the open sessions a server that died left under --root, "
                   "workspaces as they are (how `mlgym run` restarts its server).")
@click.option("--max-memory-mb", type=click.IntRange(1), default=None,
              help="Most memory a client may ask for a session  [default: this machine's RAM].")
@click.option("--max-processes", type=click.IntRange(1), default=4096, show_default=True,
              help="Most processes a client may ask for a session.")
@click.option("--max-cpu-seconds", type=click.IntRange(0), default=0, show_default=True,
              help="Most CPU seconds per process a client may ask for (0: no maximum).")
@click.option("--max-disk-mb", type=click.IntRange(1), default=262_144, show_default=True,
              help="Largest session disk (workspace + job logs) a client may ask for.")
@click.option("--allow-network", is_flag=True,
              help="Let clients ask for sandboxes with network (refused otherwise).")
@click.option("--admin-token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="A file (mode 600) whose token opens and lists every session.")
@click.option("--discard-workspaces", is_flag=True,
              help="Delete a session's disk when it closes (kept by default).")
def serve(endpoint: str | None, tcp: str | None, root: Path | None, bus_url: str | None, backend: str,
          keys: Path | None, run_id: str, pool_size: int, warm: tuple[str, ...], adopt: bool,
          max_memory_mb: int | None, max_processes: int, max_cpu_seconds: int, max_disk_mb: int,
          allow_network: bool, admin_token_file: Path | None, discard_workspaces: bool) -> None:
    """Serve sessions (open, act, read files, close) over ZeroMQ until interrupted.

    Clients' limits are requests: above the --max-* values (or network without
    --allow-network) a session is refused with `limit_refused`."""
    from mlgym import paths
    from mlgym.env_server.policy import LimitRefused, ServerPolicy, read_admin_token
    from mlgym.env_server.server import run_server

    policy = ServerPolicy(max_processes=max_processes, max_cpu_seconds=max_cpu_seconds,
                          max_disk_mb=max_disk_mb, allow_network=allow_network)
    if max_memory_mb is not None:
        policy.max_memory_mb = max_memory_mb
    if admin_token_file is not None:
        try:
            policy.admin_token = read_admin_token(admin_token_file)
        except LimitRefused as exc:
            raise click.ClickException(exc.message) from None

    root = root or paths.home() / "env"
    root.mkdir(parents=True, exist_ok=True)
    if tcp:
        endpoint = f"tcp://{tcp}"
    endpoint = endpoint or f"ipc://{root}/env.sock"
    curve = None
    if keys is not None:
        from mlgym.bus import security

        curve = security.server_curve(keys)
    click.echo(f"environment server on {endpoint} (backend {backend}, sessions under {root})", err=True)
    try:
        asyncio.run(run_server(endpoint, root / "sessions", bus_url, run=run_id, backend=backend, curve=curve,
                               bus_curve=keys, pool_size=pool_size, warm=warm, freeze_gc=True,
                               adopt=adopt, policy=policy,
                               keep_workspaces=not discard_workspaces))
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------------------- shell


def _read_action(prompt: str = "> ") -> str | None:
    """One action; `edit`/`insert` bodies are read up to their end marker."""
    try:
        first = input(prompt)
    except EOFError:
        return None
    word = first.strip().split(" ", 1)[0]
    end = {"edit": "end_of_edit", "insert": "end_of_insert"}.get(word)
    lines = [first]
    while end:
        try:
            line = input("... ")
        except EOFError:
            break
        lines.append(line)
        if line.strip() == end:
            break
    return "\n".join(lines)


@click.command("shell")
@click.argument("task")
@click.option("--endpoint", default=None, help="A running server (default: start one in this process).")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--max-steps", type=int, default=0, help="Step budget (default: the task's).")
def shell(task: str, endpoint: str | None, backend: str, max_steps: int) -> None:
    """Work a TASK by hand through the ACI: type commands as an agent would (`exit` quits)."""

    async def main() -> None:
        async def session(client: Any) -> None:
            opened = await client.request("env", p.SessionOpen(task=task, backend=backend, limits=p.Limits(max_steps=max_steps)), timeout=600)
            sid, token = opened.info.session, opened.token
            click.echo(opened.observation)
            click.echo("\nType ACI commands (`help` lists them, `exit` quits).")
            try:
                while True:
                    action = await asyncio.to_thread(_read_action)
                    if action is None or action.strip() in ("exit", "quit"):
                        break
                    if action.strip() == "help":
                        click.echo(opened.tools_help)
                        continue
                    if not action.strip():
                        continue
                    try:
                        obs = await client.request("env", p.Act(session=sid, command=action, agent="human", token=token), timeout=7200)
                    except RpcError as exc:
                        click.echo(f"error: {exc.message}")
                        if exc.code == "episode_over":
                            break
                        continue
                    click.echo(format_turn(obs.output, obs.step, obs.remaining_steps, obs.info.get("open_file", ""), obs.info.get("cwd", "")))
                    if obs.done:
                        click.echo(f"episode over: {obs.info.get('exit_status')}")
                        break
            finally:
                try:
                    await client.request("env", p.SessionClose(session=sid, token=token), timeout=30)
                except (RpcError, asyncio.TimeoutError):
                    pass

        if endpoint:
            from mlgym.bus.rpc import RpcClient

            client = RpcClient(endpoint)
            try:
                await session(client)
            finally:
                await client.close()
        else:
            with tempfile.TemporaryDirectory(prefix="mlgym-shell-") as tmp:
                async with embedded_server(Path(tmp), backend) as client:
                    await session(client)

    asyncio.run(main())


# ---------------------------------------------------------------------------- baseline


async def run_baseline(task_id: str, backend: str = "local", root: Path | None = None) -> dict[str, Any]:
    """Run the task's baseline in a real session and validate it; returns the result dict."""
    from mlgym.tasks import registry

    spec = registry.load_task(task_id).spec
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlgym-baseline-", dir=root) as tmp:
        async with embedded_server(Path(tmp), backend) as client:
            opened = await client.request("env", p.SessionOpen(task=task_id, backend=backend), timeout=1800)
            sid, token = opened.info.session, opened.token
            outputs = []
            for command in spec.baseline.commands:
                obs = await client.request("env", p.Act(session=sid, command=command, agent="baseline", token=token), timeout=7200)
                outputs.append(obs.output)
                if obs.exit_code != 0:
                    raise click.ClickException(f"baseline command `{command}` failed ({obs.exit_code}):\n{obs.output[-3000:]}")
            obs = await client.request("env", p.Act(session=sid, command="validate", agent="baseline", token=token), timeout=7200)
            await client.request("env", p.SessionClose(session=sid, token=token), timeout=60)
    if not obs.scores:
        raise click.ClickException(f"baseline evaluation failed:\n{obs.output}")
    return {"task": task_id, "scores": obs.scores, "published": dict(spec.baseline.scores),
            "seconds": round(time.monotonic() - started, 2), "backend": backend}


@click.command("baseline")
@click.argument("task")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on the last line.")
def baseline(task: str, backend: str, as_json: bool) -> None:
    """Run TASK's baseline in a real session and print its scores beside the published ones."""
    result = asyncio.run(run_baseline(task, backend))
    _print_scores(result["task"], result["scores"], result["published"], result["seconds"])
    if as_json:
        click.echo(json.dumps(result))


def _print_scores(task: str, scores: dict[str, float], published: dict[str, float] | None, seconds: float) -> None:
    click.echo(f"{task}  ({seconds:.1f} s)")
    for name, value in scores.items():
        ref = (published or {}).get(name)
        tail = f"   published baseline {ref:.6g}   difference {value - ref:+.6g}" if ref is not None else ""
        click.echo(f"  {name:<12} {value:.6g}{tail}")


# ---------------------------------------------------------------------------- evaluate


async def evaluate_path(task_id: str, artefact: Path, backend: str = "local", seed: int | None = None) -> dict[str, Any]:
    """Evaluate a given artefact exactly as `validate` would: copied into a fresh evaluation
    sandbox beside pristine task files and the secret data."""
    from mlgym.env_server import evaluation, taskinfo
    from mlgym.env_server.sandbox import SandboxConfig, create

    handle = await asyncio.to_thread(taskinfo.load, task_id)
    spec = handle.spec
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlgym-evaluate-") as tmp:
        base = Path(tmp)
        staged = base / "staged"
        staged.mkdir()
        name = Path(spec.files.submission).name
        if artefact.is_dir():
            shutil.copytree(artefact, staged / name, symlinks=False)
        else:
            shutil.copyfile(artefact, staged / name)
        (base / "ws").mkdir()
        sandbox = create(backend, SandboxConfig(workspace=base / "ws", python_env=taskinfo.task_python_env(),
                                                memory_mb=spec.evaluation.memory_mb))
        outcome = await evaluation.evaluate(
            sandbox=sandbox, task=handle.task, prepared=handle.prepared, artefact=staged / name,
            timeout_s=spec.evaluation.timeout_s, seed=spec.evaluation.seed if seed is None else seed, scratch=base,
        )
    result: dict[str, Any] = {"task": task_id, "scores": outcome.scores, "published": dict(spec.baseline.scores),
                              "seconds": round(time.monotonic() - started, 3)}
    if outcome.error:
        result["error"] = outcome.error
    return result


@click.command("evaluate")
@click.argument("task")
@click.argument("artefact", type=click.Path(exists=True, path_type=Path))
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--seed", type=int, default=None, help="Evaluation seed (default: the task's).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on the last line.")
def evaluate(task: str, artefact: Path, backend: str, seed: int | None, as_json: bool) -> None:
    """Evaluate ARTEFACT (a file or folder, e.g. strategy.py or submission.csv) for TASK."""
    result = asyncio.run(evaluate_path(task, artefact, backend, seed))
    if "error" in result:
        click.echo(f"{task}: evaluation failed ({result['error']['code']}): {result['error']['message']}", err=True)
    else:
        _print_scores(task, result["scores"], result["published"], result["seconds"])
    if as_json:
        click.echo(json.dumps(result))
    if "error" in result:
        sys.exit(1)
