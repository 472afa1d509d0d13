"""What the supervisor learns from the bus: environment steps, scores, each agent's usage.

It is fed every message of the run in order (history first, then live), so a resumed run's
ledger is rebuilt from the same event log it was made from. Budgets are checked against it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mlgym.bus import protocol as P


@dataclass
class AgentUsage:
    role: str = ""
    state: str = "starting"
    detail: str = ""
    turns: int = 0
    env_steps: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    exit: str = ""  # the typed exit (submitted, model_unreachable, ...) or how the process ended
    exit_detail: str = ""  # why, in words
    since: float = 0.0  # unix time the state began (calling, retrying)
    retry: int = 0
    max_retries: int = 0
    error: str = ""
    model: str = ""  # what the agent declared in its agent_status
    implementation: str = ""


@dataclass
class Attempt:
    session: str
    step: int
    action: str  # validate | submit | autosubmit
    scores: dict[str, float]
    error: str
    agent: str = ""
    run_step: int = 0  # counted over the whole run (sessions replaced after a restart go on from here)
    seed: int = 0  # the evaluation's seed (held out for the final submission)


class Ledger:
    def __init__(self, metric: str, direction: str):
        self.metric = metric
        self.direction = direction
        self.agents: dict[str, AgentUsage] = {}
        self.session_steps: dict[str, int] = {}  # session -> highest step seen
        # session -> the last step started and the last known finished: a session runs one
        # action at a time, so a step starting means every earlier one has finished
        self.offset: dict[str, int] = {}  # session -> run steps before it
        self.started: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.attempts: list[Attempt] = []
        self.submitted: Attempt | None = None
        self.last_agent: dict[str, str] = {}  # session -> agent of the latest command
        self.commands: list[tuple[str, str, int]] = []  # (agent, command, exit code) in order
        self.ended: P.RunEnd | None = None
        self.generation = 0
        # members' own sessions (parallel workers): their submits do not end the run
        self.member_sessions: set[str] = set()

    # ------------------------------------------------------------------ feeding

    def feed(self, env: P.Envelope) -> Attempt | None:
        """Account one message; returns the Attempt when it was a score event."""
        b = env.body
        if isinstance(b, P.CommandEvent):
            if b.session not in self.offset:  # a new session (restart, resume): steps go on counting
                self.offset[b.session] = self.steps
            self.started[b.session] = max(self.started.get(b.session, 0), b.step)
            self.finished[b.session] = max(self.finished.get(b.session, 0), b.step - 1)
            self.session_steps[b.session] = max(self.session_steps.get(b.session, 0), b.step)
            self.last_agent[b.session] = b.agent
            if b.agent:
                self.agent(b.agent).env_steps += 1
            self.commands.append((b.agent, b.command, 0))
        elif isinstance(b, P.ObservationEvent):
            self.finished[b.session] = max(self.finished.get(b.session, 0), b.step)
            if self.commands:
                a, c, _ = self.commands[-1]
                self.commands[-1] = (a, c, b.exit_code)
        elif isinstance(b, P.ScoreEvent):
            # the run's steps: a team session's go on from the sessions it replaced; a member's
            # own session runs beside the others, so all the run's steps so far
            run_step = (self.steps if b.session in self.member_sessions
                        else self.offset.get(b.session, 0) + b.step)
            att = Attempt(b.session, b.step, b.action, dict(b.scores), b.error, self.last_agent.get(b.session, ""),
                          run_step=run_step, seed=b.seed)
            self.attempts.append(att)
            if b.action in ("submit", "autosubmit") and b.session not in self.member_sessions:
                self.submitted = att
            return att
        elif isinstance(b, P.AgentStatus):
            u = self.agent(b.agent)
            u.role = b.role or u.role
            u.state = b.state
            u.detail = b.detail
            u.since, u.retry, u.max_retries, u.error = b.since, b.retry, b.max_retries, b.error
            u.turns = max(u.turns, b.step)
            u.tokens = max(u.tokens, b.tokens)
            u.cached_tokens = max(u.cached_tokens, b.cached_tokens)
            u.cost_usd = max(u.cost_usd, b.cost_usd)
            u.model = b.model or u.model
            u.implementation = b.implementation or u.implementation
            if b.state == "stopped":
                u.exit = b.exit or b.detail
                u.exit_detail = b.detail if b.detail != u.exit else ""
        elif isinstance(b, P.RunInfo):
            self.member_sessions.update(ms.session for ms in b.sessions.values())
            if b.generation > self.generation:  # a new environment server: the old one's
                self.finished.update(self.started)  # actions will never report their end
            self.generation = max(self.generation, b.generation)
        elif isinstance(b, P.RunEnd):
            self.ended = b
        return None

    def busy(self, session: str) -> bool:
        """Whether an action of `session` has started and not reported its end."""
        return self.started.get(session, 0) > self.finished.get(session, 0)

    def agent(self, name: str) -> AgentUsage:
        return self.agents.setdefault(name, AgentUsage())

    # ------------------------------------------------------------------ totals

    @property
    def steps(self) -> int:
        return sum(self.session_steps.values())

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.agents.values())

    @property
    def cost(self) -> float:
        return sum(a.cost_usd for a in self.agents.values())

    def better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.direction == "max" else a < b)

    def best(self) -> Attempt | None:
        out: Attempt | None = None
        for att in self.attempts:
            v = att.scores.get(self.metric)
            if v is not None and (out is None or self.better(v, out.scores.get(self.metric))):
                out = att
        return out

    def best_score(self) -> float | None:
        b = self.best()
        return b.scores.get(self.metric) if b else None

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "tokens": self.tokens, "cost_usd": round(self.cost, 6),
                "best": self.best_score(), "attempts": len(self.attempts)}
