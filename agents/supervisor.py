"""`mlgym run`: start a run's services and agents, watch them, enforce budgets, write the run.

The supervisor starts the broker (event log), the environment server (`mlgym env serve`, a
subprocess, so its crash is survivable), the memory service and one process per agent
(`mlgym agent ...`). It follows the bus (environment events, agent usage) in a `Ledger` and
enforces every budget centrally: steps, tokens, dollars and wall clock, per run and per
agent. A finished budget makes the team stop (`Control`), the agents are terminated if they
do not, and the best validated artefact is written back and submitted. A crashed agent is
restarted (it resumes from the event log); a crashed environment server is restarted and
takes over its session, workspace as the agent left it (a new `RunInfo` tells the agents);
a crashed broker is restarted on the same log and endpoints (clients resynchronise).

SIGINT (Ctrl-C: the children run in sessions of their own, so only the supervisor gets the
terminal's signal), SIGTERM and SIGHUP stop the run cleanly and resumably: `Control(stop)`,
the agents stopped, run.json `stopped`, a partial result.json and the trajectories so far.

With `--bus mqtt://...` (agents/mqttbus.py) the bus is an MQTT broker and the recorder takes
the broker's place: started first, restarted when it dies, its log the run's event log.

Run directory: run.json, bus.json, events.sqlite, broker.log (or mqtt.json, recorder.log),
env.log, env/ (sessions), memory.sqlite, logs/<agent>.log, artefacts/, result.json,
trajectories/<agent>.traj.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from mlgym import log, paths
from mlgym.agents import artefacts as A
from mlgym.files import atomic_write_json
from mlgym.agents import budgets as B
from mlgym.agents import config as C
from mlgym.agents import results as R
from mlgym.agents.ledger import Attempt, Ledger
from mlgym.agents.member_sessions import MemberSessions
from mlgym.agents.mqttbus import MqttBus, run_bus
from mlgym.agents.procs import Child, mlgym_argv
from mlgym.agents.rundir import (
    PIDS_FILE, RUN_FILE, TOKEN_FILE, Artefacts, RunConfig, RunError, default_method, new_run_id,
    preflight,
)
from mlgym.bus import connect
from mlgym.bus import endpoints as E
from mlgym.bus import protocol as P
from mlgym.bus.base import BusClientBase, RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.bus.security import client_curve, server_curve

logger = log.get(__name__)

TICK = 0.2


class Supervisor:
    def __init__(self, cfg: RunConfig, *, resume: bool = False, mqtt_password: str | None = None):
        from mlgym.tasks import registry

        self.cfg = cfg
        self.resume = resume
        self.mqtt_password = mqtt_password  # else from $MLGYM_MQTT_PASSWORD or a file
        self.dir = cfg.run_dir.resolve()
        spec = registry.load_task(cfg.task).spec
        self.spec = spec
        self.metric = spec.priority_metric
        self.direction = spec.metric(self.metric).direction
        self.baseline = dict(spec.baseline.scores)
        self.submission = spec.files.submission
        self.file_artefact = spec.files.submission_kind == "file"
        self.submission_kind = spec.files.submission_kind
        self.eval_timeout = float(spec.evaluation.timeout_s)
        self.ledger = Ledger(self.metric, self.direction)
        self.artefacts = Artefacts(self.dir / "artefacts", Path(self.submission).name)
        self.bus: BusClientBase | None = None
        self.broker: Child | None = None  # the ZeroMQ broker, or the MQTT recorder
        self.mqtt: MqttBus | None = None  # `--bus mqtt://...`: the run's bus is an MQTT broker
        self._tcp_base = 0  # with --host: the env server's tcp port; the memory service's is next
        self.env_proc: Child | None = None
        self.env: RpcClient | None = None
        self.env_endpoint = ""
        self.memory_endpoint = ""
        self.bus_url = ""
        self.session = ""
        self.session_token = ""  # from SessionOpened: every env request for the session
        self.sandbox_warning = ""
        self.observation = ""
        self.tools_help = ""
        # members that work in a session of their own (parallel workers): agents/member_sessions.py
        self.members = MemberSessions(self.dir, cfg.team.own_sessions())
        self.generation = 0
        self.env_restarts = 0
        self.broker_restarts = 0
        self.agent_elapsed: dict[str, float] = {}  # resumed: each agent's time in earlier lives
        self.agents: dict[str, Child] = {}
        self.finished: set[str] = set()  # agents that are done (exited or stopped on purpose)
        self.stopping: dict[str, float] = {}  # agent -> when it was told to stop
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.auto_submitted = False
        self.end_reason = ""
        self._submitted = asyncio.Event()
        self._interrupted = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._snapshots: set[asyncio.Task] = set()
        self._memory_task: asyncio.Task | None = None
        self.progress: Any = None

    # ================================================================== public

    async def run(self) -> dict[str, Any]:
        # A run holds the team's prompts, trajectories, scores and session tokens: only its
        # owner reads it. The services it starts inherit the umask (files 0600, folders 0700).
        umask = os.umask(0o077)
        loop = asyncio.get_running_loop()
        handled = []
        # kept until the very end: a second Ctrl-C is no traceback half-way through the teardown
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.interrupt)
                handled.append(sig)
        try:
            await self._start_interruptibly()
            if self.ledger.ended is not None:  # ended, but its supervisor died writing it out
                return await self._write_ended()
            reason = await self._supervise()
            if reason == "interrupted":
                await self._stop_interrupted()
                raise RunError(f"run interrupted; continue it with: mlgym resume {self.dir}")
            return await self._finish(reason)
        finally:
            try:
                await self._teardown()
            finally:
                for sig in handled:
                    loop.remove_signal_handler(sig)
                os.umask(umask)

    async def _start_interruptibly(self) -> None:
        """`_start`, cut short by a signal (opening a session can take minutes: a task's data
        is prepared then); `_supervise` then sees the interruption at once."""
        start = asyncio.ensure_future(self._start())
        signalled = asyncio.ensure_future(self._interrupted.wait())
        try:
            await asyncio.wait({start, signalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signalled.cancel()
        if start.done():
            start.result()
            return
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await start
        logger.info("interrupted while starting")

    def interrupt(self) -> None:
        """Stop the run without submitting anything (SIGINT/SIGTERM/SIGHUP): `mlgym resume` goes
        on from there."""
        if self._interrupted.is_set():
            logger.warning("already stopping: the agents, then the services, are being stopped")
        self._interrupted.set()

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    # ================================================================== start

    async def _start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if self.cfg.keys and not self.cfg.host:
            raise RunError("--keys secures tcp sockets: give --host too")
        if self.resume:
            _, data = RunConfig.from_run_dir(self.dir)
            if data.get("status") == "finished":
                raise RunError(f"run {self.cfg.run_id} has already finished (see {self.dir / R.RESULT_FILE})")
            self.elapsed_before = float(data.get("elapsed_s", 0.0))
            spent = data.get("agent_elapsed_s") or {}
            self.agent_elapsed = {k: float(v) for k, v in spent.items()}
            self.session = str(data.get("session") or "")
            with contextlib.suppress(OSError):
                self.session_token = (self.dir / TOKEN_FILE).read_text().strip()
            self.members.load()
            self.artefacts.load()
        await preflight(self.cfg.team)
        if self.cfg.mqtt:  # before anything starts: a refused login is one line
            self.mqtt = MqttBus(self.cfg.mqtt, password=self.mqtt_password)
            self.bus = await self.mqtt.login(self.cfg.run_id, "supervisor")
        self._save_run_file("starting")
        await self._start_broker()
        if self.bus is None:
            self.bus = connect(self.bus_url, run=self.cfg.run_id, sender="supervisor",
                               curve=self.cfg.keys)
            await self.bus.connect()
        await self._catch_up()
        if self.ledger.ended is not None:
            if not self.resume:
                raise RunError(f"run {self.cfg.run_id} has already ended "
                               f"({self.ledger.ended.exit_status})")
            return  # nothing to run again: `run` writes its outputs
        self.generation = self.ledger.generation
        for name, spent in self.agent_elapsed.items():  # per-agent wall clocks go on, not afresh
            self.ledger.agent(name).started = time.monotonic() - spent
        await self._start_memory()
        await self._start_env()
        if self.resume:
            await self._reopen_session()
            await self.members.reopen_all(self.env, self._open_member_session, self._member_latest)
        else:
            await self._open_session(None)
            await self.members.open_all(self._open_member_session)
        await self._announce()
        for a in self.cfg.team.agents:
            if not a.external:
                await self._start_agent(a)
        self._save_run_file("running")
        if self.cfg.progress:
            from mlgym.agents.progress import Progress

            self.progress = Progress(self)
            self.progress.start()
        logger.info("run started", run=self.cfg.run_id, task=self.cfg.task, team=self.cfg.team.name,
                    dir=str(self.dir), bus=self.bus_url)

    def _endpoint(self, name: str, port_offset: int) -> str:
        if self.cfg.host:
            host = E.split_host(self.cfg.host)[0]
            return f"tcp://{E.join_host(host, self._tcp_base + port_offset)}"
        return paths.ipc_endpoint(self.dir, name)

    async def _start_broker(self) -> None:
        """Start the broker (again, after a crash: on the same log, and on the same tcp ports,
        so every client's URL stays valid); on an MQTT bus, the recorder."""
        if self.mqtt is not None:
            return await self._start_recorder()
        argv = mlgym_argv("bus", "serve", "--run-dir", str(self.dir))
        if self.cfg.host:
            host, port = E.split_host(self.cfg.host)
            port = int(self.bus_url.rsplit(":", 1)[1]) if self.bus_url else port
            argv += ["--tcp", E.join_host(host, port)]
        argv += self._keys_args()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / E.DESCRIPTOR).unlink()
        self.broker = Child("broker", argv, self.dir / "broker.log")
        await self.broker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.broker.alive:
                raise RunError(f"the broker exited ({self.broker.returncode}):\n{self.broker.tail()}")
            try:
                info = E.read_descriptor(self.dir)
            except (FileNotFoundError, ValueError):
                info = {}
            if info.get("pid") == self.broker.pid:
                if self.bus_url and info["url"] != self.bus_url:
                    raise RunError(f"the restarted broker serves {info['url']}, not {self.bus_url}")
                self.bus_url = str(info["url"])
                break
            await asyncio.sleep(0.02)
        else:
            raise RunError(f"the broker did not start within 30 s (see {self.dir / 'broker.log'})")
        if self.cfg.host:
            port = int(self.bus_url.rsplit(":", 1)[1])
            self._tcp_base = port + 3  # env: +3, memory: +4 (the broker holds PORT..PORT+2)

    async def _start_recorder(self) -> None:
        """The MQTT bus's recorder (again, after a crash: the next epoch on the same log); env
        and memory on tcp PORT and PORT+1 with `--host HOST:PORT` (free ones with no PORT)."""
        assert self.mqtt is not None
        self.broker = self.broker or self.mqtt.recorder(self.dir)
        await self.mqtt.start_recorder(self.broker, self.dir)
        self.bus_url = self.mqtt.url
        if self.cfg.host and not self._tcp_base:
            host, port = E.split_host(self.cfg.host)
            self._tcp_base = port or E.free_tcp_base(host, 2)

    async def _catch_up(self) -> None:
        """Feed the ledger with the log so far (a resumed run), then follow the live stream."""
        assert self.bus is not None
        prefixes = ("env/", "status/", "run/")
        head = 0
        for prefix in prefixes:
            for env in await self.bus.history(1, prefix):
                self.ledger.feed(env)
                head = max(head, env.seq)
        sub = self.bus.subscribe(*prefixes, from_seq=head + 1)
        self._tasks.append(asyncio.create_task(self._follow(sub), name="supervisor-follow"))

    async def _follow(self, sub: Any) -> None:
        async for env in sub:
            att = self.ledger.feed(env)
            if att is None:
                continue
            if att.action == "validate" and att.scores and self.file_artefact:
                t = asyncio.create_task(self._snapshot(att))
                self._snapshots.add(t)
                t.add_done_callback(self._snapshots.discard)
            if att is self.ledger.submitted:  # the team's session only: one submission per run
                self._submitted.set()

    async def _snapshot(self, att: Attempt) -> None:
        """Keep a copy of what was just validated (a crash or a budget stop restores it): the
        server's copy of the bytes it scored, not the workspace, which the agent's next edit may
        already be rewriting."""
        if self.env is None:
            return
        token = self._token(att.session)
        try:
            fc = await self.env.request("env", P.ReadArtefact(session=att.session, step=att.step,
                                                               token=token), timeout=30)
        except (RpcError, TimeoutError) as exc:
            logger.warning("could not copy the validated artefact", error=str(exc))
            return
        assert isinstance(fc, P.FileContent)
        v = att.scores.get(self.metric)
        best = self.ledger.best()
        is_best = v is not None and best is att
        member = self.members.owner(att.session)
        label = f"step-{self.generation}-{member + '-' if member else ''}{att.step}"
        self.artefacts.save(label, fc.data, best=is_best, member=member)

    def _token(self, session: str) -> str:
        """The token of one of the run's sessions: the team's, or a member's own."""
        token = self.members.token(session)
        return self.session_token if token is None else token

    def _sessions(self) -> list[str]:
        return [s for s in (self.session, *self.members.sessions()) if s]

    async def _start_memory(self) -> None:
        from mlgym.tools.memory_service import run_memory

        self.memory_endpoint = self._endpoint("memory", 1)
        ready = asyncio.Event()
        curve = server_curve(self.cfg.keys) if self.cfg.keys else None
        self._memory_task = asyncio.create_task(run_memory(self.memory_endpoint, self.cfg.memory_db(),
                                                           curve=curve, ready=ready), name="memory")
        done, _ = await asyncio.wait({self._memory_task, asyncio.ensure_future(ready.wait())}, timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._memory_task in done:
            self._memory_task.result()
            raise RunError("the memory service stopped at once")
        if not ready.is_set():
            raise RunError("the memory service did not start within 30 s")

    async def _start_env(self) -> None:
        self.env_endpoint = self._endpoint("env", 0)
        # --adopt: a restarted server takes over the session its predecessor left on disk
        argv = mlgym_argv("env", "serve", "--endpoint", self.env_endpoint, "--root", str(self.dir / "env"),
                          "--bus", self.bus_url, "--run", self.cfg.run_id, "--backend", self.cfg.backend,
                          "--adopt", *self._keys_args())
        self.env_proc = Child("env", argv, self.dir / "env.log", env=self._child_env())
        await self.env_proc.start()
        if self.env is None:
            curve = client_curve(self.cfg.keys) if self.cfg.keys else None
            self.env = RpcClient(self.env_endpoint, run=self.cfg.run_id, sender="supervisor", curve=curve)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self.env_proc.alive:
                raise RunError(f"the environment server exited ({self.env_proc.returncode}):\n{self.env_proc.tail()}")
            try:
                await self.env.request("env", P.Ping(), timeout=0.5)
                break
            except (TimeoutError, RpcError):
                await asyncio.sleep(0.05)
        else:
            raise RunError(f"the environment server did not answer within 60 s (see {self.dir / 'env.log'})")
        self._save_pids()

    async def _reopen_session(self) -> None:
        """After the environment server was restarted (or the run resumed): go on in the same
        session if the new server adopted it (its workspace as the agent left it), else open a
        new one with the latest validated artefact written into it."""
        assert self.env is not None
        if self.session:
            try:
                info = await self.env.request("env", P.SessionStatus(
                    session=self.session, token=self.session_token), timeout=10)
            except (RpcError, TimeoutError):
                info = None
            if isinstance(info, P.SessionInfo) and info.state == "open":
                self.generation += 1
                logger.info("session adopted", session=self.session, generation=self.generation,
                            step=info.step)
                return
        await self._open_session(self.artefacts.latest)

    async def _new_session(self, member_steps: int = 0) -> P.SessionOpened:
        assert self.env is not None
        budget = self.cfg.team.budget.steps
        left = max(budget - self.ledger.steps, 1) if budget else 0
        if member_steps:
            left = min(left, member_steps) if left else member_steps
        # The supervisor enforces the team's budget; the session's own limit is the backstop,
        # with room for one racing action per agent and the supervisor's submit of the best.
        slack = len(self.cfg.team.agents) + 1
        limits = P.Limits(max_steps=left + slack if left else 0)
        try:
            opened = await self.env.request("env", P.SessionOpen(task=self.cfg.task, backend=self.cfg.backend,
                                                                  limits=limits, seed=self.cfg.seed,
                                                                  run=self.cfg.run_id), timeout=1800)
        except RpcError as exc:
            raise RunError(f"the environment server could not open a {self.cfg.task} session: "
                           f"{exc.code}: {exc.message}") from None
        assert isinstance(opened, P.SessionOpened)
        if opened.info.warning and opened.info.warning != self.sandbox_warning:
            self.sandbox_warning = opened.info.warning  # said once per run (and again if it changes)
            logger.warning("the sandbox isolates less than it should", detail=opened.info.warning)
        return opened

    async def _open_member_session(self, member: str, restore: bytes | None) -> tuple[str, str]:
        """A session of its own for a parallel worker (its own sandbox and workspace)."""
        assert self.env is not None
        opened = await self._new_session(self.cfg.team.agent(member).budget.steps)
        session, token = opened.info.session, opened.token
        if restore is not None and self.file_artefact:
            await self.env.request("env", P.WriteFile(session=session, path=self.submission,
                                                      data=restore, token=token), timeout=30)
        logger.info("member session opened", member=member, session=session,
                    restored=restore is not None)
        return session, token

    def _member_latest(self, member: str) -> bytes | None:
        return self.artefacts.latest_of.get(member)

    async def _open_session(self, restore: bytes | None) -> None:
        assert self.env is not None
        opened = await self._new_session()
        self.session, self.session_token = opened.info.session, opened.token
        # kept apart from run.json (which viewers show): a resumed run needs it to go on
        token_file = self.dir / TOKEN_FILE
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.session_token + "\n")
        self.observation = opened.observation
        self.tools_help = opened.tools_help
        if restore is not None and self.file_artefact:
            await self.env.request("env", P.WriteFile(session=self.session, path=self.submission, data=restore,
                                                  token=self.session_token),
                                   timeout=30)
        self.generation += 1
        logger.info("session opened", session=self.session, generation=self.generation, restored=restore is not None)

    async def _announce(self) -> None:
        assert self.bus is not None
        team = self.cfg.team
        info = P.RunInfo(
            run=self.cfg.run_id, task=self.cfg.task, session=self.session, env=self.env_endpoint,
            session_token=self.session_token,
            memory=self.memory_endpoint, observation=self.observation, tools_help=self.tools_help, team=team.name,
            members=team.members(), budget=team.budget.as_dict(),
            agent_budgets={a.name: a.budget.as_dict() for a in team.agents}, baseline=self.baseline,
            directions={m.name: m.direction for m in self.spec.metrics}, metric=self.metric,
            reserve_steps=len(team.agents) + 1 if team.budget.steps else 0,
            generation=self.generation, started=time.time(),
            roles=dict(team.roles), channels=team.channels(), sessions=self.members.run_info(),
            approvers=team.approvers(), submission=self.submission,
            submission_kind=self.submission_kind,
        )
        await self.bus.publish("run/info", info, acked=True)

    def _agent_argv(self, a: C.AgentConfig) -> list[str]:
        return mlgym_argv("agent", "--role", a.role, "--name", a.name, "--run", self.cfg.run_id, "--bus",
                          self.bus_url, "--model", a.model, "--history", a.history, "--mode", a.mode,
                          "--temperature", str(a.temperature), "--wait-timeout", str(a.wait_timeout_s),
                          "--max-item-steps", str(a.max_item_steps), *self._keys_args(),
                          "--max-tokens", str(a.max_tokens),
                          "--call-timeout", str(a.call_timeout_s),
                          "--stall-timeout", str(a.stall_timeout_s),
                          "--max-retries", str(a.max_retries),
                          "--stream" if a.stream else "--no-stream")

    def _keys_args(self) -> list[str]:
        return ["--keys", str(self.cfg.keys)] if self.cfg.keys else []

    def _child_env(self) -> dict[str, str]:
        """What the run's processes get in their environment beyond ours: the MQTT password."""
        return self.mqtt.child_env() if self.mqtt is not None else {}

    async def _start_agent(self, a: C.AgentConfig) -> None:
        child = self.agents.get(a.name) or Child(a.name, self._agent_argv(a),
                                                 self.dir / "logs" / f"{a.name}.log",
                                                 env=self._child_env())
        self.agents[a.name] = child
        await child.start()
        u = self.ledger.agent(a.name)
        u.role = a.role
        u.model = u.model or a.model  # until it declares its own (agent_status)
        self._save_pids()

    # ================================================================== supervise

    async def _supervise(self) -> str:
        last_save = time.monotonic()
        while True:
            if self._submitted.is_set():
                return "submitted"
            if self._interrupted.is_set():
                return "interrupted"
            if self.broker is not None and not self.broker.alive:
                reason = await self._broker_crashed()
                if reason:
                    return reason
            if self.env_proc is not None and not self.env_proc.alive:
                reason = await self._env_crashed()
                if reason:
                    return reason
            await self._check_agents()
            reason = await self._check_budgets()
            if reason:
                return reason
            if self._team_gone():
                if await self._session_over():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._submitted.wait(), 10)
                    if self._submitted.is_set():
                        return "submitted"
                return "merged" if self.cfg.team.merge == "best" else "agents_stopped"
            if time.monotonic() - last_save > 2:
                self._save_run_file("running")
                last_save = time.monotonic()
            await asyncio.sleep(TICK)

    async def _broker_crashed(self) -> str:
        """Restart a dead broker on the same log and endpoints: it takes the next epoch and goes
        on with the sequence; every client reconnects by itself, subscribers refill what they
        missed from its history, and acked publishes in flight are sent again."""
        assert self.broker is not None
        self.broker_restarts += 1
        logger.warning("the broker died; restarting it", process=self.broker.name,
                       code=self.broker.returncode,
                       restarts=self.broker_restarts)
        if self.broker_restarts > self.cfg.team.max_restarts:
            return "bus_failed"
        try:
            await self._start_broker()
        except RunError as exc:
            logger.error("could not restart the broker", error=str(exc))
            return "bus_failed"
        self._save_pids()
        return ""

    async def _env_crashed(self) -> str:
        assert self.env_proc is not None
        code = self.env_proc.returncode
        self.env_restarts += 1
        logger.warning("the environment server died", code=code, restarts=self.env_restarts)
        if self.env_restarts > self.cfg.team.max_restarts:
            return "env_failed"
        try:
            await self._start_env()
            await self._reopen_session()
            await self.members.reopen_all(self.env, self._open_member_session, self._member_latest)
            await self._announce()
        except (RunError, RpcError, TimeoutError) as exc:
            logger.error("could not restart the environment", error=str(exc))
            return "env_failed"
        return ""

    async def _check_agents(self) -> None:
        for name, child in self.agents.items():
            if name in self.finished or child.alive:
                continue
            code = child.returncode
            u = self.ledger.agent(name)
            if name in self.stopping or code == 0:
                self.finished.add(name)
                u.exit = u.exit or ("stopped" if name in self.stopping else f"exited {code}")
                continue
            a = self.cfg.team.agent(name)
            if u.restarts >= self.cfg.team.max_restarts:
                logger.error("agent keeps crashing; giving up on it", agent=name, code=code)
                u.exit = f"crashed ({code}), {u.restarts} restarts"
                self.finished.add(name)
                continue
            u.restarts += 1
            logger.warning("agent crashed; restarting it", agent=name, code=code, restart=u.restarts)
            await self._start_agent(a)
        # stop agents that were told to stop and did not
        now = time.monotonic()
        for name, since in list(self.stopping.items()):
            child = self.agents.get(name)
            if child is not None and child.alive and now - since > self.cfg.grace_s:
                await child.stop(self.cfg.grace_s)

    def _critical(self) -> dict[str, list[str]]:
        """Critical roles (the team cannot go on without them) -> their members."""
        team = self.cfg.team
        out: dict[str, list[str]] = {}
        for a in team.agents:
            if team.role(a.role).critical:
                out.setdefault(a.role, []).append(a.name)
        return out

    def _team_gone(self) -> bool:
        """Every member of some critical role is gone (one of three parallel coders ending
        leaves the others at work)."""
        groups = self._critical()
        internal = {r: [n for n in ns if not self.cfg.team.agent(n).external]
                    for r, ns in groups.items()}
        if not any(internal.values()):  # all external: they report their end on the bus
            crit = [n for ns in groups.values() for n in ns]
            return all(self.ledger.agent(n).state in ("stopped",) for n in crit)
        return any(ns and all(n in self.finished for n in ns) for ns in internal.values())

    def _last_of_role(self, name: str) -> bool:
        role = self.cfg.team.agent(name).role
        others = [a.name for a in self.cfg.team.agents if a.role == role and a.name != name]
        return all(n in self.finished or n in self.stopping for n in others)

    async def _session_over(self) -> bool:
        assert self.env is not None
        try:
            info = await self.env.request(
                "env", P.SessionStatus(session=self.session, token=self.session_token), timeout=5)
        except (RpcError, TimeoutError):
            return False
        return isinstance(info, P.SessionInfo) and info.state in ("submitted", "truncated")

    async def _check_budgets(self) -> str:
        now = time.monotonic()
        skip = set(self.stopping) | self.finished
        run_over = B.run_exhausted(self.cfg.team.budget, self.ledger, self.elapsed)
        if run_over:
            return f"budget:{run_over}"
        for a, over in B.agents_exhausted(self.cfg.team.agents, self.ledger, now, skip):
            if self.cfg.team.role(a.role).critical and self._last_of_role(a.name):
                return f"budget:{a.name}:{over}"
            logger.info("agent budget exhausted; stopping the agent", agent=a.name, budget=over)
            await self._control("stop", f"your {over} budget is exhausted", target=a.name)
            self.stopping[a.name] = now
        return ""

    async def _control(self, action: str, reason: str, target: str = "") -> None:
        """An order, stamped with the current generation: agents started in a later one (after a
        resume) ignore it when they read it back from the log."""
        assert self.bus is not None
        await self.bus.publish("run/control", P.Control(action=action, reason=reason, target=target,
                                                        generation=self.generation), acked=True)

    # ================================================================== finish

    async def _stop_interrupted(self) -> None:
        """A clean, resumable stop: the agents told and stopped, then run.json `stopped`, a partial
        result.json (what the run did so far) and, at teardown, the trajectories so far."""
        self.end_reason = "interrupted"
        logger.info("run interrupted; stopping the agents")
        if self.bus is not None and self.agents:
            try:
                order = self._control("stop", "the run was interrupted; it can be resumed")
                await asyncio.wait_for(order, 30)
            except (RpcError, TimeoutError) as exc:
                logger.warning("could not tell the agents to stop; stopping them by signal",
                               error=str(exc))
        await self._stop_agents()
        result = self._result("stopped", partial=True)
        R.write_result(self.dir, result)
        self._save_run_file("stopped", result=result)

    async def _finish(self, reason: str) -> dict[str, Any]:
        self.end_reason = reason
        logger.info("run ending", reason=reason)
        if reason == "bus_failed":  # nothing can be said on the bus: stop and write what is known
            await self._stop_agents()
            self.exit_status = "bus_failed"
            return await self._write_outputs("bus_failed")
        if reason == "submitted":
            await self._control("stop", "the run was submitted")
        elif reason == "merged":
            await self._control("stop", "the team finished; the best artefact is submitted")
        else:
            await self._control("submit", f"the run is ending ({reason}); the best artefact is submitted")
        await self._stop_agents()
        if not self._submitted.is_set() and reason != "env_failed":
            await self._autosubmit()
        sub = self.ledger.submitted
        if reason == "submitted" and sub is not None:
            exit_status = "autosubmission (max_steps)" if sub.action == "autosubmit" else "submitted"
        elif reason == "merged" and sub is not None:
            exit_status = f"submitted (merge: {self.cfg.team.merge})"
            self.auto_submitted = False  # the design's own way to submit, not a fallback
            self.ledger.agent("supervisor").exit = f"merged ({self.cfg.team.merge})"
        elif reason == "env_failed":
            exit_status = "env_failed"
        else:
            exit_status = f"autosubmission ({reason.split(':', 1)[-1]})" if sub is not None else f"no_submission ({reason})"
        if sub is not None and sub.error and not sub.scores:
            exit_status += ": submission failed"
        assert self.bus is not None
        best = self.ledger.best()
        await self.bus.publish("run/end", P.RunEnd(
            run=self.cfg.run_id, exit_status=exit_status, scores=sub.scores if sub else {},
            best_scores=best.scores if best else {}, baseline=self.baseline, reason=reason), acked=True)
        if self.env is not None and self.session:
            with contextlib.suppress(RpcError, TimeoutError):
                await self.env.request("env", P.SessionClose(session=self.session, token=self.session_token), timeout=30)
            await self.members.close_all(self.env)
        self.exit_status = exit_status
        return await self._write_outputs(exit_status)

    async def _write_ended(self) -> dict[str, Any]:
        """A resumed run whose log holds its `RunEnd` (its supervisor died between ending the run
        and writing result.json): write the outputs from the log, run nothing again."""
        ended = self.ledger.ended
        assert ended is not None
        logger.info("the run had ended; writing its outputs", exit_status=ended.exit_status)
        self.end_reason = ended.reason
        sub = self.ledger.submitted
        self.auto_submitted = sub is not None and sub.agent == "supervisor"
        self.exit_status = ended.exit_status
        return await self._write_outputs(ended.exit_status)

    async def _stop_agents(self) -> None:
        children = [c for c in self.agents.values() if c.alive]
        if not children:
            return
        await asyncio.gather(*(c.wait(self.cfg.grace_s) for c in children))
        await asyncio.gather(*(c.stop(self.cfg.grace_s) for c in children if c.alive))
        for name, c in self.agents.items():
            self.finished.add(name)

    async def _autosubmit(self) -> None:
        """Put the best validated artefact back and submit it (or the current one if none)."""
        assert self.env is not None
        if self.env_proc is not None and not self.env_proc.alive:
            return
        await self._settle()
        if self._submitted.is_set():  # an agent's last action ended the episode after all
            return
        row = self.ledger.agent("supervisor")  # its row in the table and result.json
        row.role, row.state, row.detail = "supervisor", "working", "submitting the best artefact"
        try:
            await self._put_back_best()
            await self.env.request("env", P.Act(session=self.session, command="submit", agent="supervisor",
                                         token=self.session_token),
                                   timeout=self.eval_timeout + 120)
        except RpcError as exc:
            logger.warning("auto-submission failed", code=exc.code, error=exc.message)
            row.exit, row.exit_detail = "auto-submission failed", f"{exc.code}: {exc.message}"
            return
        except TimeoutError:
            logger.warning("auto-submission timed out")
            row.exit = "auto-submission failed"
            return
        self.auto_submitted = True
        row.state, row.exit = "stopped", "auto-submitted"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._submitted.wait(), 15)

    async def _put_back_best(self) -> None:
        """The best validated artefact, from whichever session validated it, into the team's
        session (recorded on `team/artefact`, so analyses can follow its authorship)."""
        assert self.env is not None and self.bus is not None
        best = self.ledger.best()
        if best is None:
            return
        if self.file_artefact:
            if self.artefacts.best is None:
                return
            await self.env.request("env", P.WriteFile(session=self.session, path=self.submission,
                                                      data=self.artefacts.best,
                                                      token=self.session_token), timeout=30)
            copy = P.ArtefactCopy(source_session=best.session, source_step=best.step,
                                  target_session=self.session, path=self.submission,
                                  size=len(self.artefacts.best))
        elif best.session != self.session and best.session in self.members.sessions():
            try:  # a folder: as it is now in the worker's workspace
                copy = await A.copy(self.env, src=(best.session, self._token(best.session)),
                                    dst=(self.session, self.session_token), step=best.step,
                                    path=self.submission, kind="dir", agent="supervisor")
            except A.CopyError as exc:
                logger.warning("could not copy the best artefact into the team's session",
                               error=str(exc))
                return
        else:
            return
        await self.bus.publish("team/artefact", copy, acked=True)

    async def _settle(self) -> None:
        """Wait until the session has answered every command it started (a stopped agent's
        last command still runs to its end in the environment) and its artefact copies are
        taken, so the best artefact is known and nothing overwrites it afterwards."""
        deadline = time.monotonic() + self.eval_timeout + 60
        while any(self.ledger.busy(s) for s in self._sessions()) and time.monotonic() < deadline:
            if self.env_proc is not None and not self.env_proc.alive:
                return
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # the observation event trails the reply by a moment
        if self._snapshots:
            await asyncio.gather(*self._snapshots, return_exceptions=True)

    async def _write_outputs(self, exit_status: str) -> dict[str, Any]:
        if self._snapshots:
            await asyncio.gather(*self._snapshots, return_exceptions=True)
        result = self._result(exit_status)
        R.write_result(self.dir, result)
        self._save_run_file("finished", result=result)
        return result

    def _result(self, exit_status: str, *, partial: bool = False) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "team": self.cfg.team.name, "seconds": round(self.elapsed, 3),
            **({"merge": self.cfg.team.merge} if self.cfg.team.merge else {}),
            **({"budget_match": self.cfg.team.budget_match} if self.cfg.team.budget_match else {}),
            "env_restarts": self.env_restarts, "broker_restarts": self.broker_restarts,
            "end_reason": self.end_reason, "run_dir": str(self.dir)}
        if partial:  # `mlgym score` leaves it out until a resume finishes the run
            extra["partial"] = True
        declared = {n: u.model for n, u in self.ledger.agents.items() if u.model}
        method = self.cfg.method or default_method(self.cfg.team, declared)
        return R.result_dict(task=self.cfg.task, method=method, run_id=self.cfg.run_id,
                             ledger=self.ledger, exit_status=exit_status, baseline=self.baseline,
                             auto_submitted=self.auto_submitted, extra=extra)

    async def _teardown(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        for c in self.agents.values():
            if c.alive:
                await c.stop(self.cfg.grace_s)
        for t in self._tasks:
            t.cancel()
        if self.env_proc is not None and self.env_proc.alive:
            await self.env_proc.stop(10)
        if self.env is not None:
            await self.env.close()
        if self._memory_task is not None:
            self._memory_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._memory_task
        if self.bus is not None:
            await self.bus.close()
        if self.broker is not None and self.broker.alive:
            await self.broker.stop(10)
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        # trajectories come from the closed log, so they hold every message
        if (self.dir / R.RESULT_FILE).exists():
            try:
                result = json.loads((self.dir / R.RESULT_FILE).read_text())
                scores = [a.get("scores", {}) for a in result.get("attempts", [])]
                trajs = await asyncio.to_thread(R.trajectories, self.dir, exit_status=result["exit_status"],
                                                submission=self.submission if result.get("final_submission") else None,
                                                scores=scores)
                await asyncio.to_thread(R.write_trajectories, self.dir, trajs)
            except Exception as exc:  # the run is over; say what is missing rather than fail
                logger.error("could not write the trajectories", error=str(exc))

    # ================================================================== files

    def _save_run_file(self, status: str, result: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        data = {**self.cfg.to_json(), "status": status, "elapsed_s": round(self.elapsed, 3),
                "agent_elapsed_s": {n: round(now - u.started, 3)
                                    for n, u in self.ledger.agents.items()},
                "updated": time.time(), "session": self.session, "generation": self.generation,
                "member_sessions": self.members.ids(),
                "bus": self.bus_url, "env": self.env_endpoint, "memory": self.memory_endpoint,
                "members": self._members()}
        if result is not None:
            data["exit_status"] = result["exit_status"]
        atomic_write_json(self.dir / RUN_FILE, data)

    def _members(self) -> dict[str, dict[str, Any]]:
        """Each team member as the run credits it: its model and implementation as declared
        on the bus (the team file's model for a member the run started, until it declares)."""
        out = {}
        for a in self.cfg.team.agents:
            u = self.ledger.agents.get(a.name)
            out[a.name] = {"role": a.role, "external": a.external,
                           "model": (u.model if u else "") or ("" if a.external else a.model),
                           "implementation": u.implementation if u else ""}
        return out

    def _save_pids(self) -> None:
        pids = {"supervisor": os.getpid(), "broker": self.broker.pid if self.broker else None,
                "env": self.env_proc.pid if self.env_proc else None,
                "agents": {n: c.pid for n, c in self.agents.items()}}
        atomic_write_json(self.dir / PIDS_FILE, pids)


async def run_team(task: str, team: C.TeamConfig, *, run_dir: Path | None = None, run_id: str | None = None,
                   backend: str = "local", host: str | None = None, keys: str | None = None, progress: bool = True,
                   seed: int = 0, method: str = "", grace_s: float = 5.0, memory: str | Path | None = None,
                   bus: str | None = None) -> dict[str, Any]:
    """`memory`: the memory store's SQLite file, to share one across runs (rows are kept per
    task); None gives the run its own, RUN_DIR/memory.sqlite. `bus`: an MQTT broker's URL
    (agents/mqttbus.py) instead of a ZeroMQ broker of the run's own."""
    run_id = run_id or new_run_id(task, team.name)
    run_dir = run_dir or paths.runs_root() / run_id
    mqtt, password = run_bus(bus, run_id) if bus else (None, None)
    cfg = RunConfig(task=task, team=team, run_id=run_id, run_dir=Path(run_dir), backend=backend, host=host, keys=keys,
                    progress=progress, seed=seed, method=method, grace_s=grace_s,
                    memory=str(Path(memory).resolve()) if memory else None, mqtt=mqtt)
    return await Supervisor(cfg, mqtt_password=password).run()


async def resume_run(run_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    cfg, _ = RunConfig.from_run_dir(Path(run_dir))
    cfg.progress = progress
    return await Supervisor(cfg, resume=True).run()
