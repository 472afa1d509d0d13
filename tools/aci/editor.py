"""The file viewer and editor: one open file, a window of W numbered lines, edits by line range
with a lint gate for Python files (an edit that adds errors is not applied).

The window follows MLGym's editor exactly, so every view shows the same lines and counts: a
"current line" (MLGym's CURRENT_LINE) is kept inside [W/2, total - W/2] and the view shows
the lines up to current + W/2, at most W of them. `open f L` puts L a sixth of a window
below the top; scrolling moves the current line by W - overlap; at an end the same window is
shown again. Views stream the file (a multi-GB data file can be opened); edits hold the file
in memory, so they are limited to `max_edit_bytes`. Text is kept as UTF-8 with surrogate
escapes, so bytes that are not UTF-8 survive an edit unchanged.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence

from .lint import lint, new_errors
from .parser import body_lines
from .result import AciError
from .workspace import Resolved, Workspace

NO_FILE = "No file open. Use the open command first."  # open, goto, scroll_*, search_file
NO_FILE_EDIT = "No file open. Use the `open` command first."  # edit, insert
UPDATED = (
    "File updated. Please review the changes and make sure they are correct (correct "
    "indentation, no duplicate lines, etc). Edit the file again if necessary."
)
SCROLL_WARNING = (
    "WARNING: Scrolling many times in a row is very inefficient.\n"
    "If you know what you are looking for, use `search_file <pattern>` instead."
)
RULE = "-------------------------------------------------"
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00",
                b"MM\x00*")


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head


def _is_image(head: bytes) -> bool:
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _shown(line: str) -> str:
    """Text safe to show: surrogate-escaped bytes become U+FFFD."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _split(text: str) -> list[str]:
    if text == "":
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def _count_lines(f) -> int:
    """Lines as `awk 'END {print NR}'` counts them: a last line without a newline counts."""
    n, last = 0, b"\n"
    while chunk := f.read(1 << 20):
        n += chunk.count(b"\n")
        last = chunk[-1:]
    return n + (last != b"\n")


# ------------------------------------------------------------------- MLGym's window arithmetic


def constrain(current: float, total: int, window: int) -> float:
    """Keep the current line in [W/2, total - W/2] (the lower bound wins)."""
    half = window // 2
    return max(min(current, total - half), half)


def view_range(current: float, total: int, window: int) -> tuple[int, int, int, int]:
    """(lines above, first shown, last shown, lines below) for a constrained current line."""
    top = math.floor(max(current + window / 2, window / 2))
    above = math.floor(max(0.0, current - window / 2))
    below = math.floor(max(0.0, total - current - window / 2) + 0.5)  # jq's round
    return above, max(1, top - window + 1), min(total, top), below


def centre_on(line: int, window: int) -> int:
    """The current line that shows `line` a sixth of a window below the top (open, goto)."""
    return math.floor(max(line + window / 2 - window // 6, 1))


class Editor:
    def __init__(
        self,
        ws: Workspace,
        *,
        window: int = 1000,
        overlap: int = 2,
        max_line_chars: int = 2000,
        max_edit_bytes: int = 16 * 2**20,
        read_only: Callable[[Resolved], bool] | None = None,
    ):
        if window < 1 or not 0 <= overlap < window:
            raise ValueError("need window >= 1 and 0 <= overlap < window")
        self.ws = ws
        self.window = window
        self.overlap = overlap
        self.max_line_chars = max_line_chars
        self.max_edit_bytes = max_edit_bytes
        self.read_only = read_only or ws.is_read_only
        self.file: Resolved | None = None
        self.current: float = 0  # MLGym's CURRENT_LINE
        self.scrolls = 0  # consecutive scroll commands, for the scroll warning

    @property
    def first(self) -> int:
        """The first line of the last view of the open file."""
        if self.file is None:
            return 1
        return max(1, math.floor(max(self.current + self.window / 2, self.window / 2))
                   - self.window + 1)

    # ----------------------------------------------------------------- rendering

    def _clip(self, line: str) -> str:
        line = _shown(line)
        if len(line) > self.max_line_chars:
            extra = len(line) - self.max_line_chars
            return f"{line[: self.max_line_chars]} ... [{extra} more characters not shown]"
        return line

    def render(self, inside: str, total: int, current: float, window: int,
               lines: Callable[[int, int], Sequence[str]]) -> str:
        """MLGym's view: header, `(k more lines above)`, `n:text` lines, `(k more lines
        below)`. `lines(lo, hi)` gives lines lo..hi (1-based, inclusive)."""
        above, lo, hi, below = view_range(current, total, window)
        out = [f"[File: {inside} ({total} lines total)]"]
        if above > 0:
            out.append(f"({above} more lines above)")
        out += [f"{n}:{self._clip(text)}" for n, text in enumerate(lines(lo, hi), lo)]
        if below > 0:
            out.append(f"({below} more lines below)")
        return "\n".join(out)

    def _render_list(self, inside: str, lines: list[str], current: float, window: int) -> str:
        current = constrain(current, len(lines), window)
        return self.render(inside, len(lines), current, window, lambda lo, hi: lines[lo - 1:hi])

    def _require_file(self, message: str = NO_FILE) -> Resolved:
        if self.file is None:
            raise AciError(message, "no_file")
        return self.file

    def _total(self, r: Resolved) -> int:
        with self.ws.open_read(r) as f:
            return _count_lines(f)

    def view(self, current: float | None = None) -> str:
        """Constrain the current line (moved to `current` when given) and show its window."""
        r = self._require_file()
        with self.ws.open_read(r) as f:
            total = _count_lines(f)
            self.current = constrain(self.current if current is None else current, total,
                                     self.window)

            def lines(lo: int, hi: int) -> list[str]:
                f.seek(0)
                raw = itertools.islice(f, lo - 1, hi)
                return [b.rstrip(b"\n").decode("utf-8", "replace") for b in raw]

            return self.render(r.inside, total, self.current, self.window, lines)

    # ----------------------------------------------------------------- viewer commands

    def open(self, path: str, line_number: int | None, cwd: str) -> str:
        r = self.ws.resolve(path, cwd)
        if os.path.isdir(r.host):
            raise AciError(
                f"Error: {path} is a directory. You can only open files. Use cd or ls to "
                "navigate directories.",
                "not_found",
            )
        if not os.path.exists(r.host):
            raise AciError(f"File {path} not found", "not_found")
        if line_number is not None and line_number < 0:
            raise AciError("Error: <line_number> must be a number", "format")
        with self.ws.open_read(r) as f:
            head = f.read(8192)
            if _is_image(head):
                raise AciError(f"Error: {path} is an image file. Current environment does not "
                               "support image viewing.", "binary")
            if _is_binary(head):
                raise AciError(
                    f"Error: {r.inside} looks like a binary file; open shows text files only.",
                    "binary",
                )
            f.seek(0)
            total = _count_lines(f)
        notes = []
        current: float = self.window / 2
        if line_number is not None:
            if line_number > total:
                notes += [
                    (
                        f"Warning: <line_number> ({line_number}) is greater than the number of "
                        f"lines in the file ({total})"
                    ),
                    f"Warning: Setting <line_number> to {total}",
                ]
                current = total
            elif line_number < 1:
                notes += [
                    f"Warning: <line_number> ({line_number}) is less than 1",
                    "Warning: Setting <line_number> to 1",
                ]
                current = 1
            else:
                current = centre_on(line_number, self.window)
        self.file = r
        return "\n".join([*notes, self.view(current)])

    def goto(self, line_number: int) -> str:
        r = self._require_file()
        if line_number < 0:
            raise AciError("Error: <line_number> must be a number", "format")
        total = self._total(r)
        if line_number > total:
            raise AciError(f"Error: <line> must be less than or equal to {total}", "range")
        return self.view(centre_on(line_number, self.window))

    def _scroll(self, by: int) -> str:
        self._require_file()
        self.scrolls += 1
        out = self.view(self.current + by)
        return f"{out}\n\n{SCROLL_WARNING}" if self.scrolls >= 3 else out

    def scroll_down(self) -> str:
        return self._scroll(self.window - self.overlap)

    def scroll_up(self) -> str:
        return self._scroll(-(self.window - self.overlap))

    def create(self, filename: str, cwd: str) -> str:
        r = self.ws.resolve(filename, cwd)
        if os.path.lexists(r.host):
            try:
                shown = self.open(filename, None, cwd)
            except AciError as e:
                shown = e.message
            raise AciError(f"Error: File '{filename}' already exists.\n{shown}", "exists")
        self.ws.create_file(r)
        self.ws.write_bytes(r, b"\n")  # one empty line, as MLGym's create writes
        return self.open(filename, None, cwd)

    # ----------------------------------------------------------------- edits

    def _load(self) -> tuple[Resolved, list[str]]:
        r = self._require_file(NO_FILE_EDIT)
        if self.read_only(r):
            raise AciError(f"Error: You cannot edit read-only file {r.inside}", "read_only")
        data = self.ws.read_bytes(r, self.max_edit_bytes)
        if _is_binary(data[:8192]):
            raise AciError(
                f"Error: {r.inside} looks like a binary file; it cannot be edited.", "binary"
            )
        return r, _split(data.decode("utf-8", "surrogateescape"))

    def edit(self, start_line: int, end_line: int, replacement_text: str) -> str:
        r, lines = self._load()
        n = len(lines)
        if start_line < 1:
            raise AciError(f"Error: start_line must be at least 1, got {start_line}.", "range")
        if end_line < start_line - 1:
            raise AciError(
                f"Error: end_line ({end_line}) is before start_line ({start_line}). Replace "
                f"lines with `edit {start_line}:<end_line>` where end_line >= start_line, or "
                f"insert with `insert {start_line - 1}`.",
                "range",
            )
        # past the end, as in MLGym: the range is cut at the last line (a start past it appends)
        start = min(start_line, n + 1)
        end = max(min(end_line, n), start - 1)
        body = self._body(replacement_text, lines)
        new = lines[: start - 1] + body + lines[end:]
        errors = self._lint(r, lines, new, start, end, len(body))
        if errors:
            k = len(body)
            raise AciError(self._rejection(
                "edit", r, errors,
                self._render_list(r.inside, new, k // 2 + start_line - 1, k + 10),
                self._render_list(r.inside, lines, (end_line - start_line + 2) // 2
                                  + start_line - 1, end_line - start_line + 11),
            ), "lint")
        self._write(r, new)
        return f"{self.view(start_line - 1)}\n{UPDATED}"

    def insert(self, line_number: int, text_to_add: str) -> str:
        r, lines = self._load()
        if line_number < 0:
            raise AciError("Error: <line_number> must be a number", "format")
        at = min(line_number, len(lines))  # past the end appends, as in MLGym
        body = self._body(text_to_add, lines)
        new = lines[:at] + body + lines[at:]
        errors = self._lint(r, lines, new, at + 1, at, len(body))
        if errors:
            k = len(body)
            raise AciError(self._rejection(
                "insert", r, errors,
                self._render_list(r.inside, new, line_number + k // 2, k + 10),
                self._render_list(r.inside, lines, line_number, 10),
            ), "lint")
        self._write(r, new)
        return f"{self.view(line_number + 1)}\n{UPDATED}"

    @staticmethod
    def _body(text: str, lines: list[str]) -> list[str]:
        body = body_lines(text.replace("\r\n", "\n"))
        crlf = sum(line.endswith("\r") for line in lines) * 2 > len(lines) > 0
        return [b + "\r" for b in body] if crlf else body

    @staticmethod
    def _lint(r: Resolved, old: list[str], new: list[str], start: int, end: int, n: int):
        if not r.host.endswith(".py"):
            return []
        return new_errors(lint("\n".join(old) + "\n"), lint("\n".join(new) + "\n"), start, end, n)

    def _write(self, r: Resolved, new: list[str]) -> None:
        # every line ends with a newline; no line at all leaves one empty line (as MLGym's
        # `printf "%s\n"` of nothing does)
        data = "".join(line + "\n" for line in new) if new else "\n"
        self.ws.write_bytes(r, data.encode("utf-8", "surrogateescape"))

    @staticmethod
    def _rejection(kind: str, r: Resolved, errors, would: str, original: str) -> str:
        noun, verb = ("edit", "editing") if kind == "edit" else ("insertion", "inserting into")
        fix = ("Specify the correct start/end line arguments" if kind == "edit"
               else "Specify the correct line number argument")
        return "\n".join([
            f"Your proposed {noun} has introduced new syntax error(s). Please read this error "
            f"message carefully and then retry {verb} the file.",
            "",
            "ERRORS:",
            *(e.show() for e in errors),
            "",
            f"This is how your {noun} would have looked if applied",
            RULE,
            would,
            RULE,
            "",
            f"This is the original code before your {noun}",
            RULE,
            original,
            RULE,
            f"Your changes have NOT been applied. Please fix your {kind} command and try again.",
            f"You either need to 1) {fix} or 2) Correct your {noun} code.",
            f"DO NOT re-run the same failed {kind} command. Running it again will lead to the "
            "same error.",
        ])
