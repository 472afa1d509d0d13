"""Roles as data: what a member of a team is told, may run and waits for.

A role is a TOML table: shipped ones are files in `agents/roles/<name>.toml`; a team file may
declare its own (`[roles.<name>]`), starting from another with `extends = "<role>"` (the
table's keys replace the parent's) or from a file with `file = "path.toml"`. docs/teams.md
describes every key; in short:

    description = "..."
    commands = ["open", "edit", "validate", "bash", "done", ...]   # what it may run
    command_docs = { assign = "..." }      # this role's wording of a command's help
    system_template = "..."                # MLGym's variables: {WINDOW}, {command_docs}, ...
    instance_template = "..."              # {description}, {current_step}, {open_file}, ...
    next_step_template = "..."             # {observation}, {notes}, the state variables
    next_step_no_output_template = "..."
    message_template = "MESSAGE FROM {sender} ({about}): {text}"
    example = { thought = "...", command = "ls -la" }   # the response format's example
    wakes_on = ["work"]        # message kinds that give an idle member its job ([]: starts working)
    accepts = ["work", ...]    # message kinds it takes in at all (others are not sent to it)
    session = "shared"         # "shared": the team's session; "own": its own sandbox; "none"
    critical = true            # the run cannot go on once every member of this role is gone
    history, model, max_item_steps, [budget]   # defaults for its members
    policy = "coder"           # the scripted model's policy (default: its parent's, else its name)

Templates are `str.format` templates: a brace that is not a variable is written `{{`.
"""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec

from mlgym.agents.budgets import Budget

ROLES_DIR = Path(__file__).resolve().parent / "roles"

# the team message kinds a channel, `wakes_on` or `accepts` may name; custom kinds are `x_...`
KINDS = ("work", "result", "question", "answer", "plan", "message", "review", "verdict")

NEXT_STEP = """\
{observation}{notes}
(Current Step: {current_step}, Remaining Steps: {remaining_steps})
(Open file: {open_file})
(Current directory: {working_dir})"""
NEXT_STEP_NO_OUTPUT = """\
Your command ran successfully and did not produce any output.{notes}
(Current Step: {current_step}, Remaining Steps: {remaining_steps})
(Open file: {open_file})
(Current directory: {working_dir})"""
MESSAGE = "MESSAGE FROM {sender} ({about}): {text}"

_STATE_VARS = {"current_step", "remaining_steps", "open_file", "working_dir", "state"}
VARIABLES: dict[str, set[str]] = {
    "system_template": {"WINDOW", "command_docs", "response_format", "name", "role", "team_name"},
    "instance_template": {
        "description",
        "team",
        "members",
        "channels",
        "name",
        "role",
        "team_name",
        *_STATE_VARS,
    },
    "next_step_template": {"observation", "notes", *_STATE_VARS},
    "next_step_no_output_template": {"notes", *_STATE_VARS},
    "message_template": {"sender", "about", "text", "kind"},
}


class RoleError(ValueError):
    """A role that cannot be used; the message names it and the problem."""


class Example(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    thought: str
    command: str


class Role(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    name: str
    commands: list[str]
    system_template: str
    instance_template: str
    description: str = ""
    extends: str = ""  # kept for the record: the parent it was built from
    command_docs: dict[str, str] = {}
    next_step_template: str = NEXT_STEP
    next_step_no_output_template: str = NEXT_STEP_NO_OUTPUT
    message_template: str = MESSAGE
    example: Example = Example("First I will look at the files in the workspace.", "ls -la")
    wakes_on: list[str] = []
    accepts: list[str] = msgspec.field(default_factory=lambda: list(KINDS))
    session: Literal["shared", "own", "none"] = "shared"
    critical: bool = False
    model: str = ""
    history: str = ""
    max_item_steps: int = 15
    budget: Budget = Budget()
    policy: str = ""

    @property
    def scripted_policy(self) -> str:
        return self.policy or self.name

    @property
    def shell(self) -> bool:
        """Plain (non-ACI) text actions are shell commands run in the environment."""
        return "bash" in self.commands

    def takes(self, kind: str) -> bool:
        return kind in self.accepts or kind in self.wakes_on

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


@cache
def _shipped_table(name: str) -> dict[str, Any]:
    path = ROLES_DIR / f"{name}.toml"
    try:
        return msgspec.toml.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise RoleError(f"{path}: not valid TOML: {exc}") from None


def shipped() -> list[str]:
    return sorted(p.stem for p in ROLES_DIR.glob("*.toml"))


def resolve_table(
    name: str,
    table: dict[str, Any],
    *,
    local: dict[str, dict[str, Any]] | None = None,
    base_dir: Path | None = None,
    seen: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A role's table with `file` and `extends` applied: the parent's keys, then its own."""
    if name in seen:
        raise RoleError(
            f"role {name}: `extends` goes round in a circle ({' -> '.join((*seen, name))})"
        )
    table = dict(table)
    merged: dict[str, Any] = {}
    if "file" in table:
        path = Path(table.pop("file"))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            merged.update(msgspec.toml.decode(path.read_bytes()))
        except (OSError, msgspec.DecodeError) as exc:
            raise RoleError(f"role {name}: cannot read {path}: {exc}") from None
    parent = table.get("extends") or merged.get("extends")
    if parent:
        ptable = (local or {}).get(parent) if parent != name else None
        if ptable is not None:
            base = resolve_table(parent, ptable, local=local, base_dir=base_dir, seen=(*seen, name))
        elif parent in shipped():  # shipped roles extend only shipped ones: a chain of its own
            chain = (*seen, name) if not local or name not in local else ()
            base = resolve_table(parent, _shipped_table(parent), seen=chain)
        else:
            raise RoleError(
                f"role {name}: extends unknown role {parent!r} (shipped: {', '.join(shipped())})"
            )
        base.setdefault("policy", base["name"])  # a child acts like its parent unless told
        merged = {**base, **merged}
    merged.update(table)
    merged["name"] = name
    return merged


def build(name: str, table: dict[str, Any], **kw: Any) -> Role:
    """A checked Role from a TOML table (see `resolve_table` for `extends` and `file`)."""
    from mlgym.agents.tools import known_commands

    data = resolve_table(name, table, **kw)
    try:
        role = msgspec.convert(data, Role)
    except msgspec.ValidationError as exc:
        raise RoleError(f"role {name}: {exc}") from None
    unknown = [c for c in role.commands if c not in known_commands()]
    if unknown:
        raise RoleError(
            f"role {name}: unknown commands {unknown} (known: "
            f"{', '.join(sorted(known_commands()))})"
        )
    for c in role.command_docs:
        if c not in role.commands:
            raise RoleError(
                f"role {name}: command_docs names {c!r}, which is not one of its commands"
            )
    for field, allowed in VARIABLES.items():
        check_template(name, field, getattr(role, field), allowed)
    for field in ("wakes_on", "accepts"):
        bad = [k for k in getattr(role, field) if not valid_kind(k)]
        if bad:
            raise RoleError(
                f"role {name}: {field} names unknown message kinds {bad} "
                f"(known: {', '.join(KINDS)}, or a custom x_<team>_<kind>)"
            )
    if role.session == "own" and "submit" in role.commands:
        raise RoleError(
            f"role {name}: a member with a session of its own cannot `submit` (one "
            "submission per run, from the team's session): give it `done` or "
            "`finish`, and let a planner `pick` or the team's merge rule decide"
        )
    if role.session == "none" and any(_is_env(c) for c in role.commands):
        raise RoleError(f'role {name}: session = "none" but it has environment commands')
    if role.max_item_steps < 1:
        raise RoleError(f"role {name}: max_item_steps must be >= 1")
    return role


def _is_env(command: str) -> bool:
    from mlgym.agents.tools import is_env_tool

    return is_env_tool(command)


def valid_kind(kind: str) -> bool:
    return (
        kind in KINDS
        or kind == "*"
        or (kind.startswith("x_") and kind[2:].replace("_", "").isalnum())
    )


def check_template(role: str, field: str, text: str, allowed: set[str]) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise RoleError(
            f"role {role}: {field}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from None
    for n in names:
        if n not in allowed:
            raise RoleError(
                f"role {role}: {field} uses {{{n}}}, which is not one of its "
                f"variables ({', '.join(sorted(allowed))})"
            )


@cache
def load(name: str) -> Role:
    """A shipped role by name."""
    if name not in shipped():
        raise RoleError(
            f"no role {name!r} (shipped: {', '.join(shipped())}; or declare "
            f"[roles.{name}] in the team file)"
        )
    return build(name, _shipped_table(name))


def from_dict(data: dict[str, Any]) -> Role:
    """A role as RunInfo carries it (already resolved and checked by whoever sent it)."""
    try:
        return msgspec.convert(data, Role)
    except msgspec.ValidationError as exc:
        raise RoleError(f"role {data.get('name', '?')}: {exc}") from None


def lookup(roles: dict[str, dict[str, Any]], name: str) -> Role:
    """A role by name: the definition a team (or RunInfo) carries, else the shipped one."""
    table = roles.get(name)
    return from_dict(table) if table is not None else load(name)
