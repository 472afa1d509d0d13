"""What `mlgym analyze` measures in one run, from its event log alone (docs/teams.md,
"Analysing a run"): per member usage and time, the communication graph, who wrote the artefact
behind each validation and the final submission, the first improvement over the baseline, and
wasted work.

Authorship follows each session's artefact: the last member whose command in that session may
have written it (any command but the read-only ones below; an editor command only when the
file open in that session is the submission) is its author; a copy between sessions (a
`pick`, the supervisor's merge or auto-submission, recorded as `artefact_copy`) carries the
author of the validation it copied. Validations of the same artefact again (nothing written in
between) and validations with exactly the same scores as an earlier one are duplicates.
"""

from __future__ import annotations

import math
import re
import shlex
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from mlgym.agents.analyze.log import RunLog

WORKSPACE = "/home/agent/workspace/"
START = "(starting files)"  # the author of an artefact nobody changed
READ_ONLY_ACI = {
    "open",
    "goto",
    "scroll_down",
    "scroll_up",
    "search_dir",
    "search_file",
    "find_file",
    "validate",
    "submit",
}
READ_ONLY_SHELL = {
    "ls",
    "cat",
    "head",
    "tail",
    "less",
    "more",
    "grep",
    "egrep",
    "find",
    "wc",
    "pwd",
    "echo",
    "diff",
    "stat",
    "file",
    "du",
    "df",
    "tree",
    "which",
    "env",
    "nvidia-smi",
    "sleep",
    "true",
    "whoami",
    "date",
    "md5sum",
    "sha256sum",
    "nproc",
    "free",
    "uname",
    "ps",
    "top",
    "tail",
    "sort",
    "uniq",
    "cut",
    "jq",
}
EDITORS = {"edit", "insert"}
KIND_OF_TAG = {
    "work_item": "work",
    "work_result": "result",
    "question": "question",
    "answer": "answer",
    "plan_update": "plan",
    "team_message": "message",
    "review_request": "review",
    "review": "verdict",
    "artefact_copy": "copy",
}
_FIRST_WORD = re.compile(r"\s*([^\s;|&]+)")


# --------------------------------------------------------------------------- commands


def _norm(path: str) -> str:
    path = path.strip().strip('"').strip("'")
    if path.startswith(WORKSPACE):
        path = path[len(WORKSPACE) :]
    return path.removeprefix("./")


def may_write(command: str, open_file: str, submission: str) -> bool:
    """Whether a command may have changed the submission artefact."""
    first = (_FIRST_WORD.match(command) or [None, ""])[1]
    if first in READ_ONLY_ACI:
        return False
    if first in EDITORS:
        return not submission or not open_file or _norm(open_file) == _norm(submission)
    if first == "create":
        return True
    head = command.split("\n", 1)[0]
    if first in ("python", "python3") and "evaluate.py" in head and ">" not in head:
        return False
    if (
        first in READ_ONLY_SHELL
        and ">" not in head
        and "-exec" not in head
        and "-delete" not in head
    ):
        return False
    return True


def _opened(command: str) -> str | None:
    """The file an `open`/`create` command leaves open."""
    first = (_FIRST_WORD.match(command) or [None, ""])[1]
    if first not in ("open", "create"):
        return None
    try:
        words = shlex.split(command.split("\n", 1)[0])
    except ValueError:
        return None
    return words[1] if len(words) > 1 else None


# --------------------------------------------------------------------------- results


@dataclass
class Member:
    name: str
    role: str = ""
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    env_steps: int = 0
    edits: int = 0  # commands that may have changed the submission artefact
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    refused: int = 0  # messages the team's channels refused
    model_s: float = 0.0
    command_s: float = 0.0
    blocked_s: float = 0.0  # in `wait`: mid-task, waiting on a teammate
    waiting_s: float = 0.0  # idle: no work in hand, waiting for a message
    lifetime_s: float = 0.0
    exit: str = ""
    session: str = ""
    validations: int = 0
    improvements: int = 0
    improvement_share: float = 0.0
    wrote_final: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def busy_s(self) -> float:
        return max(self.lifetime_s - self.waiting_s - self.blocked_s, 0.0)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("name")
        d["tokens"] = self.tokens
        d["busy_s"] = round(self.busy_s, 3)
        for k in (
            "model_s",
            "command_s",
            "blocked_s",
            "waiting_s",
            "lifetime_s",
            "cost_usd",
            "improvement_share",
        ):
            d[k] = round(d[k], 6 if k == "cost_usd" else 3)
        return d


@dataclass
class Validation:
    seq: int
    t_s: float
    session: str
    step: int
    run_step: int
    action: str
    scores: dict[str, float]
    score: float | None
    author: str
    agent: str  # who ran the validate/submit
    item: str = ""
    assigned_by: str = ""
    improved: bool = False
    duplicate: str = ""  # "repeat" (nothing written since the last one here), "same_result"
    steps_since: int = 0  # commands in its session since the previous validation there
    tokens_total: int = 0  # the team's tokens when it was scored
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if k == "t_s" else v) for k, v in self.__dict__.items()}


@dataclass
class Analysis:
    run: str = ""
    task: str = ""
    team: str = ""
    run_dir: str = ""
    events: int = 0
    seconds: float = 0.0
    exit_status: str = ""
    metric: str = ""
    direction: str = "max"
    baseline: float | None = None
    best: float | None = None
    final: float | None = None
    steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    members: dict[str, Member] = field(default_factory=dict)
    edges: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    channels: list[dict[str, Any]] = field(default_factory=list)
    validations: list[Validation] = field(default_factory=list)
    final_submission: dict[str, Any] | None = None
    copies: list[dict[str, Any]] = field(default_factory=list)
    first_improvement: dict[str, Any] | None = None
    waste: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "mlgym-analysis/1",
            "run": self.run,
            "task": self.task,
            "team": self.team,
            "run_dir": self.run_dir,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "exit_status": self.exit_status,
            "metric": {"name": self.metric, "direction": self.direction},
            "baseline": self.baseline,
            "best": self.best,
            "final": self.final,
            "steps": self.steps,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "members": {n: m.as_dict() for n, m in self.members.items()},
            "communication": {
                "edges": [{"from": s, "to": r, **v} for (s, r), v in self.edges.items()],
                "by_kind": dict(self.kinds),
                "messages": sum(v["count"] for v in self.edges.values()),
                "bytes": sum(v["bytes"] for v in self.edges.values()),
                "channels": self.channels,
            },
            "validations": [v.as_dict() for v in self.validations],
            "final_submission": self.final_submission,
            "copies": self.copies,
            "contribution": contribution(self),
            "first_improvement": self.first_improvement,
            "waste": self.waste,
        }


def _better(a: float, b: float | None, direction: str) -> bool:
    if b is None:
        return True
    return a > b if direction == "max" else a < b


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


# --------------------------------------------------------------------------- analysis


def analyse(log: RunLog, run_dir: str = "") -> Analysis:
    info = log.info
    a = Analysis(run_dir=run_dir, events=log.events, seconds=max(log.last_ts - log.first_ts, 0.0))
    members: dict[str, str] = {}
    submission = ""
    main_sessions: set[str] = set()
    own: dict[str, str] = {}  # session -> member
    for i in log.infos:
        members.update(i.members)
        main_sessions.add(i.session)
        own.update({ms.session: m for m, ms in i.sessions.items()})
    if info is not None:
        a.run, a.task, a.team = info.run, info.task, info.team
        a.metric = info.metric or next(iter(info.directions), "Score")
        a.direction = info.directions.get(a.metric, "max")
        a.baseline = _finite(info.baseline.get(a.metric))
        submission = info.submission
        a.channels = [
            {"from": c.sender, "to": list(c.receivers), "kinds": list(c.kinds)}
            for c in info.channels
        ]
    if log.end is not None:
        a.exit_status = log.end.exit_status
        a.final = _finite(log.end.scores.get(a.metric))
    for name, role in members.items():
        a.members[name] = Member(name, role)
    for s, m in own.items():
        if m in a.members:
            a.members[m].session = s
    for m in a.members.values():
        if not m.session and main_sessions:
            m.session = (
                sorted(main_sessions)[-1] if len(main_sessions) > 1 else next(iter(main_sessions))
            )

    def member(name: str) -> Member:
        if name not in a.members:
            a.members[name] = Member(name)
        return a.members[name]

    _usage(log, a, member)
    _time(log, a, member)
    _communication(log, a, member, members)
    _contribution(log, a, member, submission, main_sessions, own)
    return a


def _usage(log: RunLog, a: Analysis, member: Any) -> None:
    seen: dict[tuple[str, int], Any] = {}
    for ev in log.steps:
        seen[(ev.body.agent, ev.body.step)] = ev  # a re-recorded turn (after a crash) replaces
    for ev in seen.values():
        s, m = ev.body, member(ev.body.agent)
        m.role = m.role or s.role
        m.turns += 1
        m.prompt_tokens += s.prompt_tokens
        m.completion_tokens += s.completion_tokens
        m.cached_tokens += s.cached_tokens
        m.cost_usd += s.cost_usd
        m.model_s += s.model_latency_s
        if s.action.startswith("wait"):
            m.blocked_s += s.execution_time
        else:
            m.command_s += s.execution_time
        m.refused += ev.refused
    for ev in log.commands:
        if ev.body.agent and ev.body.agent != "supervisor":
            member(ev.body.agent).env_steps += 1
    a.steps = len(log.commands)
    a.tokens = sum(m.tokens for m in a.members.values())
    a.cost_usd = sum(m.cost_usd for m in a.members.values())


def _time(log: RunLog, a: Analysis, member: Any) -> None:
    """Lifetime and idle time from each member's status changes; blocked time from its `wait`
    turns (their execution time, ending at the turn's record)."""
    end_ts = log.last_ts
    last: dict[str, tuple[float, str]] = {}
    first: dict[str, float] = {}
    ended: dict[str, float] = {}
    intervals: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    t0 = log.first_ts
    for ev in log.statuses:
        s = ev.body
        if s.agent == "supervisor" or not s.agent:
            continue
        first.setdefault(s.agent, ev.ts)
        prev = last.get(s.agent)
        if prev is not None and prev[1] == "idle" and ev.ts > prev[0]:
            intervals[s.agent].append((prev[0] - t0, ev.ts - t0, "waiting"))
        last[s.agent] = (ev.ts, s.state)
        if s.state in ("stopped", "crashed"):
            ended[s.agent] = ev.ts
            m = member(s.agent)
            m.exit = s.exit or s.detail
    for name, (ts, state) in last.items():
        if state == "idle" and name not in ended and end_ts > ts:
            intervals[name].append((ts - t0, end_ts - t0, "waiting"))
    for ev in log.steps:
        s = ev.body
        if s.action.startswith("wait") and s.execution_time > 0:
            intervals[s.agent].append((ev.ts - s.execution_time - t0, ev.ts - t0, "blocked"))
    for name, f in first.items():
        m = member(name)
        m.lifetime_s = max(ended.get(name, end_ts) - f, 0.0)
        m.waiting_s = sum(e - b for b, e, k in intervals[name] if k == "waiting")
        intervals[name].insert(0, (f - t0, ended.get(name, end_ts) - t0, "alive"))
    a.intervals = dict(intervals)


def _receivers(
    body: Any,
    sender: str,
    members: dict[str, str],
    items: dict[str, str],
    questions: dict[str, str],
    reviews: dict[str, str],
) -> list[str]:
    """Who a team message went to: its `to`, or (runs from before topologies) who the old
    rules delivered it to."""
    if body.to:
        return list(body.to)
    kind = KIND_OF_TAG.get(body.kind, body.kind)
    if kind == "work":
        return [n for n in members if n == body.assignee or members[n] == body.assignee]
    if kind == "result":
        return (
            [items[body.item]]
            if body.item in items
            else [n for n, r in members.items() if r == "planner"]
        )
    if kind == "question":
        return [n for n, r in members.items() if r == "literature"]
    if kind == "answer":
        return [questions[body.question_id]] if body.question_id in questions else []
    if kind == "verdict":
        return [reviews[body.request_id]] if body.request_id in reviews else []
    if kind == "plan":
        return []
    return []


def _communication(log: RunLog, a: Analysis, member: Any, members: dict[str, str]) -> None:
    items: dict[str, str] = {}  # work item -> who sent it
    questions: dict[str, str] = {}
    reviews: dict[str, str] = {}
    for ev in log.team:
        b = ev.body
        kind = KIND_OF_TAG.get(b.kind, b.kind)
        if kind == "copy":
            continue
        if kind == "work":
            items[b.item] = ev.sender
        elif kind == "question":
            questions[b.question_id] = b.asker or ev.sender
        elif kind == "review":
            reviews[b.request_id] = ev.sender
        to = _receivers(b, ev.sender, members, items, questions, reviews)
        a.kinds[kind] += 1
        s = member(ev.sender)
        s.messages_sent += 1
        s.bytes_sent += ev.size
        for r in to:
            m = member(r)
            m.messages_received += 1
            m.bytes_received += ev.size
            e = a.edges.setdefault((ev.sender, r), {"count": 0, "bytes": 0, "kinds": {}})
            e["count"] += 1
            e["bytes"] += ev.size
            e["kinds"][kind] = e["kinds"].get(kind, 0) + 1


def _contribution(
    log: RunLog,
    a: Analysis,
    member: Any,
    submission: str,
    main_sessions: set[str],
    own: dict[str, str],
) -> None:
    writer: dict[str, str] = {}  # session -> author of its artefact now
    writer_item: dict[str, tuple[str, str]] = {}  # session -> (item, assigned by) of that write
    written_since: dict[str, bool] = {}  # session -> written since its last validation
    steps_since: dict[str, int] = defaultdict(int)
    open_file: dict[str, str] = {}
    current_item: dict[str, tuple[str, str]] = {}  # member -> (item in hand, who sent it)
    by_step: dict[tuple[str, int], Validation] = {}
    source: dict[
        str, Validation | None
    ] = {}  # session -> the validation its artefact is, if unchanged
    ran: dict[tuple[str, int], str] = {}  # (session, step) -> who ran that command
    seen_scores: dict[tuple, Validation] = {}
    best: float | None = a.baseline
    tokens_at: list[tuple[int, int]] = []  # (seq, team tokens after that turn)
    total = 0
    for ev in sorted(log.steps, key=lambda e: e.seq):
        total += ev.body.prompt_tokens + ev.body.completion_tokens
        tokens_at.append((ev.seq, total))
    ti = 0
    run_steps = 0
    final_src: Validation | None = None
    for ev in log.timeline:
        b = ev.body
        while ti < len(tokens_at) and tokens_at[ti][0] < ev.seq:
            ti += 1
        tokens_now = tokens_at[ti - 1][1] if ti else 0
        if hasattr(b, "command"):  # a CommandEvent
            run_steps += 1
            steps_since[b.session] += 1
            ran[(b.session, b.step)] = b.agent
            opened = _opened(b.command)
            if opened is not None:
                open_file[b.session] = opened
            if b.agent != "supervisor" and may_write(
                b.command, open_file.get(b.session, ""), submission
            ):
                writer[b.session] = b.agent
                member(b.agent).edits += 1
                writer_item[b.session] = current_item.get(b.agent, ("", ""))
                written_since[b.session] = True
                source[b.session] = None
        elif hasattr(b, "action"):  # a ScoreEvent
            score = _finite(b.scores.get(a.metric))
            agent = ran.get((b.session, b.step), "")
            v = Validation(
                ev.seq,
                ev.ts - log.first_ts,
                b.session,
                b.step,
                run_steps,
                b.action,
                dict(b.scores),
                score,
                writer.get(b.session, START),
                agent,
                *writer_item.get(b.session, ("", "")),
                steps_since=steps_since[b.session],
                tokens_total=tokens_now,
                error=b.error,
            )
            if b.action == "validate":
                if score is not None and written_since.get(b.session) is False:
                    v.duplicate = "repeat"
                key = tuple(sorted(b.scores.items()))
                if not v.duplicate and b.scores and key in seen_scores:
                    v.duplicate = "same_result"
                if b.scores:
                    seen_scores.setdefault(key, v)
                if score is not None and _better(score, best, a.direction):
                    v.improved = True
                    best = score
                a.best = (
                    score if score is not None and _better(score, a.best, a.direction) else a.best
                )
                written_since[b.session] = False
                steps_since[b.session] = 0
                source[b.session] = v
                a.validations.append(v)
                by_step[(b.session, b.step)] = v
            elif (
                b.session not in own
            ):  # the final submission (a member's own session cannot submit)
                final_src = source.get(b.session)
                a.final_submission = {
                    "score": score,
                    "scores": dict(b.scores),
                    "author": v.author,
                    "item": v.item,
                    "assigned_by": v.assigned_by,
                    "session": b.session,
                    "step": b.step,
                    "by": v.agent,
                    "run_step": run_steps,
                    "t_s": round(v.t_s, 3),
                    "error": b.error,
                    "auto": b.action == "autosubmit",
                    "validated_at": None
                    if final_src is None
                    else {
                        "session": final_src.session,
                        "step": final_src.step,
                        "score": final_src.score,
                    },
                }
                if a.final is None:
                    a.final = score
        elif getattr(b, "kind", "") == "artefact_copy":
            src = by_step.get((b.source_session, b.source_step))
            writer[b.target_session] = src.author if src else writer.get(b.source_session, START)
            writer_item[b.target_session] = (src.item, src.assigned_by) if src else ("", "")
            written_since[b.target_session] = True
            source[b.target_session] = src
            a.copies.append(
                {
                    "by": ev.sender,
                    "from_session": b.source_session,
                    "from_step": b.source_step,
                    "to_session": b.target_session,
                    "author": writer[b.target_session],
                    "t_s": round(ev.ts - log.first_ts, 3),
                }
            )
        elif getattr(b, "kind", "") == "work_item":
            for r in b.to or [b.assignee]:
                current_item[r] = (b.item, ev.sender)
        elif getattr(b, "kind", "") == "work_result":
            if current_item.get(ev.sender, ("",))[0] == b.item:
                current_item.pop(ev.sender, None)
    _first_and_waste(a, member, final_src)


def _first_and_waste(a: Analysis, member: Any, final_src: Validation | None) -> None:
    for v in a.validations:
        m = member(v.author) if v.author != START else None
        if m is not None:
            m.validations += 1
            m.improvements += v.improved
    first = next((v for v in a.validations if v.improved), None)
    if first is not None:
        a.first_improvement = {
            "t_s": round(first.t_s, 3),
            "run_steps": first.run_step,
            "tokens": first.tokens_total,
            "by": first.author,
            "score": first.score,
            "session": first.session,
            "step": first.step,
        }
    # the improvement over the baseline, shared among the authors of the improving validations
    prev = a.baseline
    gains: Counter = Counter()
    for v in a.validations:
        if v.improved and v.score is not None:
            gains[v.author] += abs(v.score - prev) if prev is not None else 1.0
            prev = v.score
    total = sum(gains.values())
    for name, g in gains.items():
        if name in a.members and total > 0:
            a.members[name].improvement_share = g / total
    final = a.final_submission or {}
    if final.get("author") in a.members:
        a.members[final["author"]].wrote_final = True
    wasted = [v for v in a.validations if not v.improved and v is not final_src]
    dups = [v for v in a.validations if v.duplicate]
    contributors = {v.author for v in a.validations if v.improved} | {final.get("author")}
    idle = [m for m in a.members.values() if m.name not in contributors and m.edits > 0]
    a.waste = {
        "validations": len(a.validations),
        "not_improving": len(wasted),
        "steps_on_not_improving": sum(v.steps_since for v in wasted),
        "duplicate_evaluations": len(dups),
        "repeats": sum(v.duplicate == "repeat" for v in dups),
        "same_results": sum(v.duplicate == "same_result" for v in dups),
        "members_without_contribution": [m.name for m in idle],
        "steps_of_members_without_contribution": sum(m.env_steps for m in idle),
        "tokens_of_members_without_contribution": sum(m.tokens for m in idle),
    }


def contribution(a: Analysis) -> dict[str, Any]:
    """Per member: validations authored, improvements, share of the improvement, the final."""
    out = {}
    for n, m in a.members.items():
        if m.validations or m.wrote_final or m.improvement_share:
            out[n] = {
                "validations": m.validations,
                "improvements": m.improvements,
                "improvement_share": round(m.improvement_share, 4),
                "final": m.wrote_final,
            }
    if (
        any(v.author == START for v in a.validations)
        or (a.final_submission or {}).get("author") == START
    ):
        out[START] = {
            "validations": sum(v.author == START for v in a.validations),
            "improvements": 0,
            "improvement_share": 0.0,
            "final": (a.final_submission or {}).get("author") == START,
        }
    return out
