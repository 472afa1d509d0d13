"""One definition per ACI tool; the text help, the usage lines, the text-form parser and the
JSON schemas for function-calling models are all generated from it, so they cannot drift apart.

A `ToolDef` names its arguments once. Its `signature` is the first line of the text form, in the
MLGym/SWE-agent style: `<name>` is a required argument, `[<name>]` an optional one, and literal
characters between placeholders are separators (`edit <start_line>:<end_line>`). A tool with a
multi-line body (edit, insert) names the argument that receives the body and the terminator
line that ends it (`end_of_edit`).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Literal

import msgspec

ArgType = Literal["string", "integer", "number", "boolean"]
PY_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}

_PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")


class Arg(msgspec.Struct, frozen=True, kw_only=True):
    """One argument. `rest_of_line`: in the text form it takes the rest of the first line
    verbatim (free text such as `memory_write <text>`), so it must be the last one."""

    name: str
    description: str
    type: ArgType = "string"
    required: bool = True
    rest_of_line: bool = False


class ToolDef(msgspec.Struct, frozen=True, kw_only=True):
    """A tool. `body` names the argument that receives the lines after the command in the text
    form, up to the line `end_name`. `text_command=False` hides a tool from the text form
    (the `bash` tool exists only for function calling: in text, a plain command is shell)."""

    name: str
    signature: str
    docstring: str
    arguments: tuple[Arg, ...] = ()
    body: str | None = None
    end_name: str | None = None
    text_command: bool = True

    def __post_init__(self) -> None:
        _check(self)

    def arg(self, name: str) -> Arg:
        for a in self.arguments:
            if a.name == name:
                return a
        raise KeyError(name)


class Slot(msgspec.Struct, frozen=True):
    """One whitespace-separated token of the signature; `pattern` must match a whole word."""

    text: str
    names: tuple[str, ...]
    optional: bool
    pattern: str


def _slot(token: str) -> Slot:
    optional = token.startswith("[") and token.endswith("]")
    core = token[1:-1] if optional else token
    core = core.replace('"', "").replace("'", "")
    names = tuple(_PLACEHOLDER.findall(core))
    parts = _PLACEHOLDER.split(core)  # literal, name, literal, name, ..., literal
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
    return Slot(text=token, names=names, optional=optional, pattern=regex)


@cache
def slots(tool: ToolDef) -> tuple[Slot, ...]:
    return tuple(_slot(t) for t in tool.signature.split()[1:])


def _check(tool: ToolDef) -> None:
    """Refuse a definition whose signature and argument list disagree."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", tool.name):
        raise ValueError(f"tool name {tool.name!r}: use lower-case letters, digits, _")
    if "\n" in tool.signature or tool.signature.split()[:1] != [tool.name]:
        raise ValueError(f"{tool.name}: signature must be one line starting with the name")
    if (tool.body is None) != (tool.end_name is None):
        raise ValueError(f"{tool.name}: body and end_name go together")
    declared = [a.name for a in tool.arguments]
    if len(set(declared)) != len(declared):
        raise ValueError(f"{tool.name}: duplicate argument names")
    in_sig: list[str] = []
    for s in slots(tool):
        for n in s.names:
            if n not in declared:
                raise ValueError(f"{tool.name}: <{n}> in the signature is not an argument")
            if tool.arg(n).required == s.optional:
                raise ValueError(f"{tool.name}: <{n}> optional in one place, required in other")
            if tool.arg(n).rest_of_line and (len(s.names) != 1 or s is not slots(tool)[-1]):
                raise ValueError(f"{tool.name}: rest_of_line argument <{n}> must be last")
        in_sig += s.names
    expected = [n for n in declared if n != tool.body]
    if in_sig != expected:
        raise ValueError(f"{tool.name}: signature names {in_sig} but arguments are {expected}")
    if tool.body is not None and tool.arg(tool.body).type != "string":
        raise ValueError(f"{tool.name}: the body argument must be a string")
    seen_optional = False
    for s in slots(tool):
        if seen_optional and not s.optional:
            raise ValueError(f"{tool.name}: a required argument follows an optional one")
        seen_optional |= s.optional


def full_signature(tool: ToolDef) -> str:
    """The text form as shown to agents, multi-line for tools with a body."""
    if tool.body is None:
        return tool.signature
    return f"{tool.signature}\n<{tool.body}>\n{tool.end_name}"


def usage(tool: ToolDef) -> str:
    """The `Usage:` line that starts a parse error (the first line of the text form)."""
    return f"Usage: {tool.signature}"


def help_docstring(tool: ToolDef) -> str:
    if tool.body is None:
        return tool.docstring
    return (
        f"{tool.docstring} In the text form, <{tool.body}> is every line after the command, "
        f"up to a line holding only {tool.end_name}."
    )


def render_help(tools: list[ToolDef] | tuple[ToolDef, ...]) -> str:
    """Command docs for a system prompt (MLGym/SWE-agent layout), text commands only."""
    out = []
    for t in tools:
        if not t.text_command:
            continue
        lines = [
            f"{t.name}:",
            f"  docstring: {help_docstring(t)}",
            f"  signature: {full_signature(t)}",
        ]
        if t.arguments:
            lines.append("  arguments:")
            for a in t.arguments:
                need = "required" if a.required else "optional"
                lines.append(f"    - {a.name} ({a.type}) [{need}]: {a.description}")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def parameters_schema(tool: ToolDef) -> dict[str, Any]:
    """JSON Schema (draft 2020-12 subset that OpenAI and Gemini accept) of a tool's arguments."""
    return {
        "type": "object",
        "properties": {
            a.name: {"type": a.type, "description": a.description} for a in tool.arguments
        },
        "required": [a.name for a in tool.arguments if a.required],
        "additionalProperties": False,
    }


def openai_tools(tools: list[ToolDef] | tuple[ToolDef, ...]) -> list[dict[str, Any]]:
    """The OpenAI chat-completions `tools` list."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.docstring,
                "parameters": parameters_schema(t),
            },
        }
        for t in tools
    ]


def gemini_declarations(tools: list[ToolDef] | tuple[ToolDef, ...]) -> list[dict[str, Any]]:
    """Gemini `FunctionDeclaration` dicts (google-genai accepts them as they are); Gemini's
    schema subset has no `additionalProperties`, so it is left out."""
    out = []
    for t in tools:
        params = parameters_schema(t)
        params.pop("additionalProperties")
        decl: dict[str, Any] = {"name": t.name, "description": t.docstring}
        if t.arguments:
            decl["parameters"] = params
        out.append(decl)
    return out


@cache
def args_type(tool: ToolDef) -> type:
    """A msgspec Struct type for a tool's arguments: structured calls are validated (and
    numbers given as strings converted) by msgspec, not by hand."""
    fields: list[Any] = []
    for a in tool.arguments:
        py = PY_TYPES[a.type]
        fields.append((a.name, py) if a.required else (a.name, py | None, None))
    return msgspec.defstruct(f"{tool.name}_args", fields, forbid_unknown_fields=True, kw_only=True)


# --------------------------------------------------------------------------- built-in tools

_LINT_NOTE = (
    "Python files are checked with a linter afterwards: if the change would add syntax errors or "
    "undefined names, it is not applied and the errors are shown; fix the command rather than "
    "repeating it, as the same command fails the same way."
)

OPEN = ToolDef(
    name="open",
    signature='open "<path>" [<line_number>]',
    docstring="Opens the file at <path> in the file viewer and shows a window of its numbered "
    "lines. With <line_number>, the window is moved so that this line is in view.",
    arguments=(
        Arg(name="path", description="the path of the file to open"),
        Arg(
            name="line_number",
            type="integer",
            required=False,
            description="a line to bring into view (default: the top of the file)",
        ),
    ),
)
GOTO = ToolDef(
    name="goto",
    signature="goto <line_number>",
    docstring="Moves the window of the open file so that <line_number> is in view.",
    arguments=(Arg(name="line_number", type="integer", description="the line to show"),),
)
SCROLL_DOWN = ToolDef(
    name="scroll_down",
    signature="scroll_down",
    docstring="Moves the window of the open file down by one window (keeping a 2-line overlap).",
)
SCROLL_UP = ToolDef(
    name="scroll_up",
    signature="scroll_up",
    docstring="Moves the window of the open file up by one window (keeping a 2-line overlap).",
)
CREATE = ToolDef(
    name="create",
    signature="create <filename>",
    docstring="Creates a new empty file (and missing parent folders) and opens it. "
    "Refuses a file that already exists.",
    arguments=(Arg(name="filename", description="the path of the new file"),),
)
EDIT = ToolDef(
    name="edit",
    signature="edit <start_line>:<end_line>",
    docstring="Replaces lines <start_line> to <end_line> (1-based, inclusive) of the open file "
    "with <replacement_text>, written exactly as given: indent it correctly. An empty text "
    "deletes the lines; <end_line> = <start_line> - 1 inserts before <start_line>. " + _LINT_NOTE,
    arguments=(
        Arg(name="start_line", type="integer", description="first line to replace"),
        Arg(name="end_line", type="integer", description="last line to replace (inclusive)"),
        Arg(name="replacement_text", description="the new lines"),
    ),
    body="replacement_text",
    end_name="end_of_edit",
)
INSERT = ToolDef(
    name="insert",
    signature="insert <line_number>",
    docstring="Inserts <text_to_add> after line <line_number> of the open file (0 inserts at "
    "the top), written exactly as given: indent it correctly. " + _LINT_NOTE,
    arguments=(
        Arg(name="line_number", type="integer", description="the line after which to insert"),
        Arg(name="text_to_add", description="the lines to insert"),
    ),
    body="text_to_add",
    end_name="end_of_insert",
)
SEARCH_DIR = ToolDef(
    name="search_dir",
    signature="search_dir <search_term> [<dir>]",
    docstring="Searches for <search_term> (plain text, not a regex) in the files under <dir> "
    "(default: the current directory), hidden ones excepted, and lists the files that contain "
    "it with their numbers of matching lines.",
    arguments=(
        Arg(name="search_term", description="the text to look for"),
        Arg(
            name="dir",
            required=False,
            description="the folder to search (default: the current one)",
        ),
    ),
)
SEARCH_FILE = ToolDef(
    name="search_file",
    signature="search_file <search_term> [<file>]",
    docstring="Lists the lines of <file> (default: the open file) that contain <search_term> "
    "(plain text, not a regex), with their line numbers.",
    arguments=(
        Arg(name="search_term", description="the text to look for"),
        Arg(name="file", required=False, description="the file to search (default: the open file)"),
    ),
)
FIND_FILE = ToolDef(
    name="find_file",
    signature="find_file <file_name> [<dir>]",
    docstring="Finds the files named <file_name> under <dir> (default: the current directory); "
    "shell wildcards such as *.py are allowed.",
    arguments=(
        Arg(name="file_name", description="a file name or wildcard pattern"),
        Arg(
            name="dir",
            required=False,
            description="the folder to search (default: the current one)",
        ),
    ),
)
VALIDATE = ToolDef(
    name="validate",
    signature="validate",
    docstring="Evaluates your current submission on the task's test set and shows the "
    "baseline's and your scores. The episode goes on.",
)
SUBMIT = ToolDef(
    name="submit",
    signature="submit",
    docstring="Evaluates your current submission and ends the episode. Use it when done.",
)
BASH = ToolDef(
    name="bash",
    signature="bash <command>",
    docstring="Runs a command in the workspace's persistent shell and returns its output. "
    "Interactive programs (editors, pagers, a bare python or shell) are refused: use scripts "
    "and non-interactive flags. Text-form ACI commands (open, edit, ...) are accepted too.",
    arguments=(Arg(name="command", description="the shell command line", rest_of_line=True),),
    text_command=False,
)

BUILTIN_TOOLS: tuple[ToolDef, ...] = (
    OPEN,
    GOTO,
    SCROLL_DOWN,
    SCROLL_UP,
    CREATE,
    EDIT,
    INSERT,
    SEARCH_DIR,
    SEARCH_FILE,
    FIND_FILE,
    VALIDATE,
    SUBMIT,
    BASH,
)
