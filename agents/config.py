"""Team configurations: which agents a run starts, with which model, history policy and budget.

A team is a TOML file (`agents/teams/<name>.toml`, or any path):

    name = "default"
    [budget]                 # the whole run; 0 = no limit
    steps = 50               # environment steps (every ACI command the team runs)
    tokens = 0
    dollars = 4.0
    wall_clock_s = 3600
    [[agents]]
    name = "coder"
    role = "coder"
    model = "scripted:auto"
    history = "stable:5"     # or "last:5" (MLGym's), "full"
    max_tokens = 4096        # output cap per model call (default 4096; 32768 for reasoning models)
    [agents.budget]          # this agent only
    steps = 40

Decoded and checked with msgspec, so a typo names the field instead of being ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import msgspec

from mlgym.agents.history import check_spec

TEAMS_DIR = Path(__file__).resolve().parent / "teams"
ROLES = ("planner", "coder", "literature", "single")
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class ConfigError(ValueError):
    """A team file that cannot be used; the message names the file and the problem."""


class Budget(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """Limits; 0 means none. `steps` counts environment steps (ACI commands, validate and
    submit included) for the run, or for one agent's own actions in an agent's budget."""

    steps: int = 0
    tokens: int = 0
    dollars: float = 0.0
    wall_clock_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"steps": self.steps, "tokens": self.tokens, "dollars": self.dollars,
                "wall_clock_s": self.wall_clock_s}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Budget:
        return cls(steps=int(d.get("steps", 0)), tokens=int(d.get("tokens", 0)),
                   dollars=float(d.get("dollars", 0.0)), wall_clock_s=float(d.get("wall_clock_s", 0.0)))


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    role: Literal["planner", "coder", "literature", "single"]
    model: str = "scripted:auto"
    history: str = "last:5"  # "full", "last:N" (MLGym's) or "stable:K" (cache-friendly)
    mode: Literal["text", "tools"] = "text"  # DISCUSSION + fenced command, or function calling
    temperature: float = 0.0
    # each model call (docs/models.md, "Limits"): output cap, wall clock per try, longest
    # silence of the server, retries after transient errors, streamed replies
    max_tokens: int = 0  # 0: the model's default (4096; 32768 for reasoning models)
    call_timeout_s: float = 300.0
    stall_timeout_s: float = 120.0
    max_retries: int = 5
    stream: bool = True
    budget: Budget = Budget()
    external: bool = False  # started by someone else (`mlgym agent ...`), not by the supervisor
    wait_timeout_s: float = 600.0  # longest a `wait` (or an idle agent) blocks for a message
    max_item_steps: int = 15  # coder: steps per work item before it is reported as "budget"


class TeamConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    agents: list[AgentConfig]
    description: str = ""
    budget: Budget = Budget(steps=50, dollars=4.0)
    max_restarts: int = 3  # per agent, and for the environment server

    def agent(self, name: str) -> AgentConfig:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(name)

    def members(self) -> dict[str, str]:
        return {a.name: a.role for a in self.agents}


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
    roles = [a.role for a in team.agents]
    if "single" in roles and len(roles) > 1:
        raise ConfigError(f"{where}: a `single` agent works alone")
    if "single" not in roles:
        for needed in ("planner", "coder"):
            if roles.count(needed) != 1:
                raise ConfigError(f"{where}: a team needs exactly one {needed} (has {roles.count(needed)})")
        if roles.count("literature") > 1:
            raise ConfigError(f"{where}: at most one literature agent")


def load_team(name_or_path: str | Path) -> TeamConfig:
    """A shipped team by name (`default`, `single`) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = TEAMS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TEAMS_DIR.glob("*.toml")))
        raise ConfigError(f"no team {str(name_or_path)!r} (shipped: {known}; or give a .toml path)")
    try:
        team = msgspec.toml.decode(path.read_bytes(), type=TeamConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _check(team, str(path))
    return team


def override_models(team: TeamConfig, model: str | None, per_agent: dict[str, str] | None = None) -> TeamConfig:
    """`--model SPEC` sets every agent's model; `--model name=SPEC` (per_agent) one agent's."""
    agents = []
    for a in team.agents:
        spec = (per_agent or {}).get(a.name) or (per_agent or {}).get(a.role) or model or a.model
        agents.append(msgspec.structs.replace(a, model=spec))
    return msgspec.structs.replace(team, agents=agents)


def override_agents(team: TeamConfig, field: str, value: object | None,
                    per_agent: dict[str, object] | None = None) -> TeamConfig:
    """Set one AgentConfig field for every agent (`value`), or for the agents named (by name
    or role) in `per_agent`; None and absent names leave the team file's value. Checked again."""
    agents = []
    for a in team.agents:
        v = (per_agent or {}).get(a.name, (per_agent or {}).get(a.role, value))
        agents.append(a if v is None else msgspec.structs.replace(a, **{field: v}))
    out = msgspec.structs.replace(team, agents=agents)
    _check(out, "command line")
    return out


def team_json(team: TeamConfig) -> bytes:
    return msgspec.json.encode(team)


def team_from_json(data: bytes) -> TeamConfig:
    return msgspec.json.decode(data, type=TeamConfig)
