"""What each bus message looks like on the viewer's swimlane timeline, and what the run adds up
to so far (lanes, turns, scores, budgets used, the links between messages).

`Timeline.add` takes the event log's rows in sequence order and returns one small summary per
message: its lane (an agent, `env` for the environment server, `supervisor`), a one-line
title, the lanes an arrow goes to, and the figures the charts need. Messages are decoded into
a light struct that names only the fields shown here: the large ones (an AgentStep's prompt
messages, a RunInfo's task text) are skipped by the decoder, never allocated. A body kind this
module does not know (a newer protocol) still gets a row, titled by its kind; its details are
the page's to show (`detail`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mlgym.bus.eventlog import Row

TITLE_CHARS = 160
SUPERVISOR = "supervisor"
ENV = "env"
BROADCAST = "*"


class _Body(msgspec.Struct, gc=False):
    """The body fields the timeline reads, typed loosely (Any): a message from another
    version with a field of another type still gets its row. Unknown fields are skipped."""

    kind: str = ""
    # agents/<name>/step, status/<name>
    agent: Any = ""
    role: Any = ""
    state: Any = ""
    step: Any = 0
    tokens: Any = 0
    cost_usd: Any = 0.0
    detail: Any = ""
    action: Any = ""
    prompt_tokens: Any = 0
    completion_tokens: Any = 0
    env_step: Any = 0
    scores: Any = None
    # env/<session>/...
    session: Any = ""
    command: Any = ""
    output: Any = ""
    exit_code: Any = 0
    baseline: Any = None
    error: Any = ""
    job: Any = ""
    data: Any = None
    # team/...
    item: Any = ""
    title: Any = ""
    assignee: Any = ""
    status: Any = ""
    summary: Any = ""
    question_id: Any = ""
    text: Any = ""
    asker: Any = ""
    plan: Any = ""
    # run/...
    task: Any = ""
    team: Any = ""
    members: Any = None
    budget: Any = None
    agent_budgets: Any = None
    metric: Any = ""
    directions: Any = None
    generation: Any = 0
    started: Any = 0.0
    exit_status: Any = ""
    best_scores: Any = None
    reason: Any = ""
    target: Any = ""
    # explicit receivers (team designs that address messages): a name or a list of names
    to: Any = None
    receivers: Any = None
    recipients: Any = None


class _Envelope(msgspec.Struct, gc=False):
    body: _Body
    topic: Any = ""
    sender: Any = ""


_DECODERS: dict[str, Callable[[bytes], _Envelope]] = {
    "msgpack": msgspec.msgpack.Decoder(_Envelope).decode,
    "json": msgspec.json.Decoder(_Envelope).decode,
}
_GENERIC: dict[str, Callable[[bytes], Any]] = {
    "msgpack": msgspec.msgpack.Decoder().decode,
    "json": msgspec.json.Decoder().decode,
}


def decode_full(encoding: str, payload: bytes) -> dict[str, Any]:
    """One message as plain data (every field, any kind), for its detail view."""
    try:
        env = _GENERIC[encoding](payload)
    except (KeyError, msgspec.DecodeError) as exc:
        return {"body": {"kind": "unreadable", "error": str(exc)}}
    return env if isinstance(env, dict) else {"body": {"kind": "unreadable", "value": env}}


def first_line(value: Any, limit: int = TITLE_CHARS) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _num(value: Any) -> float:
    t = type(value)
    return value if t is float else float(value) if t is int else 0.0


def _int(value: Any) -> int:
    t = type(value)
    return value if t is int else int(value) if t is float else 0


def _scores(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _fmt(x: float) -> str:
    return f"{x:.6g}"


@dataclass
class AgentFigures:
    role: str = ""
    state: str = ""
    detail: str = ""
    turns: int = 0
    env_steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Timeline:
    """Summaries of a run's messages and the run's totals, fed the log in sequence order."""

    members: dict[str, str] = field(default_factory=dict)  # name -> role, from run.json or RunInfo
    lanes: dict[str, str] = field(default_factory=dict)  # lane -> role ("env", "supervisor", ...)
    turns: list[int] = field(default_factory=list)  # seqs of agent turns
    scores: list[dict[str, Any]] = field(default_factory=list)
    series: list[tuple[float, int, int, float]] = field(
        default_factory=list
    )  # ts, steps, tokens, $
    agents: dict[str, AgentFigures] = field(default_factory=dict)
    refs: dict[str, list[int]] = field(default_factory=dict)  # link key -> seqs, in order
    ref_of: dict[int, str] = field(default_factory=dict)  # seq -> its link key
    info: dict[str, Any] = field(default_factory=dict)  # the latest RunInfo's facts
    end: dict[str, Any] | None = None
    epochs: list[tuple[int, int]] = field(default_factory=list)  # (first seq, epoch)
    kinds: dict[str, int] = field(default_factory=dict)
    first_ts: float = 0.0
    last_ts: float = 0.0
    count: int = 0
    session_steps: dict[str, int] = field(default_factory=dict)
    askers: dict[str, str] = field(default_factory=dict)  # question id -> who asked
    work_from: dict[str, str] = field(default_factory=dict)  # work item -> who assigned it
    # (session, step) -> agent of each command; agent -> its commands not yet matched to a turn
    # (a turn is logged after its command's events, sometimes after its next command too)
    command_agent: dict[tuple[str, int], str] = field(default_factory=dict)
    unmatched: dict[str, dict[int, str]] = field(default_factory=dict)  # agent -> step -> session
    session: str = ""
    _epoch: int = -1
    _steps: int = 0
    _tokens: int = 0
    _cost: float = 0.0

    def __post_init__(self) -> None:
        for name, role in self.members.items():
            self.lanes.setdefault(name, role)
        if (
            self.members
        ):  # a team run: its environment and supervisor lanes are there from the start
            self.lanes.setdefault(ENV, "")
            self.lanes.setdefault(SUPERVISOR, "")

    # ------------------------------------------------------------------ totals

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def tokens(self) -> int:
        return self._tokens

    @property
    def cost(self) -> float:
        return self._cost

    def best(self) -> float | None:
        metric = self.info.get("metric") or ""
        better = (
            (lambda a, b: a < b)
            if self.info.get("directions", {}).get(metric) == "min"
            else (lambda a, b: a > b)
        )
        out = None
        for s in self.scores:
            v = s["scores"].get(metric)
            if v is not None and (out is None or better(v, out)):
                out = v
        return out

    # ------------------------------------------------------------------ feeding

    def add(self, row: Row) -> dict[str, Any]:
        """The summary of one logged message (rows in seq order), the totals brought up to it."""
        seq, epoch, ts, topic, encoding, payload = row
        if epoch != self._epoch:
            self._epoch = epoch
            self.epochs.append((seq, epoch))
        if not self.first_ts:
            self.first_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts
        self.count += 1
        out: dict[str, Any] = {"seq": seq, "ts": round(ts, 3), "ep": epoch}
        try:
            env = _DECODERS[encoding](payload)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            out.update(
                kind="unreadable", lane=topic.split("/", 1)[0] or "?", title=first_line(str(exc))
            )
            self._lane(out["lane"], "")
            return out
        b = env.body
        kind = b.kind or "?"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        out["kind"] = kind
        sender = env.sender if type(env.sender) is str else ""
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, b, sender, seq, ts, out)
        else:
            out["lane"] = (
                sender or (topic.split("/", 1)[0] if isinstance(topic, str) else "") or "?"
            )
            out["title"] = first_line(b.text or b.summary or b.detail or b.title or kind)
        if (
            b.to is not None or b.receivers is not None or b.recipients is not None
        ) and "to" not in out:
            explicit = _names(b.to) or _names(b.receivers) or _names(b.recipients)
            if explicit:
                out["to"] = explicit
        lane = out.get("lane") or sender or "?"
        out["lane"] = lane
        lanes = self.lanes
        if lane not in lanes:
            self._lane(lane, "")
        for name in out.get("to", ()):
            if name != BROADCAST and name not in lanes:
                self._lane(name, "")
        return out

    def _lane(self, name: str, role: str) -> None:
        if name not in self.lanes or (role and not self.lanes[name]):
            self.lanes[name] = role or self.members.get(name, "")

    def _link(self, key: str, seq: int) -> None:
        self.refs.setdefault(key, []).append(seq)
        self.ref_of[seq] = key

    def _agent(self, name: str) -> AgentFigures:
        fig = self.agents.get(name)
        if fig is None:
            fig = self.agents[name] = AgentFigures(role=self.members.get(name, ""))
        return fig

    def _totals(self, ts: float, out: dict[str, Any]) -> None:
        cost = round(self._cost, 6)
        last = self.series[-1] if self.series else None
        if last is None or last[1] != self._steps or last[2] != self._tokens or last[3] != cost:
            self.series.append((round(ts, 3), self._steps, self._tokens, cost))
        out["tot"] = [self._steps, self._tokens, cost]

    # one method per kind ------------------------------------------------------

    def _agent_step(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        name = b.agent if isinstance(b.agent, str) and b.agent else sender
        out.update(lane=name, title=first_line(b.action) or "(no action)", turn=_int(b.step))
        tokens = _int(b.prompt_tokens) + _int(b.completion_tokens)
        if tokens:
            out["tok"] = tokens
        if _num(b.cost_usd):
            out["usd"] = _num(b.cost_usd)
        scores = _scores(b.scores)
        if scores:
            out["scores"] = scores
        fig = self._agent(name)
        fig.role = b.role or fig.role
        fig.turns = max(fig.turns, _int(b.step))
        self._lane(name, fig.role)
        self.turns.append(seq)
        pending = self.unmatched.get(name)
        session = pending.pop(_int(b.env_step), None) if pending else None
        if session is not None:
            self._link(f"env:{session}:{_int(b.env_step)}", seq)

    def _agent_status(
        self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]
    ) -> None:
        name = b.agent if type(b.agent) is str and b.agent else sender
        fig = self.agents.get(name) or self._agent(name)
        if b.role:
            fig.role = str(b.role)
        fig.state = state = str(b.state or "")
        fig.detail = detail = first_line(b.detail)
        tokens, cost = _int(b.tokens), _num(b.cost_usd)
        if tokens > fig.tokens:
            self._tokens += tokens - fig.tokens
            fig.tokens = tokens
        if cost > fig.cost_usd:
            self._cost += cost - fig.cost_usd
            fig.cost_usd = cost
        step = _int(b.step)
        if step > fig.turns:
            fig.turns = step
        out["lane"] = name
        out["minor"] = 1
        out["state"] = state
        out["title"] = f"{state}: {detail}" if detail else state
        out["tok"] = fig.tokens
        out["usd"] = round(fig.cost_usd, 6)
        if name not in self.lanes or (fig.role and not self.lanes[name]):
            self._lane(name, fig.role)
        self._totals(ts, out)

    def _command(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        session, step = str(b.session), _int(b.step)
        before = self.session_steps.get(session, 0)
        if step > before:
            self.session_steps[session] = step
            self._steps += step - before
        out.update(lane=ENV, title=first_line(b.command), step=step)
        agent = b.agent if isinstance(b.agent, str) else ""
        if agent:
            out["from"] = agent
            self._agent(agent).env_steps += 1
            self.command_agent[(session, step)] = agent
            pending = self.unmatched.setdefault(agent, {})
            pending[step] = session
            if len(pending) > 8:  # a command whose turn never came (a crash): forget it
                del pending[next(iter(pending))]
            self._lane(agent, "")
        self._link(f"env:{session}:{step}", seq)
        self._totals(ts, out)

    def _observation(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        step = _int(b.step)
        out.update(
            lane=ENV, title=first_line(b.output) or "(no output)", step=step, exit=_int(b.exit_code)
        )
        self._link(f"env:{b.session}:{step}", seq)

    def _output(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        out.update(lane=ENV, minor=1, title=first_line(b.data) or "(output)")

    def _score(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        step, scores, action = _int(b.step), _scores(b.scores), str(b.action or "")
        base = _scores(b.baseline) or _scores(self.info.get("baseline"))
        error = first_line(b.error)
        text = ", ".join(f"{k} {_fmt(v)}" for k, v in scores.items()) or (
            f"failed: {error}" if error else "no score"
        )
        out.update(lane=ENV, title=f"{action}: {text}", step=step, action=action, scores=scores)
        if base:
            out["base"] = base
        if error:
            out["error"] = error
        label = (
            f"step-{self.info.get('generation', 1) or 1}-{step}"
            if action == "validate" and scores
            else ""
        )
        if label:
            out["art"] = label
        self._link(f"env:{b.session}:{step}", seq)
        agent = self.command_agent.get((str(b.session), step), "")
        self.scores.append(
            {
                "seq": seq,
                "ts": round(ts, 3),
                "step": step,
                "action": action,
                "scores": scores,
                "error": error,
                "agent": agent,
                "artefact": label,
            }
        )

    def _work_item(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        item = str(b.item)
        self.work_from[item] = sender
        out.update(
            lane=sender,
            title=f"{item}: {first_line(b.title)}",
            to=_names(b.assignee) or [BROADCAST],
        )
        self._link(f"work:{item}", seq)

    def _work_result(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        item = str(b.item)
        to = self.work_from.get(item) or self._role_member("planner")
        out.update(
            lane=sender,
            title=f"{item} {b.status}: {first_line(b.summary)}",
            to=[to] if to else [BROADCAST],
        )
        scores = _scores(b.scores)
        if scores:
            out["scores"] = scores
        self._link(f"work:{item}", seq)

    def _question(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        qid = str(b.question_id)
        asker = b.asker if isinstance(b.asker, str) and b.asker else sender
        self.askers[qid] = asker
        readers = [n for n, r in self.members.items() if r == "literature"]
        out.update(lane=asker, title=f"{qid}: {first_line(b.text)}", to=readers or [BROADCAST])
        self._link(f"question:{qid}", seq)

    def _answer(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        qid = str(b.question_id)
        asker = self.askers.get(qid)
        out.update(
            lane=sender, title=f"{qid}: {first_line(b.text)}", to=[asker] if asker else [BROADCAST]
        )
        self._link(f"question:{qid}", seq)

    def _plan(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        out.update(lane=sender, title=first_line(b.plan) or "(plan)", to=[BROADCAST])

    def _note(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        out.update(lane=sender or "?", title=first_line(b.text) or "(note)")

    def _run_info(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        members = b.members if isinstance(b.members, dict) else {}
        for name, role in members.items():
            if isinstance(name, str):
                self.members[name] = str(role)
                self._lane(name, str(role))
        self.info.update(
            {k: getattr(b, k) for k in ("task", "team", "metric", "generation", "started")}
        )
        for k in ("budget", "agent_budgets", "baseline", "directions"):
            if isinstance(getattr(b, k), dict):
                self.info[k] = getattr(b, k)
        self.info["members"] = dict(self.members)
        self.session = str(b.session)
        gen = _int(b.generation)
        what = "run started" if gen <= 1 else f"environment restarted (generation {gen})"
        out.update(
            lane=SUPERVISOR,
            title=f"{what}: {b.task}, team {b.team}, session {b.session}",
            to=[BROADCAST],
        )

    def _run_end(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        self.end = {
            "seq": seq,
            "ts": round(ts, 3),
            "exit_status": str(b.exit_status),
            "reason": str(b.reason),
            "scores": _scores(b.scores),
            "best_scores": _scores(b.best_scores),
        }
        out.update(
            lane=SUPERVISOR,
            title=f"run ended: {b.exit_status}" + (f" ({b.reason})" if b.reason else ""),
            scores=_scores(b.scores),
        )

    def _control(self, b: _Body, sender: str, seq: int, ts: float, out: dict[str, Any]) -> None:
        target = b.target if isinstance(b.target, str) else ""
        out.update(
            lane=sender or SUPERVISOR,
            title=f"{b.action}: {first_line(b.reason)}",
            to=[target] if target else [BROADCAST],
        )

    def _role_member(self, role: str) -> str:
        found = [n for n, r in self.members.items() if r == role]
        return found[0] if len(found) == 1 else ""

    # ------------------------------------------------------------------ views

    def overview(self, max_points: int = 600) -> dict[str, Any]:
        series = self.series
        if len(series) > max_points:  # keep the shape: every k-th point and the last
            k = -(-len(series) // max_points)
            series = series[::k] + ([series[-1]] if (len(series) - 1) % k else [])
        return {  # copies: the index goes on growing them
            "lanes": [{"name": n, "role": r} for n, r in self.lanes.items()],
            "turns": list(self.turns),
            "scores": list(self.scores),
            "series": list(series),
            "agents": {n: dict(vars(a)) for n, a in self.agents.items()},
            "info": dict(self.info),
            "end": self.end,
            "epochs": list(self.epochs),
            "kinds": dict(self.kinds),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "count": self.count,
            "totals": {
                "steps": self.steps,
                "tokens": self.tokens,
                "cost_usd": round(self.cost, 6),
                "best": self.best(),
            },
        }

    def follow(self, seq: int) -> list[int]:
        """The seqs linked to `seq` (the other end of its message, the same command's
        observation and score, the turn that ran it), itself included, in order."""
        key = self.ref_of.get(seq)
        return list(self.refs.get(key, [seq])) if key else [seq]


_HANDLERS: dict[str, Callable[[Timeline, _Body, str, int, float, dict[str, Any]], None]] = {
    "agent_step": Timeline._agent_step,
    "agent_status": Timeline._agent_status,
    "command_event": Timeline._command,
    "observation_event": Timeline._observation,
    "output_chunk": Timeline._output,
    "score_event": Timeline._score,
    "work_item": Timeline._work_item,
    "work_result": Timeline._work_result,
    "question": Timeline._question,
    "answer": Timeline._answer,
    "plan_update": Timeline._plan,
    "note": Timeline._note,
    "run_info": Timeline._run_info,
    "run_end": Timeline._run_end,
    "control": Timeline._control,
}
KNOWN_KINDS = frozenset(_HANDLERS)
