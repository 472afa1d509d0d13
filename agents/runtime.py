"""The agent runtime: one agent process on the bus (`mlgym agent --role R --run RUN --bus URL`).

It learns everything else from the bus: the run's `RunInfo` (task, session, the environment
and memory endpoints, budgets) on `run/info`; its own earlier turns on `agents/<name>/step`
(so a restarted agent rebuilds its conversation and goes on); team messages on `team/...`;
orders from the supervisor (`Control`) on `run/control`. It reaches the environment only
through the wire protocol (RPC service "env"), never through the server's code.

Each turn: the history policy picks what the model sees, the model replies, the reply is
parsed into one command, the command runs (in the environment, or here for memory,
literature and team commands), and the turn is published (acked) as an `AgentStep`, with an
`AgentStatus` carrying the usage the supervisor enforces budgets on.

A model call is bounded (agents/llm/limits.py); while it runs past half a second the agent says
so (`calling`), and each retry too (`retrying`). A call that cannot be made ends the agent with
a typed exit (model_unreachable, rate_limited, auth_error, bad_request, context_overflow); a
context overflow first shortens the history and tries once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mlgym import __version__, log
from mlgym.agents import prompts, team
from mlgym.agents import roles as R
from mlgym.agents import topology as T
from mlgym.agents.commands import WORKSPACE, Commands, SessionLost, Stopped, call_text
from mlgym.agents.history import Entry, HistoryPolicy
from mlgym.agents.llm import Completion, Message, ModelError, create
from mlgym.agents.llm.base import Retry
from mlgym.agents.llm.limits import default_max_tokens
from mlgym.agents.parsing import FormatError, split_reply
from mlgym.agents.research import Research
from mlgym.agents.tools import role_tools
from mlgym.bus import connect
from mlgym.bus import protocol as P
from mlgym.bus.base import BusClientBase, RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.bus.security import ClientCurve, client_curve
from mlgym.tools.aci import openai_tools

logger = log.get(__name__)
CALLING_AFTER_S = 0.5  # a model call running longer than this is announced (`calling`)

IMPLEMENTATION = f"python/mlgym-bus {__version__}"  # what this agent declares it is

FLUSH_TIMEOUT_S = 10.0  # on the way out, how long the last turn's record may wait for the broker

@dataclass
class Options:
    name: str
    role: str  # "": the role the run's RunInfo gives this member
    run: str
    bus: str
    model: str
    history: str = "last:5"
    mode: str = "text"
    temperature: float = 0.0
    max_tokens: int = 0  # 0: the model's default (limits.default_max_tokens)
    call_timeout_s: float = 300.0
    stall_timeout_s: float = 120.0
    max_retries: int = 5
    stream: bool = True
    wait_timeout_s: float = 600.0
    max_item_steps: int = 15
    max_format_errors: int = 3
    repeat_limit: int = 3
    info_timeout_s: float = 120.0
    command_timeout_s: float = 0.0  # 0: the session's own
    curve: Any = None


@dataclass
class State:
    """What the agent must remember besides its conversation; saved in every AgentStep."""

    env_step: int = 0
    remaining: int = 0
    open_file: str = ""
    cwd: str = WORKSPACE
    current: dict[str, Any] = field(default_factory=dict)  # the work item / question in hand
    consumed: list[str] = field(default_factory=list)  # ids of team messages already taken in
    asked: list[str] = field(default_factory=list)  # question ids this agent asked
    assigned: int = 0
    format_errors: int = 0
    item_steps: int = 0
    item_scores: dict[str, float] = field(default_factory=dict)
    last_scores: dict[str, float] = field(default_factory=dict)
    generation: int = 1
    # team bookkeeping (docs/teams.md): work items out and their results, the latest
    # validation in this member's session, review requests and verdicts
    outstanding: dict[str, str] = field(default_factory=dict)  # work item -> worker
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # work item -> its result
    last_validated: dict[str, Any] = field(default_factory=dict)  # session, step, scores
    item_validated: dict[str, Any] = field(default_factory=dict)  # the same, within the item
    reviews: int = 0  # review requests sent
    approved: dict[str, Any] = field(default_factory=dict)  # the latest approval: session, step

    def save(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["consumed"] = self.consumed[-200:]  # the recent ones; older steps hold the rest
        return d


class Agent(Commands):
    def __init__(self, opts: Options):
        self.o = opts
        self.name = opts.name
        self.role = opts.role  # settled in _start, from RunInfo when not given
        self.r: R.Role | None = None  # the role's definition
        self.tools: list = []
        self.tool_map: dict[str, Any] = {}
        self.policy = HistoryPolicy(opts.history)
        self.max_tokens = opts.max_tokens or default_max_tokens(opts.model.partition("@")[0])
        self.state = State()
        self.entries: list[Entry] = []
        self.step = 0
        self.usage_prompt = 0
        self.usage_completion = 0
        self.usage_cached = 0
        self.cost = 0.0
        self.exit_status = ""
        self.exit_detail = ""  # why, in words, when the exit is a failure
        self.notes: list[str] = []
        self.bus: BusClientBase | None = None
        self.env: RpcClient | None = None
        self.info: P.RunInfo | None = None
        self.research: Research | None = None
        self.model: Any = None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._session_changed = asyncio.Event()
        self._paused = asyncio.Event()
        self._paused.set()
        self._inbox: asyncio.Queue[P.Envelope] = asyncio.Queue()
        self._triggers: asyncio.Queue[P.Envelope] = asyncio.Queue()
        self._consumed: set[str] = set()
        self._listener: asyncio.Task | None = None
        self._recent: list[tuple[str, int]] = []  # (action, exit code) of the last turns
        self.timings: list[dict[str, float]] = []  # per turn: model, env, publish, total (s)
        self._pending: asyncio.Future | None = None  # the last turn's record, being published
        self.joined = 0  # the generation of the RunInfo this process started with

    # ================================================================== lifecycle

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop, "terminated (SIGTERM)")
        self.bus = connect(self.o.bus, run=self.o.run, sender=self.name, curve=self.o.curve)
        await self.bus.connect()
        try:
            await self._start()
            await self._status("working", "started")
            await self._loop()
        except Stopped:
            if not self.exit_status:
                self.exit_status, self.exit_detail = "stopped", self._stop_reason
        except ModelError as exc:  # the model cannot be created (no API key, a bad spec)
            logger.error("no model; the agent ends", agent=self.name, error=str(exc))
            self.exit_status, self.exit_detail = exc.exit, str(exc)
        except Exception as exc:
            logger.exception("agent failed", agent=self.name)
            self.exit_status = f"crashed: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._status("crashed", self.exit_status)
            raise
        finally:
            # bounded: an acked publish waits out a restarting broker, but a broker that is going
            # away with the run (its supervisor killed) never answers
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), FLUSH_TIMEOUT_S)
            if not self.exit_status.startswith("crashed"):
                detail = self.exit_detail or self.exit_status or self._stop_reason
                with contextlib.suppress(Exception):  # bounded: the broker may be going away too
                    await asyncio.wait_for(self._status("stopped", detail, acked=True,
                                                        exit=self.exit_status), 3)
            await self._close()
        return self.exit_status

    def request_stop(self, reason: str = "stop") -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        for c in (self.env, self.research.memory if self.research else None):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()
        if self.model is not None:
            with contextlib.suppress(Exception):
                await self.model.aclose()
        if self.bus is not None:
            await self.bus.close()

    async def _start(self) -> None:
        assert self.bus is not None
        self.info = await self._run_info()
        info = self.info
        if self.o.run and info.run != self.o.run:
            raise RuntimeError(f"the bus serves run {info.run!r}, not {self.o.run!r}")
        self.o.run = info.run
        self._settle_role(info)
        self.state.generation = info.generation
        self.joined = info.generation  # orders of earlier generations are not for this process
        curve = self.o.curve
        if curve is not None and not isinstance(curve, ClientCurve):
            curve = client_curve(curve)  # a key folder: the same client key for every service
        self.env = RpcClient(info.env, run=self.o.run, sender=self.name, curve=curve)
        memory = RpcClient(info.memory, run=self.o.run, sender=self.name, curve=curve) if info.memory else None
        self.research = Research(memory=memory, task=info.task, author=self.name, role=self.role)
        self.model = make_model(self.o.model, role=self.role, agent=self.name, info=info,
                                opts=self.o)
        await self._restore()
        sub = self.bus.subscribe("team/", "run/", from_seq=1)
        self._listener = asyncio.create_task(self._listen(sub), name=f"agent-{self.name}-listen")
        if not self.entries:
            self.state.remaining = int(info.budget.get("steps", 0))
            assert self.r is not None
            self.state.cwd = await self._workspace()
            system = prompts.system_prompt(self.r, self.tools, mode=self.o.mode, name=self.name,
                                           team_name=info.team)
            instance = prompts.instance_prompt(
                self.r, info.observation or info.task, step=0, remaining=self.state.remaining,
                cwd=self.state.cwd, team=info.members,
                channels=T.describe(info.channels, self.name), name=self.name, team_name=info.team)
            self._new = [Entry(Message.system(system)), Entry(Message.user(instance))]
        else:
            # told before its next call, not after: what it did last may have been cut short
            self._new = [Entry(Message.user(
                "NOTE: You were restarted and your conversation was restored from the run's event log. "
                "Your last command may not have finished; check the state of your files before going on."))]

    def _settle_role(self, info: P.RunInfo) -> None:
        """This member's role: as given (`--role`), else the one RunInfo names for it; its
        definition from RunInfo (a team's own roles travel there), else the shipped one."""
        name = self.o.role or info.members.get(self.name, "")
        if not name:
            raise RuntimeError(f"{self.name} is not a member of run {info.run} and no --role was "
                               f"given (members: {', '.join(info.members)})")
        self.role = self.o.role = name
        self.r = R.lookup(info.roles, name)
        self.tools = role_tools(self.r)
        self.tool_map = {t.name: t for t in self.tools}

    def session(self) -> tuple[str, str]:
        """(session id, token) this member acts in: its own, or the team's."""
        assert self.info is not None
        mine = self.info.sessions.get(self.name)
        if mine is not None:
            return mine.session, mine.token
        return self.info.session, self.info.session_token

    async def _workspace(self) -> str:
        """Where this member's workspace is, as its commands see it (WORKSPACE unless the
        sandbox runs without namespaces): the agent's first working directory."""
        assert self.env is not None
        session, token = self.session()
        try:
            info = await self.env.request("env", P.SessionStatus(session=session, token=token),
                                          timeout=10)
        except (RpcError, TimeoutError):
            return WORKSPACE
        return (info.workspace if isinstance(info, P.SessionInfo) else "") or WORKSPACE

    async def _run_info(self) -> P.RunInfo:
        """The latest RunInfo of this run, from history or, if the run has not announced one
        yet, from the live stream."""
        assert self.bus is not None
        sub = self.bus.subscribe("run/info", from_seq=1)
        latest: P.RunInfo | None = None
        deadline = time.monotonic() + self.o.info_timeout_s
        try:
            while True:
                timeout = 0.3 if latest is not None else max(deadline - time.monotonic(), 0.01)
                try:
                    env = await sub.get(timeout)
                except TimeoutError:
                    if latest is not None:
                        return latest
                    where = getattr(self.bus, "prefix", "")  # an MQTT bus: the run's topics
                    hint = (f" (MQTT topics under {where!r}; a run's are under mlgym/<run id> "
                            "unless its URL names a prefix: give --run)") if where else ""
                    raise RuntimeError(f"no RunInfo on run/info within {self.o.info_timeout_s:.0f} s: "
                                       f"is the supervisor running?{hint}") from None
                if isinstance(env.body, P.RunInfo) and (latest is None or env.body.generation >= latest.generation):
                    latest = env.body
        finally:
            await sub.close()

    async def _restore(self) -> None:
        """Rebuild the conversation, usage and state from this agent's own recorded turns."""
        assert self.bus is not None
        steps: dict[int, P.AgentStep] = {}
        for env in await self.bus.history(1, f"agents/{self.name}/step"):
            if isinstance(env.body, P.AgentStep):
                steps[env.body.step] = env.body
        if not steps:
            return
        for _, s in sorted(steps.items()):
            for d in s.messages:
                d = dict(d)
                obs = bool(d.pop("_obs", False))
                self.entries.append(Entry(msgspec.convert(d, Message), observation=obs))
            self.usage_prompt += s.prompt_tokens
            self.usage_completion += s.completion_tokens
            self.usage_cached += s.cached_tokens
            self.cost += s.cost_usd
            self._consumed.update(s.state.get("consumed", []))
        last = steps[max(steps)]
        self.step = max(steps)
        known = {k: v for k, v in last.state.items() if k in State.__dataclass_fields__}
        self.state = State(**known)
        self.state.consumed = []
        self.state.generation = self.joined
        logger.info("agent resumed from the event log", agent=self.name, steps=self.step)

    # ================================================================== listening

    async def _listen(self, sub: Any) -> None:
        async for env in sub:
            body = env.body
            if isinstance(body, P.RunInfo):
                if self.info is not None and body.generation > self.info.generation:
                    self.info = body
                    self._session_changed.set()
            elif isinstance(body, P.Control):
                # an order from before this process joined (the `stop` of an interrupted run,
                # read back from the log after a resume) is history, not an order
                if body.target in ("", self.name, self.role) and body.generation >= self.joined:
                    self._on_control(body)
            elif isinstance(body, P.RunEnd):
                self.request_stop(f"run ended ({body.exit_status})")
            elif env.id not in self._consumed and self._for_me(env):
                assert self.r is not None
                if team.kind_of(body) in self.r.wakes_on:
                    self._triggers.put_nowait(env)
                else:
                    self._inbox.put_nowait(env)

    def _for_me(self, env: P.Envelope) -> bool:
        """A team message addressed to this member (`to`), on a channel the team allows, of a
        kind its role takes in. Messages without `to` (runs from before topologies) follow
        the old rules: work to the assignee, questions to whoever takes them, results to
        whoever takes them, answers to the asker."""
        b = env.body
        kind = team.kind_of(b)
        if kind is None or self.r is None or self.info is None or env.sender == self.name:
            return False
        to = getattr(b, "to", None)
        if to:
            if self.name not in to or not self.r.takes(kind):
                return False
            if not T.allowed(self.info.channels, env.sender, self.name, kind):
                logger.warning("message outside the team's channels dropped", agent=self.name,
                               sender=env.sender, kind=kind)
                return False
            return True
        if isinstance(b, P.WorkItem):
            return "work" in self.r.wakes_on and b.assignee in (self.name, self.role, "")
        if isinstance(b, P.Answer):
            return b.question_id in self.state.asked
        if isinstance(b, (P.Question, P.WorkResult)):
            return self.r.takes(kind)
        return False

    def _on_control(self, c: P.Control) -> None:
        if c.action in ("stop", "submit"):
            self.request_stop(f"{c.action}: {c.reason}" if c.reason else c.action)
        elif c.action == "pause":
            self._paused.clear()
        elif c.action == "resume":
            self._paused.set()
        elif c.action == "warn":
            self.notes.append(c.reason)

    # ================================================================== the loop

    async def _loop(self) -> None:
        while True:
            if self._stop.is_set():
                raise Stopped
            await self._interruptible(self._paused.wait())
            assert self.r is not None
            if self.r.wakes_on and not self.state.current:
                # the last turn's record (and its `working` status) first, so that the log
                # shows the member going idle after it, as it did
                await self._flush()
                await self._status("idle", "waiting for a message")
                env = await self._interruptible(self._triggers.get())
                self._take(env)
                await self._status("working", _describe(env.body))
            if "wait" not in self.r.commands:  # no `wait`: messages arrive with the next turn
                while not self._inbox.empty():
                    self._take(self._inbox.get_nowait())
            done = await self._turn()
            if done:
                return
            if self.state.current.get("item") and self.state.item_steps >= self.o.max_item_steps:
                n = self.state.item_steps
                await self._done(f"stopped: the work item used its {n} steps without `done`", "budget")
                self.notes.append(f"Work item stopped after {n} steps; its result was reported as unfinished.")

    def _take(self, env: P.Envelope) -> None:
        """A team message enters the conversation (and becomes the job in hand if it is one)."""
        self._consumed.add(env.id)
        self.state.consumed.append(env.id)
        b = env.body
        if isinstance(b, P.WorkItem):
            self.state.current = {"id": env.id, "item": b.item, "from": env.sender}
            self.state.item_steps = 0
            self.state.item_scores = {}
            self.state.item_validated = {}
        elif isinstance(b, P.Question):
            self.state.current = {"id": env.id, "question_id": b.question_id, "from": b.asker or env.sender}
        elif isinstance(b, P.ReviewRequest):
            self.state.current = {"id": env.id, "review": b.request_id, "from": env.sender,
                                  "session": b.session, "step": b.step, "scores": dict(b.scores)}
        else:
            self._received(env)
        assert self.r is not None
        text = team.message_text(env.sender, b, self.r.message_template)
        self._new.append(Entry(Message.user(text)))

    async def _turn(self) -> bool:
        """One model call and one command; True when this agent is finished."""
        t0 = time.perf_counter()
        new = self._new
        self._new = []
        self.entries.extend(new)
        tools = openai_tools(self.tools) if self.o.mode == "tools" else None
        try:
            completion: Completion = await self._interruptible(self._ask_model(tools))
        except ModelError as exc:
            self.entries[len(self.entries) - len(new):] = []
            self._new = new
            return self._model_failed(exc)
        t_model = time.perf_counter() - t0
        self.usage_prompt += completion.usage.prompt_tokens
        self.usage_completion += completion.usage.completion_tokens
        self.usage_cached += completion.usage.cached_tokens
        self.cost += completion.cost_usd
        reply = completion.to_message()
        self.entries.append(Entry(reply))
        added = [*new, self.entries[-1]]
        thought, command, call_id, call_name = completion.text, "", "", ""
        extra_calls: list[str] = []
        t_env0 = time.perf_counter()
        if completion.tool_calls:
            call = completion.tool_calls[0]
            call_id, call_name = call.id, call.name
            extra_calls = [c.id for c in completion.tool_calls[1:]]
            if call.error:
                output, code, info = f"Error: {call.error}", 1, {}
                command = f"{call.name} {call.raw_arguments}"
            else:
                command = call_text(call.name, call.arguments)
                output, code, info = await self._run_call(call.name, call.arguments)
            self.state.format_errors = 0
        else:
            try:
                thought, command = split_reply(completion.text)
            except FormatError as exc:
                self.state.format_errors += 1
                output, code, info = str(exc), 1, {"format_error": True}
            else:
                self.state.format_errors = 0
                output, code, info = await self._run_text(command)
        t_env = time.perf_counter() - t_env0
        notes = self._notes_for(command, code)
        text = prompts.observation_prompt(output, step=self.state.env_step,
                                          remaining=self.state.remaining,
                                          open_file=self.state.open_file, cwd=self.state.cwd,
                                          notes=notes, role=self.r)
        if call_id:
            obs_msgs = [Entry(Message.tool(call_id, text, name=call_name), observation=True)]
            obs_msgs += [Entry(Message.tool(cid, "Not run: send one tool call per reply.")) for cid in extra_calls]
        else:
            obs_msgs = [Entry(Message.user(text), observation=True)]
        self.entries.extend(obs_msgs)
        added += obs_msgs
        self.step += 1
        if self.state.current:
            self.state.item_steps += 1
        finished = self._finished(info)
        t_pub0 = time.perf_counter()
        await self._record(added, completion, thought, command, output, code, info, t_env, finished)
        t_pub = time.perf_counter() - t_pub0
        self.timings.append({"model": t_model, "env": t_env, "publish": t_pub,
                             "total": time.perf_counter() - t0, "command_s": float(info.get("command_s", 0.0))})
        return finished

    def _finished(self, info: dict[str, Any]) -> bool:
        if info.get("done"):
            self.exit_status = str(info.get("exit_status") or "submitted")
            return True
        if self.state.format_errors >= self.o.max_format_errors:
            self.exit_status = "format_error"
            return True
        return False

    async def _ask_model(self, tools: list[dict[str, Any]] | None) -> Completion:
        """This turn's model call on the history policy's view. A context overflow shortens
        the history (for good: later turns would overflow too) and tries once more."""
        try:
            return await self._complete(self.policy.view(self.entries), tools)
        except ModelError as exc:
            if exc.code != "context_overflow" or not self.policy.shorten(self.entries):
                raise
            logger.warning("the prompt overflowed the context window; history shortened, trying "
                           "again", agent=self.name, keep=self.policy.keep, clip=self.policy.clip)
            self.notes.append("Your context window overflowed: older parts of this conversation "
                              "are now shortened further.")
        return await self._complete(self.policy.view(self.entries), tools)

    async def _complete(self, view: list[Message], tools: list[dict[str, Any]] | None,
                        ) -> Completion:
        """One model call, announced as `calling` once it runs past CALLING_AFTER_S (a fast
        call publishes nothing) and as `retrying` before each retry."""
        since = time.time()
        announce = asyncio.ensure_future(self._announce_call(since))

        async def on_retry(r: Retry) -> None:
            announce.cancel()
            await self._status("retrying", r.error.message[:200], since=time.time(), retry=r.retry,
                               max_retries=r.max_retries, error=r.error.code)

        try:
            return await self.model.complete(
                view, tools, temperature=self.o.temperature, max_tokens=self.max_tokens,
                stream=self.o.stream, on_retry=on_retry)
        finally:
            announce.cancel()

    async def _announce_call(self, since: float) -> None:
        await asyncio.sleep(CALLING_AFTER_S)
        await self._status("calling", f"model {getattr(self.model, 'spec', '')}", since=since)

    def _model_failed(self, exc: ModelError) -> bool:
        """The call could not be made within its limits: the agent ends with a typed exit."""
        self.exit_status = "replay_exhausted" if exc.code == "exhausted" else exc.exit
        self.exit_detail = str(exc)
        logger.error("model call failed; the agent ends", agent=self.name, exit=self.exit_status,
                     code=exc.code, retries=exc.retries, error=str(exc))
        return True

    def _notes_for(self, command: str, code: int) -> list[str]:
        notes, self.notes = self.notes, []
        key = command.strip()
        self._recent.append((key, code))
        self._recent = self._recent[-self.o.repeat_limit:]
        if (code != 0 and len(self._recent) == self.o.repeat_limit
                and all(a == key and c != 0 for a, c in self._recent)):
            notes.append(f"This exact command has now failed {self.o.repeat_limit} times in a row. Running it "
                         "again will fail again: read the error and change your approach.")
        return notes

    async def _record(self, added: list[Entry], completion: Completion, thought: str, command: str, output: str,
                      code: int, info: dict[str, Any], t_env: float, done: bool) -> None:
        assert self.bus is not None
        msgs = []
        for e in added:
            d = msgspec.to_builtins(e.message)
            if e.observation:
                d["_obs"] = True
            msgs.append(d)
        step = P.AgentStep(
            agent=self.name, role=self.role, step=self.step, action=command, observation=output,
            response=completion.text, thought=thought, messages=msgs,
            tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls],
            execution_time=t_env, model_latency_s=completion.latency_s,
            prompt_tokens=completion.usage.prompt_tokens, completion_tokens=completion.usage.completion_tokens,
            cached_tokens=completion.usage.cached_tokens, cost_usd=completion.cost_usd, exit_code=code,
            env_step=self.state.env_step,
            scores=dict(info.get("scores", {})), state=self.state.save(), done=done,
        )
        self.state.consumed = []
        await self._flush()
        # Acked, but not waited for here: the broker's commit overlaps the next model call and
        # command, and the next record waits for it (turns are logged in order). A crash can so
        # repeat at most the two commands whose turns were not logged yet.
        self._pending = asyncio.ensure_future(self._publish_turn(step, command.split("\n", 1)[0][:100]))

    async def _publish_turn(self, step: P.AgentStep, detail: str) -> None:
        assert self.bus is not None
        await self.bus.publish(f"agents/{self.name}/step", step, acked=True)
        await self._status("working", detail)

    async def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def _status(self, state: str, detail: str = "", acked: bool = False,
                      **extra: Any) -> None:
        """Publish an AgentStatus; `extra`: its since/retry/max_retries/error/exit fields."""
        assert self.bus is not None
        await self.bus.publish(f"status/{self.name}", P.AgentStatus(
            agent=self.name, role=self.role, state=state, step=self.step,
            tokens=self.usage_prompt + self.usage_completion, cost_usd=round(self.cost, 8), detail=detail,
            cached_tokens=self.usage_cached, model=self.o.model,
            implementation=IMPLEMENTATION, **extra,
        ), acked=acked)

    async def _interruptible(self, aw: Any, *, session: bool = False) -> Any:
        """Await `aw`, but give up (cancelling it) when told to stop, or, with session=True,
        when the environment session is replaced."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stop.wait())
        waits = {task, stop}
        changed = None
        if session:
            changed = asyncio.ensure_future(self._session_changed.wait())
            waits.add(changed)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (stop, changed):
                if w is not None and not w.done():
                    w.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self._stop.is_set():
            raise Stopped
        raise SessionLost

def _describe(body: P.Body) -> str:
    if isinstance(body, P.WorkItem):
        return f"work item {body.item}: {body.title}"[:100]
    if isinstance(body, P.Question):
        return f"question {body.question_id}"
    if isinstance(body, P.ReviewRequest):
        return f"review request {body.request_id}"
    return type(body).__name__


def make_model(spec: str, *, role: str, agent: str, info: P.RunInfo,
               opts: Options | None = None) -> Any:
    """A model backend; the API backends get the call limits, the offline backends what they
    need to know about the run."""
    prefix = spec.partition(":")[0]
    kw: dict[str, Any] = {}
    if prefix in ("openai", "gemini") and opts is not None:
        kw = {"timeout_s": opts.call_timeout_s, "stall_s": opts.stall_timeout_s,
              "max_retries": opts.max_retries}
    elif prefix == "scripted":
        metric = info.metric or next(iter(info.directions), "Score")
        r = R.lookup(info.roles, role)
        kw = {"role": role, "policy": r.scripted_policy, "task": info.task, "metric": metric,
              "direction": info.directions.get(metric, "max"),
              "has_literature": "literature" in info.members.values(), "agent": agent,
              "members": dict(info.members), "approvers": list(info.approvers),
              "baseline": dict(info.baseline),
              "workers": [m for m, mr in info.members.items() if m != agent
                          and "work" in R.lookup(info.roles, mr).wakes_on]}
    elif prefix == "replay":
        kw = {"agent": agent}
    return create(spec, **kw)
