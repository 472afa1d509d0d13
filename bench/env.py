"""Environment-server benchmark (`mlgym bench env`): our sandboxed shell against SWE-ReX and
inspect_ai, in one run.

Phases:
  trivial     the round trip of `echo hi`, interleaved in rounds so that load drifting on a shared
              machine hits every system alike:
                aci      a real RpcClient -> ipc:// -> a real environment server in ANOTHER
                         process (the `mlgym env serve` code path, run_server) -> an open session
                         -> the local (bubblewrap) sandbox's persistent shell, `Act(command=...)`
                rpc_ping the transport alone: Ping -> Pong with the same server process
                sandbox  the same shell driven in this process (LocalSandbox.exec), no RPC and
                         no session: shows what the RPC + session layers add
                swerex   SWE-ReX's LocalRuntime as shipped (pexpect bash session, in this
                         process): run_in_session(BashAction(command="echo hi", check="silent"))
                swerex_nodelay  the same with pexpect's 50 ms pause before each send switched
                         off (delaybeforesend=None): SWE-ReX's best case, for a fair ratio
                inspect  inspect_ai's LocalSandboxEnvironment.exec(["bash", "-c", "echo hi"])
              SWE-ReX and inspect_ai run in this process with no RPC and no isolation, so the
              comparison favours them.
              Every reply is checked (output "hi", exit code 0); anything else is an error.
  concurrent  32 sessions on one server, each running 100 `echo hi` back to back, all at once;
              latency of every command, errors (error replies, timeouts, wrong output). Run
              before `open`, so that containers the docker phases leave for the engine to clean
              up do not load the machine meanwhile.
  open        opening a session (SessionOpen -> SessionOpened, workspace copied, sandbox up):
              local and docker "cold" through a server without a pool (sandbox started on
              demand); local and docker "warm" through a second server run with a warm pool
              (pool_size 2, filled before the first open, refilled between opens).
              Docker figures are null (with the reason printed) without an engine or image.

Docker uses $MLGYM_DOCKER_IMAGE when set (as `mlgym env serve` does), else mlgym/task:latest.
Options: --iterations/--rounds (trivial), --sessions/--commands (concurrent), --task, --no-docker,
--profile DIR (py-spy the server during the trivial and concurrent phases, print hot spots).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = {  # from the issue: medians on the 2-core development machine
    "aci_p50_ms": 2.0, "speedup_vs_others": 3.0, "open_local_ms": 100.0,
    "open_docker_warm_ms": 300.0, "concurrent_p99_ms": 50.0, "errors": 0,
}
ECHO = "echo hi"
SETUP_TRIES = 3  # SWE-ReX's session start times out now and then on a loaded machine


# --------------------------------------------------------------------------- helpers


def stats(samples_s: list[float]) -> dict[str, Any]:
    """p50/p99/mean in milliseconds of samples in seconds."""
    if not samples_s:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    s = sorted(samples_s)
    q = lambda f: round(s[min(len(s) - 1, int(f * len(s)))] * 1000, 3)
    return {"n": len(s), "p50_ms": q(0.5), "p99_ms": q(0.99),
            "mean_ms": round(statistics.fmean(s) * 1000, 3)}


def median_ms(samples_s: list[float]) -> float | None:
    return round(statistics.median(samples_s) * 1000, 1) if samples_s else None


def say(*parts: Any) -> None:
    print(*parts, flush=True)


class Errors:
    """Counts errors by kind, keeping one example of each."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}

    def add(self, kind: str, detail: str) -> None:
        self.count += 1
        self.kinds[kind] += 1
        self.examples.setdefault(kind, detail[:300])

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "kinds": dict(self.kinds), "examples": self.examples}


# --------------------------------------------------------------------------- server process


def role_server(a: argparse.Namespace) -> None:
    """The environment server exactly as `mlgym env serve` runs it (run_server), in its own
    process; prints READY once it is listening (and its warm pool, if any, is full)."""
    from mlgym.env_server.server import run_server

    from mlgym import log

    log.configure()
    extra: dict[str, Any] = {}
    if a.pool_size:
        extra = {"pool_size": a.pool_size, "warm": tuple(a.warm.split(",")) if a.warm else ()}

    async def main() -> None:
        ready = asyncio.Event()
        server = asyncio.create_task(run_server(a.endpoint, Path(a.root), None, backend=a.backend,
                                                ready=ready, freeze_gc=True, **extra))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # raises why it could not start
        print("READY", flush=True)
        await server

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class ServerProcess:
    def __init__(self, base: Path, name: str = "env", backend: str = "local", pool_size: int = 0,
                 warm: str = "") -> None:
        self.endpoint = f"ipc://{base}/{name}.sock"
        self.root = base / f"{name}-sessions"
        self.log = base / f"{name}-server.log"
        self.args = ["--backend", backend, "--pool-size", str(pool_size), "--warm", warm]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self._log = open(self.log, "w")  # noqa: SIM115 - held for the process lifetime
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", "server", "--endpoint", self.endpoint,
             "--root", str(self.root), *self.args],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.stop()
            raise RuntimeError(f"environment server did not start:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text()[-n:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self._log.close()


class Profiler:
    """py-spy sampling the server process for one phase; prints the hottest functions."""

    def __init__(self, out_dir: Path | None, pid: int) -> None:
        self.out_dir, self.pid = out_dir, pid
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, phase: str) -> None:
        if self.out_dir is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            say("profile: py-spy not found (pip install py-spy)")
            self.out_dir = None
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.raw = self.out_dir / f"server-{phase}.txt"
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--rate", "250", "--format", "raw",
             "--nonblocking", "-o", str(self.raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach

    def stop(self, top: int = 12) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self.proc = None
        if not self.raw.exists():
            say("profile: py-spy wrote nothing")
            return
        own: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        total = 0
        for line in self.raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            frames = stack.split(";")
            total += int(n)
            own[frames[-1]] += int(n)
            for f in set(frames):
                incl[f] += int(n)
        say(f"profile {self.raw} ({total} samples): self time")
        for f, n in own.most_common(top):
            say(f"  {100 * n / total:5.1f}%  {f}")
        say("  inclusive:")
        for f, n in incl.most_common(top + 8)[:top + 8]:
            say(f"  {100 * n / total:5.1f}%  {f}")


# --------------------------------------------------------------------------- the systems


class AciSystem:
    """Our path: RpcClient -> env server process -> session -> bubblewrap shell."""

    name = "aci"

    def __init__(self, server: ServerProcess, task: str, budget: int) -> None:
        self.server, self.task, self.budget = server, task, budget

    async def setup(self) -> None:
        from mlgym.bus import protocol as p
        from mlgym.bus.rpc import RpcClient

        self.p = p
        self.client = RpcClient(self.server.endpoint)
        opened = await self.client.request(
            "env", p.SessionOpen(task=self.task, backend="local", limits=p.Limits(max_steps=self.budget)),
            timeout=600)
        self.sid, self.token = opened.info.session, opened.token

    async def once(self) -> str | None:
        obs = await self.client.request("env", self.p.Act(session=self.sid, command=ECHO, token=self.token), timeout=60)
        if obs.exit_code != 0 or obs.output.strip() != "hi":
            return f"exit {obs.exit_code}, output {obs.output[:200]!r}"
        return None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.request("env", self.p.SessionClose(session=self.sid, token=self.token), timeout=30)
        await self.client.close()


class PingSystem:
    """The transport alone: an RPC Ping to the server process and its Pong (no session)."""

    name = "rpc_ping"

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    async def setup(self) -> None:
        from mlgym.bus import protocol as p
        from mlgym.bus.rpc import RpcClient

        self.p = p
        self.client = RpcClient(self.server.endpoint)

    async def once(self) -> str | None:
        pong = await self.client.request("env", self.p.Ping(payload=b"hi"), timeout=60)
        return None if pong.payload == b"hi" else f"exit 0, output {pong.payload!r}"

    async def close(self) -> None:
        await self.client.close()


class SandboxSystem:
    """The same bubblewrap shell, driven in this process: no RPC, no session, no ACI."""

    name = "sandbox"

    def __init__(self, base: Path) -> None:
        self.base = base

    async def setup(self) -> None:
        from mlgym.env_server import taskinfo
        from mlgym.env_server.sandbox import SandboxConfig, create

        ws = self.base / "direct-ws"
        ws.mkdir(parents=True, exist_ok=True)
        self.sandbox = create("local", SandboxConfig(workspace=ws, python_env=taskinfo.task_python_env(),
                                                     state_dir=self.base / "direct-state"))
        await self.sandbox.start()
        if self.sandbox.warning:
            say(f"WARNING: {self.sandbox.warning}")

    async def once(self) -> str | None:
        r = await self.sandbox.exec(ECHO, timeout=60)
        if r.exit_code != 0 or r.output.strip() != "hi":
            return f"exit {r.exit_code}, output {r.output[:200]!r}"
        return None

    async def close(self) -> None:
        await self.sandbox.stop()


class SweRexSystem:
    """SWE-ReX's local runtime: a pexpect-driven bash session in this process."""

    name = "swerex"

    def __init__(self, no_send_delay: bool = False) -> None:
        self.no_send_delay = no_send_delay
        if no_send_delay:
            self.name = "swerex_nodelay"

    async def setup(self) -> None:
        import logging

        from swerex.runtime.abstract import BashAction, CreateBashSessionRequest
        from swerex.runtime.local import LocalRuntime

        logging.getLogger("rex-runtime").setLevel(logging.WARNING)
        self.action = BashAction(command=ECHO, session="bench", check="silent")
        self.runtime = LocalRuntime()
        try:
            await self.runtime.create_session(CreateBashSessionRequest(session="bench"))
        except Exception as exc:  # noqa: BLE001 - say what the shell showed
            shell = getattr(self.runtime.sessions.get("bench"), "_shell", None)
            seen = repr(getattr(shell, "before", ""))[:200]
            raise RuntimeError(f"{type(exc).__name__} starting the bash session; it printed {seen}") from None
        if self.no_send_delay:  # pexpect sleeps 50 ms before every send by default
            self.runtime.sessions["bench"].shell.delaybeforesend = None

    async def once(self) -> str | None:
        try:
            obs = await self.runtime.run_in_session(self.action)
        except Exception as exc:  # noqa: BLE001 - count it, keep measuring
            return f"{type(exc).__name__}: {exc}"
        if obs.exit_code != 0 or obs.output.strip() != "hi":
            return f"exit {obs.exit_code}, output {obs.output[:200]!r}"
        return None

    async def close(self) -> None:
        from swerex.runtime.abstract import CloseBashSessionRequest

        with contextlib.suppress(Exception):
            await self.runtime.close_session(CloseBashSessionRequest(session="bench"))
        await self.runtime.close()


class InspectSystem:
    """inspect_ai's local sandbox environment: one `bash -c` subprocess per exec."""

    name = "inspect"

    async def setup(self) -> None:
        from inspect_ai.util._sandbox.local import LocalSandboxEnvironment

        self.cls = LocalSandboxEnvironment
        self.envs = await LocalSandboxEnvironment.sample_init("bench", None, {})
        self.sandbox = self.envs["default"]

    async def once(self) -> str | None:
        r = await self.sandbox.exec(["bash", "-c", ECHO], timeout=60)
        if r.returncode != 0 or r.stdout.strip() != "hi":
            return f"exit {r.returncode}, output {r.stdout[:200]!r} {r.stderr[:200]!r}"
        return None

    async def close(self) -> None:
        await self.cls.sample_cleanup("bench", None, self.envs, False)


async def phase_trivial(systems: list[Any], rounds: int, iterations: int, warmup: int
                        ) -> dict[str, dict[str, Any]]:
    """Round-robin: every round runs `iterations` commands on each system in turn."""
    ready, samples, errors, setup_error = [], {}, {}, {}
    setup_failures: dict[str, list[str]] = {}
    for s in systems:
        for attempt in range(SETUP_TRIES):
            try:
                await s.setup()
                for _ in range(warmup):
                    await s.once()
                ready.append(s)
                samples[s.name], errors[s.name] = [], Errors()
                break
            except Exception as exc:  # noqa: BLE001 - retry, then report and go on
                first = (str(exc).strip().splitlines() or [""])[0]
                why = f"{type(exc).__name__}: {first}"
                setup_failures.setdefault(s.name, []).append(why)
                say(f"trivial: {s.name} could not start (try {attempt + 1}/{SETUP_TRIES}): {why}")
                with contextlib.suppress(Exception):
                    await s.close()
        else:
            setup_error[s.name] = setup_failures[s.name][-1]
    per_round = max(1, iterations // rounds)
    for r in range(rounds):
        for s in ready:
            for _ in range(per_round):
                t0 = time.perf_counter()
                try:
                    err = await s.once()
                except Exception as exc:  # noqa: BLE001
                    err = f"{type(exc).__name__}: {exc}"
                dt = time.perf_counter() - t0
                if err:
                    kind = "wrong_output" if err.startswith("exit ") else err.split(":")[0]
                    errors[s.name].add(kind, err)
                else:
                    samples[s.name].append(dt)
    for s in ready:
        with contextlib.suppress(Exception):
            await s.close()
    out: dict[str, dict[str, Any]] = {}
    for s in systems:
        if s.name in setup_error:
            out[s.name] = {"error": setup_error[s.name]}
        else:
            out[s.name] = {**stats(samples[s.name]), "errors": errors[s.name].as_dict(),
                           "setup_failures": setup_failures.get(s.name, [])}
    return out


# --------------------------------------------------------------------------- open


async def open_close(client: Any, task: str, backend: str) -> float:
    from mlgym.bus import protocol as p

    t0 = time.perf_counter()
    opened = await client.request("env", p.SessionOpen(task=task, backend=backend), timeout=600)
    dt = time.perf_counter() - t0
    await client.request("env", p.SessionClose(session=opened.info.session, token=opened.token),
                         timeout=120)
    return dt


def docker_unavailable() -> str | None:
    """Why docker figures cannot be taken here, or None when they can."""
    try:
        from mlgym.env_server.sandbox import docker as dsb
    except Exception as exc:  # noqa: BLE001
        return f"docker backend not importable: {exc}"
    try:
        cli = dsb.client()
        cli.ping()
    except Exception as exc:  # noqa: BLE001
        return f"no Docker engine: {exc}"
    try:
        cli.images.get(docker_image())
    except Exception:  # noqa: BLE001
        return f"image {docker_image()} not built (`mlgym image build`)"
    return None


def docker_image() -> str:
    """The image the servers use: $MLGYM_DOCKER_IMAGE (as `mlgym env serve` reads it), else
    the full task image."""
    from mlgym.env_server.sandbox import docker as dsb

    return os.environ.get("MLGYM_DOCKER_IMAGE") or dsb.DEFAULT_IMAGE


async def pooled_opens(base: Path, task: str, backend: str, n: int, pause_s: float) -> list[float]:
    """Opens through a server that keeps a warm pool (pool_size 2, filled before READY), with a
    pause between opens so that the pool has refilled: what opening costs in steady state."""
    from mlgym.bus.rpc import RpcClient

    server = ServerProcess(base, f"pool-{backend}", backend=backend, pool_size=2, warm=task)
    server.start()
    client = RpcClient(server.endpoint)
    try:
        samples = []
        for _ in range(n):
            await asyncio.sleep(pause_s)
            samples.append(await open_close(client, task, backend))
        return samples
    finally:
        await client.close()
        server.stop()


def summary_of(samples: list[float]) -> dict[str, Any]:
    return {**stats(samples), "median_ms": median_ms(samples)}


async def phase_open(client: Any, task: str, n: int, base: Path, docker: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    local = [await open_close(client, task, "local") for _ in range(n)]
    out["local"] = summary_of(local)
    pause = max(1.0, 3 * statistics.median(local))
    out["local_pool"] = summary_of(await pooled_opens(base, task, "local", max(5, n // 2), pause))
    why = docker_unavailable() if docker else "skipped (--no-docker)"
    if why:
        say(f"open: docker figures are null: {why}")
        out["docker_note"] = why
        return out
    out["docker_image"] = docker_image()
    cold = [await open_close(client, task, "docker") for _ in range(max(3, n // 4))]
    out["docker_cold"] = summary_of(cold)
    pause = max(1.0, 3 * statistics.median(cold))  # a refill is one cold start
    out["docker_warm"] = summary_of(await pooled_opens(base, task, "docker", max(5, n // 2), pause))
    return out


# --------------------------------------------------------------------------- concurrent


async def phase_concurrent(endpoint: str, task: str, sessions: int, commands: int) -> dict[str, Any]:
    """`sessions` clients (own DEALER each, as separate agents would have), each with its own
    session, all running `commands` trivial commands back to back at the same time."""
    from mlgym.bus import protocol as p
    from mlgym.bus.rpc import RpcClient

    errors = Errors()
    latencies: list[float] = []
    clients = [RpcClient(endpoint) for _ in range(sessions)]

    async def open_one(c: RpcClient) -> tuple[str, str] | None:
        try:
            o = await c.request("env", p.SessionOpen(task=task, limits=p.Limits(max_steps=commands + 10)),
                                timeout=600)
            return o.info.session, o.token
        except Exception as exc:  # noqa: BLE001
            errors.add("open_failed", f"{type(exc).__name__}: {exc}")
            return None

    t0 = time.perf_counter()
    sids = await asyncio.gather(*(open_one(c) for c in clients))
    open_all_s = time.perf_counter() - t0
    go = asyncio.Event()

    async def agent(c: RpcClient, sid: tuple[str, str]) -> None:
        await go.wait()
        for _ in range(commands):
            t = time.perf_counter()
            try:
                obs = await c.request("env", p.Act(session=sid[0], command=ECHO, token=sid[1]),
                                      timeout=60)
            except Exception as exc:  # noqa: BLE001
                errors.add(type(exc).__name__, str(exc))
                continue
            dt = time.perf_counter() - t
            if obs.exit_code != 0 or obs.output.strip() != "hi":
                errors.add("wrong_reply", f"exit {obs.exit_code}, output {obs.output[:200]!r}")
            else:
                latencies.append(dt)

    runners = [asyncio.create_task(agent(c, sid)) for c, sid in zip(clients, sids) if sid]
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*runners)
    wall = time.perf_counter() - t0
    for c, sid in zip(clients, sids):
        if sid:
            with contextlib.suppress(Exception):
                await c.request("env", p.SessionClose(session=sid[0], token=sid[1]), timeout=60)
        await c.close()
    return {**stats(latencies), "sessions": sessions, "commands": commands,
            "open_all_s": round(open_all_s, 2), "wall_s": round(wall, 2),
            "commands_per_s": round(len(latencies) / wall, 1) if wall else None,
            "errors": errors.as_dict()}


# --------------------------------------------------------------------------- main


def pick_task(wanted: str | None) -> str:
    from mlgym.tasks import registry

    if wanted:
        return wanted
    lite = [t.id for t in registry.list_tasks("lite")]
    for preferred in ("prisonersDilemma", "battleOfSexes", "blotto"):
        if preferred in lite:
            return preferred
    return lite[0]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run(a: argparse.Namespace) -> dict[str, Any]:
    task = pick_task(a.task)
    started = datetime.datetime.now(datetime.UTC)
    say(f"bench env: task {task}, {os.cpu_count()} CPUs, load {load()}, {started:%Y-%m-%d %H:%M} UTC")
    result: dict[str, Any] = {"date": started.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                              "task": task, "load_start": load()}
    with tempfile.TemporaryDirectory(prefix="mlgym-bench-env-") as tmp:
        base = Path(tmp)
        server = ServerProcess(base)
        server.start()
        assert server.proc is not None
        profiler = Profiler(Path(a.profile) if a.profile else None, server.proc.pid)
        try:
            from mlgym.bus.rpc import RpcClient

            # trivial command round trip
            budget = a.iterations + a.warmup + 100
            systems = [AciSystem(server, task, budget), PingSystem(server), SandboxSystem(base),
                       SweRexSystem(), SweRexSystem(no_send_delay=True), InspectSystem()]
            profiler.start("trivial")
            trivial = await phase_trivial(systems, a.rounds, a.iterations, a.warmup)
            profiler.stop()
            result["trivial"] = trivial
            say("trivial command round trip (`echo hi`), ms:")
            for name, r in trivial.items():
                if "error" in r:
                    say(f"  {name:8} unavailable: {r['error']}")
                else:
                    say(f"  {name:14} p50 {r['p50_ms']:8.3f}  p99 {r['p99_ms']:8.3f}"
                        f"  mean {r['mean_ms']:8.3f}"
                        f"  n {r['n']}  errors {r['errors']['count']} {r['errors']['kinds'] or ''}")

            # concurrent sessions
            profiler.start("concurrent")
            conc = await phase_concurrent(server.endpoint, task, a.sessions, a.commands)
            profiler.stop()
            result["concurrent"] = conc
            say(f"concurrent: {a.sessions} sessions x {a.commands} commands: p50 {conc['p50_ms']} ms,"
                f" p99 {conc['p99_ms']} ms, {conc['commands_per_s']} commands/s,"
                f" errors {conc['errors']['count']} {conc['errors']['kinds'] or ''}"
                f" (opening all took {conc['open_all_s']} s)")

            # open a session
            client = RpcClient(server.endpoint)
            try:
                opened = await phase_open(client, task, a.opens, base, not a.no_docker)
            finally:
                await client.close()
            result["open"] = opened
            say("open a session, ms: " + ", ".join(
                f"{k} p50 {v['median_ms']}" for k, v in opened.items() if isinstance(v, dict)))
        finally:
            server.stop()
            if a.verbose:
                say(server.log_tail())
    result["load_end"] = load()
    return result


def at_most(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """The flat figures the issue asks for, the ratios and the targets met."""
    t, o, c = r["trivial"], r["open"], r["concurrent"]
    p50 = lambda name: t.get(name, {}).get("p50_ms")
    ratio = lambda other: round(p50(other) / p50("aci"), 2) if p50(other) and p50("aci") else None
    errors = c["errors"]["count"] + sum(v.get("errors", {}).get("count", 0) for k, v in t.items()
                                        if k in ("aci", "sandbox"))
    flat = {
        "aci_p50_ms": p50("aci"), "aci_p99_ms": t.get("aci", {}).get("p99_ms"),
        "sandbox_p50_ms": p50("sandbox"),
        "rpc_ping_p50_ms": p50("rpc_ping"),
        "swerex_p50_ms": p50("swerex"), "swerex_nodelay_p50_ms": p50("swerex_nodelay"),
        "inspect_p50_ms": p50("inspect"),
        "swerex_over_aci": ratio("swerex"), "swerex_nodelay_over_aci": ratio("swerex_nodelay"),
        "inspect_over_aci": ratio("inspect"),
        "swerex_errors": t.get("swerex", {}).get("errors", {}).get("count"),
        "swerex_nodelay_errors": t.get("swerex_nodelay", {}).get("errors", {}).get("count"),
        "open_local_ms": o.get("local", {}).get("median_ms"),
        "open_local_pool_ms": o.get("local_pool", {}).get("median_ms"),
        "open_docker_warm_ms": o.get("docker_warm", {}).get("median_ms"),
        "open_docker_cold_ms": o.get("docker_cold", {}).get("median_ms"),
        "docker_note": o.get("docker_note"), "docker_image": o.get("docker_image"),
        "concurrent_p50_ms": c["p50_ms"], "concurrent_p99_ms": c["p99_ms"],
        "concurrent_commands_per_s": c["commands_per_s"],
        "errors": errors,
    }
    met = {
        "aci_p50": at_most(flat["aci_p50_ms"], TARGETS["aci_p50_ms"]),
        "speedup": all(x is not None and x >= TARGETS["speedup_vs_others"]
                       for x in (flat["swerex_over_aci"], flat["inspect_over_aci"])),
        "open_local": at_most(flat["open_local_ms"], TARGETS["open_local_ms"]),
        "open_docker_warm": (None if flat["open_docker_warm_ms"] is None
                             else flat["open_docker_warm_ms"] <= TARGETS["open_docker_warm_ms"]),
        "concurrent_p99": at_most(flat["concurrent_p99_ms"], TARGETS["concurrent_p99_ms"]),
        "errors": errors == 0,
    }
    return {**flat, "targets_met": met, "date": r["date"], "cpus": r["cpus"], "task": r["task"],
            "load": [r["load_start"], r["load_end"]], "detail": {"trivial": t, "open": o, "concurrent": c}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["main", "server"], default="main", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="local", help=argparse.SUPPRESS)
    ap.add_argument("--pool-size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--warm", default="", help=argparse.SUPPRESS)
    ap.add_argument("--task", default=None, help="task to open sessions of (default: a small lite task)")
    ap.add_argument("--iterations", type=int, default=1000, help="trivial commands per system")
    ap.add_argument("--rounds", type=int, default=10,
                    help="interleaved rounds the iterations are split into")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--opens", type=int, default=20, help="session opens measured (local)")
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--commands", type=int, default=100)
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--profile", metavar="DIR", default=None, help="py-spy the server into DIR")
    ap.add_argument("--verbose", action="store_true", help="print the server's log at the end")
    a = ap.parse_args()
    if a.role == "server":
        role_server(a)
        return
    result = asyncio.run(run(a))
    summary = summarise(result)
    say(json.dumps(summary))


if __name__ == "__main__":
    main()
