"""Prompts, rendered from a role's templates (agents/roles.py, docs/teams.md). The shipped
`single` role follows the structure of MLGym's default agent: a system prompt (setting,
command docs, response format with an example, tips), an instance prompt (the task, the
instructions, the state lines), then each observation followed by the state lines; the team
roles reuse that skeleton with their own commands and duties. The variables are MLGym's
({WINDOW}, {command_docs}, {description}, {observation}, {current_step}, {remaining_steps},
{open_file}, {working_dir}) plus the team's ({team}, {channels}, {name}, {role}, ...)."""

from __future__ import annotations

from typing import Any

from mlgym.agents import roles as R
from mlgym.agents.parsing import format_reply
from mlgym.tools.aci import render_help
from mlgym.tools.turn import format_state

TOOLS_FORMAT = "Call exactly one tool per reply, with a short explanation of your reasoning."


def _role(role: R.Role | str) -> R.Role:
    return R.load(role) if isinstance(role, str) else role


def response_format(role: R.Role, mode: str) -> str:
    """The response-format section: the classic format with the role's example, or tools."""
    if mode != "text":
        return TOOLS_FORMAT
    return "\n".join([
        "RESPONSE FORMAT:",
        "Each reply has two parts: a DISCUSSION of your reasoning, then exactly ONE command in a "
        "fenced block, as in this example:",
        format_reply(role.example.thought, role.example.command).rstrip(),
        "",
        "Send a single command per reply and wait for its result before you continue. If you "
        "need several commands, send them one reply at a time.",
    ])


def system_prompt(role: R.Role | str, tools: list, *, window: int = 1000, mode: str = "text",
                  name: str = "", team_name: str = "") -> str:
    r = _role(role)
    return r.system_template.format(
        WINDOW=window, command_docs=render_help(tools).rstrip(),
        response_format=response_format(r, mode), name=name or r.name, role=r.name,
        team_name=team_name)


def _state(step: int, remaining: int, open_file: str, cwd: str) -> dict[str, Any]:
    return {"current_step": step, "remaining_steps": remaining, "open_file": open_file or "n/a",
            "working_dir": cwd, "state": format_state(step, remaining, open_file, cwd)}


def instance_prompt(role: R.Role | str, task_text: str, *, step: int, remaining: int,
                    open_file: str = "", cwd: str = "/home/agent/workspace",
                    team: dict[str, str] | None = None, channels: str = "", name: str = "",
                    team_name: str = "") -> str:
    """The first user message: the task and how to work on it. `team` (name -> role) becomes
    the {team} line; `channels` says, in words, what this member may send to whom."""
    r = _role(role)
    team_line = ("TEAM: " + ", ".join(f"{n} ({ro})" for n, ro in team.items()) + "\n\n"
                 if team else "")
    members = ", ".join(team or {})
    return r.instance_template.format(
        description=task_text.strip(), team=team_line, members=members,
        channels=channels, name=name or r.name, role=r.name, team_name=team_name,
        **_state(step, remaining, open_file, cwd))


def observation_prompt(output: str, *, step: int, remaining: int, open_file: str, cwd: str,
                       notes: list[str] | None = None, role: R.Role | None = None) -> str:
    """An observation as the model sees it: the output, any runtime notes, the state lines."""
    extra = "".join(f"\n\nNOTE: {n}" for n in notes or [])
    state = _state(step, remaining, open_file, cwd)
    if output.strip():
        template = role.next_step_template if role else R.NEXT_STEP
        return template.format(observation=output.rstrip("\n"), notes=extra, **state)
    template = role.next_step_no_output_template if role else R.NEXT_STEP_NO_OUTPUT
    return template.format(notes=extra, **state)
