"""The commands agents run (each role lists its own: agents/roles/). Environment commands (the
ACI: open, edit, validate, shell...) go to the environment server; the others are handled by
the agent runtime itself: shared memory (memory service), literature (tools/literature) and
team messages (the bus). All are `ToolDef`s, so one definition gives the text syntax, the help
text and the JSON schema."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from mlgym.tools.aci import BUILTIN_TOOLS, Arg, ToolDef

ENV_TOOLS: dict[str, ToolDef] = {t.name: t for t in BUILTIN_TOOLS}

MEMORY_WRITE = ToolDef(
    name="memory_write",
    signature="memory_write <text>",
    docstring="Saves <text> (a finding, a result, an idea) to the memory shared by the team and "
    "later runs of this task.",
    arguments=(Arg(name="text", description="what to remember", rest_of_line=True),),
)
MEMORY_READ = ToolDef(
    name="memory_read",
    signature="memory_read <query>",
    docstring="Searches the shared memory and shows the entries that best match <query>.",
    arguments=(Arg(name="query", description="words to look for", rest_of_line=True),),
)
LITERATURE_SEARCH = ToolDef(
    name="literature_search",
    signature='literature_search "<query>" [<num_results>]',
    docstring="Searches research papers for <query> and lists titles, authors, links and "
    "abstracts (default 5 results).",
    arguments=(
        Arg(name="query", description="the search query"),
        Arg(name="num_results", type="integer", required=False, description="how many papers (1-20)"),
    ),
)
PARSE_PDF_URL = ToolDef(
    name="parse_pdf_url",
    signature="parse_pdf_url <url>",
    docstring="Downloads the PDF at <url> (or reads a local paper) and shows its text.",
    arguments=(Arg(name="url", description="the PDF's URL or path"),),
)
READ_FILE = ToolDef(
    name="read_file",
    signature="read_file <path>",
    docstring="Shows a file of the workspace without opening it in the editor (not an "
    "environment step).",
    arguments=(Arg(name="path", description="the path, relative to the workspace"),),
)
PLAN = ToolDef(
    name="plan",
    signature="plan",
    docstring="Records the team's current plan and shares it with the team.",
    arguments=(Arg(name="plan_text", description="the plan"),),
    body="plan_text",
    end_name="end_of_plan",
)
ASSIGN = ToolDef(
    name="assign",
    signature="assign <title>",
    docstring="Sends a work item to the coder: a one-line <title>, then the instructions. The "
    "coder carries it out in the environment and reports back; use `wait` for the result.",
    arguments=(
        Arg(name="title", description="a short title", rest_of_line=True),
        Arg(name="instructions", description="what the coder should do"),
    ),
    body="instructions",
    end_name="end_of_assign",
)
ASK = ToolDef(
    name="ask",
    signature="ask <question>",
    docstring="Asks the literature agent a question; its answer arrives as a message (`wait`).",
    arguments=(Arg(name="question", description="the question", rest_of_line=True),),
)
WAIT = ToolDef(
    name="wait",
    signature="wait",
    docstring="Waits for the next team message (a work result or an answer) and shows it.",
)
DONE = ToolDef(
    name="done",
    signature="done <summary>",
    docstring="Ends the current work item and reports <summary> to the planner, with the "
    "scores of your last validation.",
    arguments=(Arg(name="summary", description="what was done and what came out", rest_of_line=True),),
)
ANSWER = ToolDef(
    name="answer",
    signature="answer <text>",
    docstring="Answers the current question with <text> (cite the papers you used).",
    arguments=(Arg(name="text", description="the answer", rest_of_line=True),),
)

MESSAGE = ToolDef(
    name="message",
    signature="message <to>",
    docstring="Sends a message to <to>: a member's name, a role (all its members), several "
    "names separated by commas, or `all` (everyone you may write to). It arrives as a message "
    "in their conversation.",
    arguments=(
        Arg(name="to", description="member name(s), a role, or all"),
        Arg(name="text", description="the message"),
    ),
    body="text",
    end_name="end_of_message",
)
REVIEW = ToolDef(
    name="review",
    signature="review <summary>",
    docstring="Asks the team's reviewers to approve the latest validated artefact before you "
    "submit it; their verdict arrives as a message (`wait`).",
    arguments=(Arg(name="summary", description="what changed and why it is better",
                   rest_of_line=True),),
)
APPROVE = ToolDef(
    name="approve",
    signature="approve <comment>",
    docstring="Approves the artefact of the review request in hand: it may be submitted.",
    arguments=(Arg(name="comment", description="why", rest_of_line=True),),
)
REJECT = ToolDef(
    name="reject",
    signature="reject <comment>",
    docstring="Rejects the artefact of the review request in hand, saying what must change.",
    arguments=(Arg(name="comment", description="what is wrong and what to do", rest_of_line=True),),
)
DIFF = ToolDef(
    name="diff",
    signature="diff",
    docstring="Shows the artefact under review as a unified diff against the task's starting "
    "version (not an environment step).",
)
PICK = ToolDef(
    name="pick",
    signature="pick <item>",
    docstring="Copies the artefact a worker validated for work item <item> (from its own "
    "workspace) into yours, so that you can validate and submit it.",
    arguments=(Arg(name="item", description="the work item id, e.g. w2"),),
)
FINISH = ToolDef(
    name="finish",
    signature="finish <summary>",
    docstring="Ends your work; your validated artefacts stay in the running for the team's "
    "submission.",
    arguments=(Arg(name="summary", description="what you did and what came out",
                   rest_of_line=True),),
)

LOCAL_TOOLS: dict[str, ToolDef] = {t.name: t for t in (
    MEMORY_WRITE, MEMORY_READ, LITERATURE_SEARCH, PARSE_PDF_URL, READ_FILE, PLAN, ASSIGN, ASK,
    WAIT, DONE, ANSWER, MESSAGE, REVIEW, APPROVE, REJECT, DIFF, PICK, FINISH,
)}


def known_commands() -> set[str]:
    return set(ENV_TOOLS) | set(LOCAL_TOOLS)


def role_tools(role: Any) -> list[ToolDef]:
    """A role's commands as ToolDefs, in its order, with its own wording of their help."""
    from mlgym.agents import roles

    r = roles.load(role) if isinstance(role, str) else role
    out = []
    for n in r.commands:
        t = ENV_TOOLS.get(n) or LOCAL_TOOLS[n]
        doc = r.command_docs.get(n)
        out.append(msgspec.structs.replace(t, docstring=doc) if doc else t)
    return out


class _RoleTools(Mapping):
    """ROLE_TOOLS[name]: a shipped role's command names (read from agents/roles/)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        from mlgym.agents import roles

        try:
            return tuple(roles.load(name).commands)
        except roles.RoleError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        from mlgym.agents import roles

        return iter(roles.shipped())

    def __len__(self) -> int:
        from mlgym.agents import roles

        return len(roles.shipped())


ROLE_TOOLS = _RoleTools()


def is_env_tool(name: str) -> bool:
    return name in ENV_TOOLS


def call_to_text(tool: ToolDef | None, name: str, args: dict[str, Any]) -> str:
    """A structured call written back in the text form (for reading tool-call transcripts)."""
    if tool is None:
        return f"{name} " + " ".join(str(v) for v in args.values())
    words = [name]
    for token in tool.signature.split()[1:]:
        core = token.strip("[]").replace('"', "")
        names = re.findall(r"<([A-Za-z_]\w*)>", core)
        if not names or any(n not in args for n in names):
            continue
        text = core
        for n in names:
            text = text.replace(f"<{n}>", str(args[n]))
        rest = tool.arg(names[0]).rest_of_line
        words.append(text if rest or " " not in text else f'"{text}"')
    head = " ".join(words)
    if tool.body is not None:
        body = str(args.get(tool.body, ""))
        return f"{head}\n{body}{'' if body.endswith(chr(10)) or not body else chr(10)}{tool.end_name}"
    return head
