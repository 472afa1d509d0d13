"""Text form of an action -> (tool, args), and structured calls -> the same (tool, args).

A text action whose first word is a known text command is that command: its first line holds
the arguments (shell-like quoting), and a tool with a body takes every following line up to its
terminator (`end_of_edit`). Anything else is a plain shell command, passed on unchanged.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

import msgspec

from .result import AciError
from .spec import Arg, Slot, ToolDef, args_type, slots, usage

# Shell control operators: an ACI command cannot be combined with shell commands.
_OPERATORS = {"&&", "||", ";", "|", "&", ";;", "|&", ">", ">>", "<", "<<", "<<<", "(", ")"}


# MLGym answers these with their usage line alone when given too many arguments
USAGE_ONLY_WHEN_TOO_MANY = ("search_dir", "find_file")


class ShellCommand(msgspec.Struct, frozen=True):
    command: str


class Call(msgspec.Struct, frozen=True):
    tool: ToolDef
    args: dict[str, Any]


def _fail(tool: ToolDef, message: str) -> AciError:
    return AciError(f"{usage(tool)}\n{message}", kind="format")


def body_lines(text: str) -> list[str]:
    """A body string as lines: "" is no line, one trailing newline is not an extra line."""
    if text == "":
        return []
    text = text.removesuffix("\n")
    return text.split("\n")


def parse(text: str, tools: Mapping[str, ToolDef]) -> Call | ShellCommand:
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise AciError(
            "Error: empty command. Send one command (an ACI command or a shell command).", "format"
        )
    head = lines[0].strip()
    word = head.split(maxsplit=1)[0]
    tool = tools.get(word)
    if tool is None or not tool.text_command:
        return ShellCommand("\n".join(lines))
    rest = lines[1:]
    args = parse_args(tool, head[len(word) :])
    if tool.body is None:
        if rest:
            raise _fail(
                tool,
                f"Error: `{tool.name}` is a one-line command, but more lines followed it. "
                "Send one command per action.",
            )
        return Call(tool, args)
    assert tool.end_name is not None
    # the terminator is a line of its own, from its first column (trailing blanks allowed)
    end = next((i for i, line in enumerate(rest) if line.rstrip() == tool.end_name), None)
    if end is None:
        raise AciError(
            f"Malformed {tool.name} command. Please ensure you use the `{tool.end_name}` "
            f"keyword to mark the end of your {tool.name}.",
            kind="format",
        )
    if any(line.strip() for line in rest[end + 1 :]):
        raise _fail(
            tool,
            f"Error: found more text after {tool.end_name}; send one command per action. "
            "Nothing was changed.",
        )
    args[tool.body] = "".join(line + "\n" for line in rest[:end])
    return Call(tool, args)


def _tokens(tool: ToolDef, arg_text: str) -> list[str]:
    try:
        return shlex.split(arg_text)
    except ValueError as e:  # unbalanced quotes
        raise _fail(tool, f"Error: cannot read the arguments ({e}); check the quotes.") from e


def _operators(arg_text: str) -> list[str]:
    """Unquoted shell operators in the arguments (non-POSIX mode keeps quotes on tokens, so a
    quoted "|" is not an operator)."""
    lex = shlex.shlex(arg_text, posix=False, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        return [t for t in lex if t in _OPERATORS]
    except ValueError:
        return []


def _split_rest(tool: ToolDef, arg_text: str, before: int) -> tuple[list[str], str]:
    """`before` shell-like tokens, then the rest of the line verbatim (unquoted if it is one
    quoted string)."""
    lex = shlex.shlex(arg_text, posix=True)
    lex.whitespace_split = True
    tokens = []
    try:
        for _ in range(before):
            tok = lex.get_token()
            if tok is None:
                break
            tokens.append(tok)
    except ValueError as e:
        raise _fail(tool, f"Error: cannot read the arguments ({e}); check the quotes.") from e
    rest = (lex.instream.read() if before else arg_text).strip()
    try:
        parts = shlex.split(rest)
        if len(parts) == 1 and rest[:1] in "\"'" and rest[-1:] == rest[:1]:
            rest = parts[0]
    except ValueError:
        pass
    return tokens, rest


def _convert(tool: ToolDef, a: Arg, raw: str) -> Any:
    if a.type == "string":
        return raw
    if a.type == "integer":
        if re.fullmatch(r"\d+", raw):  # digits only, as MLGym's commands accept
            return int(raw)
        raise _fail(tool, f"Error: <{a.name}> must be a number")
    if a.type == "number":
        try:
            return float(raw)
        except ValueError:
            raise _fail(tool, f"Error: <{a.name}> must be a number, got {raw!r}") from None
    low = raw.lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise _fail(tool, f"Error: <{a.name}> must be true or false, got {raw!r}")


def parse_args(tool: ToolDef, arg_text: str) -> dict[str, Any]:
    """The first-line arguments of a text command, checked against its signature."""
    sl: tuple[Slot, ...] = slots(tool)
    rest_arg = tool.arg(sl[-1].names[0]) if sl and sl[-1].names else None
    values: list[str]
    if rest_arg is not None and rest_arg.rest_of_line:
        values, rest = _split_rest(tool, arg_text, len(sl) - 1)
        if rest:
            values.append(rest)
    else:
        ops = _operators(arg_text)
        if ops:
            raise _fail(
                tool,
                f"Error: ACI commands cannot be combined with shell operators ({' '.join(ops)}). "
                "Send this command on its own, and shell commands as separate actions.",
            )
        values = _tokens(tool, arg_text)
    if len(values) > len(sl):
        if tool.name in USAGE_ONLY_WHEN_TOO_MANY:  # as MLGym answers these
            raise AciError(usage(tool), kind="format")
        if tool.name == "goto":
            raise AciError("goto allows only one line number at a time.", kind="format")
        if tool.body is not None and tool.name in ("edit", "insert"):
            return_hint = (f" `{tool.name}` works on the open file; to change another file, "
                           "`open` it first.")
            raise _fail(tool, f"Error: too many arguments: `{tool.name}` takes "
                        f"{' '.join(s.text for s in sl)} only.{return_hint}")
        hint = " Quote an argument that contains spaces." if sl else ""
        raise _fail(
            tool,
            f"Error: too many arguments: `{tool.name}` takes at most {len(sl)}, "
            f"got {len(values)}.{hint}",
        )
    args: dict[str, Any] = {}
    for i, slot in enumerate(sl):
        if i >= len(values):
            if not slot.optional:
                missing = " ".join(f"<{n}>" for n in slot.names)
                raise _fail(tool, f"Error: missing {missing}")
            continue
        m = re.fullmatch(slot.pattern, values[i], flags=re.DOTALL)
        if m is None:
            seps = [c for c in slot.text if c in ":,="]
            if seps and not all(c in values[i] for c in seps):  # `edit 26`: MLGym's usage line
                raise AciError(usage(tool), kind="format")
            raise _fail(tool, f"Error: {values[i]!r} does not match {slot.text.strip('[]')}")
        for name in slot.names:
            args[name] = _convert(tool, tool.arg(name), m[name])
    return args


def coerce(tool: ToolDef, args: Any) -> dict[str, Any]:
    """Check a structured call's arguments against the tool's definition (msgspec does the
    type checks; numbers given as strings are converted, unknown names refused)."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _fail(
            tool, f"Error: arguments for `{tool.name}` must be an object, got {type(args).__name__}"
        )
    try:
        obj = msgspec.convert(args, args_type(tool), strict=False)
    except msgspec.ValidationError as e:
        raise _fail(tool, f"Error: invalid arguments for `{tool.name}`: {e}") from None
    return {k: v for k, v in msgspec.structs.asdict(obj).items() if v is not None}
