"""`ACI`: the agent-computer interface of one session, independent of sandboxes and servers.

The session server gives it the host folder behind the agent's workspace and three async
callbacks (the sandbox shell, validate, submit); extra tools (memory, literature) are plugged
in with `register`. Text actions (`run`) and structured tool calls (`call`) end in the same
code. File tools work on the host folder (confined to it); everything else goes to the shell.
Commands run one at a time (a lock), file work in a thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import msgspec

from mlgym import log

from . import search
from .editor import Editor
from .parser import Call, ShellCommand, coerce, parse
from .result import AciError, ToolResult
from .shell_guard import refusal
from .spec import BUILTIN_TOOLS, ToolDef, gemini_declarations, openai_tools, render_help
from .workspace import INSIDE_ROOT, Workspace

logger = log.get(__name__)


class ShellResult(Protocol):
    """What the sandbox shell callback returns; `cwd` is the shell's directory afterwards
    (an inside path), or None when unknown."""

    output: str
    exit_code: int
    cwd: str | None


ShellFn = Callable[[str, float | None], Awaitable[ShellResult]]
EvalFn = Callable[[], Awaitable[ToolResult]]
Handler = Callable[[dict[str, Any]], Awaitable[ToolResult | str]]


# a tqdm progress bar (`45%|████▌     | 45/100 [00:01<00:01, ...]`), as MLGym's reader drops it
TQDM_LINE = re.compile(r"(?:.*?:\s*)?(\d+%\|.*?\|.*\[.*?\])")


def mlgym_view(text: str) -> str:
    """An observation as MLGym's shell reader delivers it to the agent: lines split as
    str.splitlines does, empty lines and tqdm progress bars dropped."""
    return "\n".join(line for line in text.replace("\r\n", "\n").splitlines()
                     if line != "" and not TQDM_LINE.search(line))


class AciState(msgspec.Struct, kw_only=True):
    open_file: str | None
    cwd: str
    first_line: int
    window: int

    def prompt_lines(self) -> str:
        """The MLGym per-turn lines about the viewer and the shell."""
        return f"(Open file: {self.open_file or 'n/a'})\n(Current directory: {self.cwd})"


class ACI:
    def __init__(
        self,
        host_root: str | os.PathLike[str],
        *,
        shell: ShellFn,
        inside_root: str = INSIDE_ROOT,
        window: int = 1000,
        overlap: int = 2,
        validate: EvalFn | None = None,
        submit: EvalFn | None = None,
        command_timeout: float | None = None,
        cwd: str | None = None,
        max_line_chars: int = 2000,
        max_edit_bytes: int = 16 * 2**20,
        max_results: int = search.MAX_RESULTS,
        read_only: Iterable[str] = (),
        mlgym_output: bool = True,
        file_owner: tuple[int, int] | None = None,
    ):
        """`file_owner`: (uid, gid) given to files and folders the file tools create, when the
        sandbox user is not the server's (a container user)."""
        self.workspace = Workspace(host_root, inside_root, read_only, owner=file_owner)
        self.editor = Editor(
            self.workspace,
            window=window,
            overlap=overlap,
            max_line_chars=max_line_chars,
            max_edit_bytes=max_edit_bytes,
        )
        self.cwd = cwd or self.workspace.inside_root
        self.command_timeout = command_timeout
        self.max_results = max_results
        self.mlgym_output = mlgym_output  # observations without empty lines and progress bars
        self._shell_fn = shell
        self._validate = validate
        self._submit = submit
        self._tools: dict[str, ToolDef] = {t.name: t for t in BUILTIN_TOOLS}
        self._handlers: dict[str, Handler] = {}
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------- tools and docs

    @property
    def tools(self) -> list[ToolDef]:
        return list(self._tools.values())

    def register(self, tool: ToolDef, handler: Handler, *, replace: bool = False) -> None:
        """Add a tool (memory_write, literature_search, ...). `handler(args)` gets the checked
        arguments and returns a ToolResult or the observation text."""
        if tool.name in self._tools and not replace:
            raise ValueError(f"tool {tool.name!r} is already registered")
        if not callable(handler):
            raise TypeError("handler must be an async callable")
        self._tools[tool.name] = tool
        self._handlers[tool.name] = handler

    def help_text(self) -> str:
        return render_help(self.tools)

    def openai_tools(self) -> list[dict[str, Any]]:
        return openai_tools(self.tools)

    def gemini_declarations(self) -> list[dict[str, Any]]:
        return gemini_declarations(self.tools)

    def is_read_only(self, path: str) -> bool:
        """Whether `path` (an inside path, or relative to the workspace) is a read-only file:
        one the editor refuses to change, and so must every other writer."""
        try:
            ws = self.workspace
            return ws.is_read_only(ws.resolve(path, ws.inside_root))
        except AciError:
            return False

    def state(self) -> AciState:
        f = self.editor.file
        return AciState(
            open_file=f.inside if f else None,
            cwd=self.cwd,
            first_line=self.editor.first,
            window=self.editor.window,
        )

    # ----------------------------------------------------------------- entry points

    async def run(self, text: str, timeout: float | None = None) -> ToolResult:
        """Run one action in its text form (an ACI command or a shell command)."""
        async with self._lock:
            return self._deliver(await self._run_text(text, timeout))

    async def call(
        self, tool: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> ToolResult:
        """Run one structured tool call (function calling)."""
        async with self._lock:
            t = self._tools.get(tool)
            if t is None:
                names = ", ".join(sorted(self._tools))
                return AciError(
                    f"Error: unknown tool {tool!r}. Available tools: {names}.", "unknown_tool"
                ).result()
            try:
                checked = coerce(t, args)
            except AciError as e:
                return e.result()
            if t.name == "bash":
                return self._deliver(await self._run_text(checked["command"], timeout))
            return self._deliver(await self._execute(t, checked, timeout))

    def _deliver(self, res: ToolResult) -> ToolResult:
        if self.mlgym_output:
            res.output = mlgym_view(res.output)
        return res

    # ----------------------------------------------------------------- internals

    async def _run_text(self, text: str, timeout: float | None) -> ToolResult:
        try:
            parsed = parse(self._drop_open_file_name(text), self._tools)
        except AciError as e:
            return e.result()
        if isinstance(parsed, ShellCommand):
            return await self._shell(parsed.command, timeout)
        assert isinstance(parsed, Call)
        return await self._execute(parsed.tool, parsed.args, timeout)

    def _drop_open_file_name(self, text: str) -> str:
        """`edit 1:9 train.py` / `insert 4 train.py` with train.py the open file: the name is
        dropped (MLGym's edit ignores words after the range, and models write them). A name of
        another file is left, so the parser refuses it: MLGym would edit the open file."""
        first, nl, rest = text.partition("\n")
        words = first.split()
        if len(words) != 3 or words[0] not in ("edit", "insert") or self.editor.file is None:
            return text
        try:
            named = self.workspace.resolve(words[2].strip("\"'"), self.cwd)
        except AciError:
            return text
        if named.inside != self.editor.file.inside:
            return text
        return f"{words[0]} {words[1]}{nl}{rest}"

    async def _shell(self, command: str, timeout: float | None) -> ToolResult:
        self.editor.scrolls = 0
        texts = [t.name for t in self._tools.values() if t.text_command]
        why = refusal(command, texts)
        if why:
            kind, message = why
            logger.info("aci.refused", kind=kind, command=command[:200])
            return ToolResult(output=message, exit_code=1, data={"error": kind})
        res = await self._shell_fn(
            command, timeout if timeout is not None else self.command_timeout
        )
        if getattr(res, "cwd", None):
            self.cwd = res.cwd  # type: ignore[assignment]
        return ToolResult(output=res.output, exit_code=res.exit_code)

    async def _execute(
        self, tool: ToolDef, args: dict[str, Any], timeout: float | None
    ) -> ToolResult:
        if tool.name not in ("scroll_up", "scroll_down"):
            self.editor.scrolls = 0
        try:
            if tool.name in self._handlers:
                out = self._handlers[tool.name](args)
                out = await out if inspect.isawaitable(out) else out
                return out if isinstance(out, ToolResult) else ToolResult(output=str(out))
            if tool.name in ("validate", "submit"):
                return await self._evaluate(tool.name)
            if tool.name == "bash":
                return await self._shell(args["command"], timeout)
            text = await asyncio.to_thread(self._file_tool, tool.name, args)
            return ToolResult(output=text)
        except AciError as e:
            return e.result()

    async def _evaluate(self, name: str) -> ToolResult:
        fn = self._validate if name == "validate" else self._submit
        if fn is None:
            raise AciError(f"Error: `{name}` is not available in this session.", "unavailable")
        res = await fn()
        if res.action is None:
            res.action = name
        return res

    def _file_tool(self, name: str, a: dict[str, Any]) -> str:
        ed, ws, cwd = self.editor, self.workspace, self.cwd
        match name:
            case "open":
                return ed.open(a["path"], a.get("line_number"), cwd)
            case "goto":
                return ed.goto(a["line_number"])
            case "scroll_down":
                return ed.scroll_down()
            case "scroll_up":
                return ed.scroll_up()
            case "create":
                return ed.create(a["filename"], cwd)
            case "edit":
                return ed.edit(a["start_line"], a["end_line"], a["replacement_text"])
            case "insert":
                return ed.insert(a["line_number"], a["text_to_add"])
            case "search_dir":
                return search.search_dir(
                    ws, a["search_term"], a.get("dir"), cwd, max_results=self.max_results
                )
            case "search_file":
                return search.search_file(ws, a["search_term"], a.get("file"), ed.file, cwd)
            case "find_file":
                return search.find_file(ws, a["file_name"], a.get("dir"), cwd)
        raise AciError(f"Error: tool {name!r} has no handler in this session.", "unavailable")
