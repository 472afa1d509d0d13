"""Team configurations: which members a run starts, in which roles, who may talk to whom, with
which model, history policy and budget.

A team is a TOML file (`agents/teams/<name>.toml`, or any path); docs/teams.md has every key:

    name = "default"
    merge = ""               # or "best": the supervisor submits the best validated artefact
    approval = []            # members or roles whose approval `submit` needs
    [budget]                 # the whole run; 0 = no limit
    steps = 50               # environment steps (every ACI command the team runs, any session)
    dollars = 4.0
    [topology]               # who may send which messages to whom (default: anyone to anyone)
    kind = "star"            # full | star | pipeline | pairs | none
    hub = "planner"
    [roles.reviewer]         # a role of this team's own (or a shipped one: agents/roles/)
    extends = "coder"
    [[agents]]
    name = "coder"
    role = "coder"
    count = 3                # parallel workers: coder-1, coder-2, coder-3
    model = "scripted:auto"
    history = "stable:5"     # or "last:5" (MLGym's), "full"
    [agents.budget]          # each of these members
    steps = 40

Decoded and checked with msgspec, so a typo names the field instead of being ignored. A
loaded team is self-contained: its members are expanded (`count`), its roles resolved
(`extends`, `file`) and every member's defaults filled in from its role, so run.json holds
everything a resumed run needs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from mlgym.agents import roles as R
from mlgym.agents import topology as T
from mlgym.agents.budgets import Budget
from mlgym.agents.history import check_spec
from mlgym.bus import protocol as P

TEAMS_DIR = Path(__file__).resolve().parent / "teams"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_COUNT = 16  # parallel workers of one entry
DEFAULT_MODEL = "scripted:auto"
DEFAULT_HISTORY = "last:5"

__all__ = ["AgentConfig", "Budget", "ConfigError", "TeamConfig", "load_team"]


class ConfigError(ValueError):
    """A team file that cannot be used; the message names the file and the problem."""


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    role: str  # a shipped role (agents/roles/) or one of the team's [roles]
    model: str = ""  # "": the role's, else scripted:auto
    history: str = ""  # "full", "last:N" (MLGym's) or "stable:K"; "": the role's, else last:5
    mode: Literal["text", "tools"] = "text"  # DISCUSSION + fenced command, or function calling
    temperature: float = 0.0
    # each model call (docs/models.md, "Limits"): output cap, wall clock per try, longest
    # silence of the server, retries after transient errors, streamed replies
    max_tokens: int = 0  # 0: the model's default (4096; 32768 for reasoning models)
    call_timeout_s: float = 300.0
    stall_timeout_s: float = 120.0
    max_retries: int = 5
    stream: bool = True
    budget: Budget = Budget()  # this member's own; unset limits come from its role's budget
    external: bool = False  # started by someone else (`mlgym agent ...`), not by the supervisor
    wait_timeout_s: float = 600.0  # longest a `wait` (or an idle agent) blocks for a message
    max_item_steps: int = 0  # steps per work item before it is reported as "budget"; 0: the role's
    count: int = 1  # parallel workers: `count` members named <name>-1 ... <name>-<count>
    group: str = ""  # set on expanded members: the entry's name (for --model NAME=SPEC)


class TeamConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    agents: list[AgentConfig]
    description: str = ""
    budget: Budget = Budget(steps=50, dollars=4.0)
    max_restarts: int = 3  # per agent, and for the environment server
    roles: dict[str, dict[str, Any]] = {}  # the team's own roles; once loaded, every role used
    topology: T.Topology = T.Topology()
    merge: Literal["", "best"] = ""  # "best": the supervisor submits the best artefact at the end
    approval: list[str] = []  # members (or roles) that must approve before `submit`
    budget_match: dict[str, Any] = {}  # set by --budget-match: the reference and its budget

    def agent(self, name: str) -> AgentConfig:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(name)

    def members(self) -> dict[str, str]:
        return {a.name: a.role for a in self.agents}

    def role(self, name: str) -> R.Role:
        """A role of this team (resolved at load), else a shipped one."""
        return R.lookup(self.roles, name)

    def role_of(self, member: str) -> R.Role:
        return self.role(self.agent(member).role)

    def channels(self) -> list[P.Channel]:
        return T.expand(self.topology, self.members())

    def approvers(self) -> list[str]:
        members = self.members()
        return list(dict.fromkeys(n for ref in self.approval for n in T.resolve(ref, members)))

    def own_sessions(self) -> list[str]:
        """Members that work in a session of their own (parallel workers)."""
        return [a.name for a in self.agents if self.role(a.role).session == "own"]


def _expand(team: TeamConfig, where: str) -> list[AgentConfig]:
    out = []
    for a in team.agents:
        if a.count < 1 or a.count > MAX_COUNT:
            raise ConfigError(f"{where}: agent {a.name}: count must be 1 to {MAX_COUNT}")
        if a.count == 1:
            out.append(a)
            continue
        for i in range(1, a.count + 1):
            out.append(msgspec.structs.replace(a, name=f"{a.name}-{i}", count=1, group=a.name))
    return out


def _resolve(team: TeamConfig, where: str, base_dir: Path | None) -> TeamConfig:
    """Members expanded, roles resolved and every member's defaults filled in from its role."""
    agents = _expand(team, where)
    used = list(dict.fromkeys(a.role for a in agents))
    roles: dict[str, dict[str, Any]] = {}
    for name in used:
        try:
            if name in team.roles:
                role = R.build(name, team.roles[name], local=team.roles, base_dir=base_dir)
            else:
                role = R.load(name)
        except R.RoleError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        roles[name] = role.as_dict()
    filled = []
    for a in agents:
        role = R.from_dict(roles[a.role])
        filled.append(msgspec.structs.replace(
            a, model=a.model or role.model or DEFAULT_MODEL,
            history=a.history or role.history or DEFAULT_HISTORY,
            max_item_steps=a.max_item_steps or role.max_item_steps,
            budget=a.budget.over(role.budget)))
    return msgspec.structs.replace(team, agents=filled, roles=roles)


def _check(team: TeamConfig, where: str) -> None:
    names = [a.name for a in team.agents]
    if not names:
        raise ConfigError(f"{where}: a team needs at least one agent")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: agent names must be unique, got {names}")
    for a in team.agents:
        if not NAME.match(a.name):
            raise ConfigError(f"{where}: agent name {a.name!r}: use a-z, 0-9, _ or -, 32 at most")
        try:
            check_spec(a.history)
        except ValueError as exc:
            raise ConfigError(f"{where}: agent {a.name}: {exc}") from None
        if a.max_tokens < 0 or a.call_timeout_s <= 0 or a.stall_timeout_s <= 0 or a.max_retries < 0:
            raise ConfigError(f"{where}: agent {a.name}: max_tokens must be >= 0, the timeouts > 0 "
                              "and max_retries >= 0")
    roles = {a.name: team.role(a.role) for a in team.agents}
    if "single" in team.members().values() and len(names) > 1:
        raise ConfigError(f"{where}: a `single` agent works alone")
    try:
        channels = team.channels()
        approvers = team.approvers()
    except T.TopologyError as exc:
        raise ConfigError(f"{where}: topology: {exc}") from None
    for c in team.topology.channels:
        bad = [k for k in c.kinds if not R.valid_kind(k)]
        if bad:
            raise ConfigError(f"{where}: topology: unknown message kinds {bad} "
                              f"(known: {', '.join(R.KINDS)}, or a custom x_<team>_<kind>)")
    for name, role in roles.items():
        for kind in role.wakes_on:
            senders = [s for s in names if s != name and T.allowed(channels, s, name, kind)
                       and _can_send(roles[s], kind)]
            if not senders:
                raise ConfigError(
                    f"{where}: {name} ({role.name}) waits for {kind} messages, but no member may "
                    f"send it one (a {role.name} needs, e.g., exactly one planner to `assign` it "
                    "work, and a channel from it)")
    submitters = [n for n, r in roles.items() if "submit" in r.commands]
    if not submitters and team.merge != "best":
        raise ConfigError(f"{where}: nobody can submit: give a member the `submit` command (a "
                          "planner or a single agent) or set merge = 'best'")
    for n in approvers:
        if not roles[n].takes("review"):
            raise ConfigError(f"{where}: approval: {n} ({roles[n].name}) does not take review "
                              "requests (its role's wakes_on/accepts lack 'review')")
    if approvers and not any("review" in roles[s].commands for s in submitters):
        raise ConfigError(f"{where}: approval is required but no submitter has the `review` "
                          "command to ask for it")


# which command sends which kind: a member can only send what its commands produce
SENDS = {"work": "assign", "result": "done", "question": "ask", "answer": "answer",
         "plan": "plan", "message": "message", "review": "review", "verdict": "approve"}


def _can_send(role: R.Role, kind: str) -> bool:
    cmd = SENDS.get(kind)
    return cmd is None or cmd in role.commands


def load_team(name_or_path: str | Path) -> TeamConfig:
    """A shipped team by name (`default`, `single`, `reviewer`, ...) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = TEAMS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"no team {str(name_or_path)!r} (shipped: {', '.join(shipped_teams())}; "
                          "or give a .toml path)")
    try:
        team = msgspec.toml.decode(path.read_bytes(), type=TeamConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    team = _resolve(team, str(path), path.parent)
    _check(team, str(path))
    return team


def shipped_teams() -> list[str]:
    return sorted(p.stem for p in TEAMS_DIR.glob("*.toml"))


def budget_match(team: TeamConfig, reference: str) -> TeamConfig:
    """`--budget-match REF`: give `team` the total step, token and dollar budget of REF, so that
    designs are compared at equal cost. REF is a team design (name or path: its declared run
    budget) or a run folder or folder of runs (the median of what they used: steps, tokens,
    dollars). The team's wall clock stays its own; its members' budgets stay as they are."""
    import json
    import statistics

    path = Path(reference)
    if path.is_dir():
        used = []
        for f in sorted(path.rglob("result.json")):
            try:
                r = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(r, dict) and not r.get("partial"):
                used.append(r)
        if not used:
            raise ConfigError(f"--budget-match {reference}: no finished run (result.json) there")

        def med(key: str) -> float:
            return float(statistics.median(float(r.get(key) or 0) for r in used))

        b = Budget(steps=round(med("steps")), tokens=round(med("tokens")), dollars=med("cost_usd"),
                   wall_clock_s=team.budget.wall_clock_s)
        info: dict[str, Any] = {"reference": str(path), "runs": len(used)}
    else:
        ref = load_team(reference).budget
        b = Budget(steps=ref.steps, tokens=ref.tokens, dollars=ref.dollars,
                   wall_clock_s=team.budget.wall_clock_s)
        info = {"reference": reference}
    info["budget"] = b.as_dict()
    return msgspec.structs.replace(team, budget=b, budget_match=info)


def override_models(team: TeamConfig, model: str | None, per_agent: dict[str, str] | None = None) -> TeamConfig:
    """`--model SPEC` sets every agent's model; `--model name=SPEC` (per_agent) one agent's."""
    agents = []
    for a in team.agents:
        per = per_agent or {}
        spec = (per.get(a.name) or (per.get(a.group) if a.group else None) or per.get(a.role)
                or model or a.model)
        agents.append(msgspec.structs.replace(a, model=spec))
    return msgspec.structs.replace(team, agents=agents)


def override_agents(team: TeamConfig, field: str, value: object | None,
                    per_agent: dict[str, object] | None = None) -> TeamConfig:
    """Set one AgentConfig field for every agent (`value`), or for the agents named (by name
    or role) in `per_agent`; None and absent names leave the team file's value. Checked again."""
    agents = []
    for a in team.agents:
        per = per_agent or {}
        by_role = per.get(a.role, value)
        v = per.get(a.name, per.get(a.group, by_role) if a.group else by_role)
        agents.append(a if v is None else msgspec.structs.replace(a, **{field: v}))
    out = msgspec.structs.replace(team, agents=agents)
    _check(out, "command line")
    return out


def team_json(team: TeamConfig) -> bytes:
    return msgspec.json.encode(team)


def team_from_json(data: bytes) -> TeamConfig:
    return msgspec.json.decode(data, type=TeamConfig)
