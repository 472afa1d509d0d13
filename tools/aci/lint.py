"""Python lint for edits, the way MLGym's editor lints: flake8 restricted to the codes that
break a program, `F821,F822,F831,E111,E112,E113,E999,E902` (undefined names and exports,
duplicate arguments, indentation that is not a multiple of four, expected or unexpected
indents, syntax errors, unreadable files), computed in-process with pyflakes and pycodestyle
(flake8's own checkers) instead of a flake8 subprocess.

As in flake8: a file that does not parse reports only its E999; columns are 1-based; a line
with `# noqa` (or `# noqa: CODES`) hides its errors; `# flake8: noqa` hides the file's.
"""

from __future__ import annotations

import ast
import re

import msgspec
import pycodestyle
from pyflakes import checker, messages

SELECT = ("F821", "F822", "F831", "E111", "E112", "E113", "E999", "E902")
SYNTAX_CODES = ("E999", "E902")
_PYFLAKES: dict[type, str] = {
    messages.UndefinedName: "F821",
    messages.UndefinedExport: "F822",
    messages.DuplicateArgument: "F831",
}
_PYCODESTYLE = ("E111", "E112", "E113")
_NOQA = re.compile(r"#\s*noqa(?::[\s]?(?P<codes>[A-Z][0-9]+(?:[,\s]+[A-Z][0-9]+)*))?", re.I)
_FILE_NOQA = re.compile(r"#\s*flake8[:=]\s*noqa(?!:)", re.I)


class LintError(msgspec.Struct, frozen=True):
    line: int
    col: int
    code: str
    text: str

    @property
    def problem(self) -> str:
        return f"{self.code} {self.text}"

    def show(self) -> str:
        """One line of the refusal, as MLGym shows it: `- F821 undefined name 'y'`."""
        return f"- {self.problem}"


class _Collect(pycodestyle.BaseReport):
    def __init__(self, options) -> None:
        super().__init__(options)
        self.found: list[LintError] = []

    def error(self, line_number, offset, text, check):  # noqa: ANN001 - pycodestyle's API
        code = text[:4]
        if code in _PYCODESTYLE:
            self.found.append(LintError(line_number, offset + 1, code, text[5:]))
        return code


_STYLE = pycodestyle.StyleGuide(select=list(_PYCODESTYLE), quiet=True, max_line_length=10**6)


def _style_errors(lines: list[str]) -> list[LintError]:
    report = _Collect(_STYLE.options)
    pycodestyle.Checker("<file>", lines=lines, options=_STYLE.options, report=report).check_all()
    return report.found


def _noqa(errors: list[LintError], lines: list[str]) -> list[LintError]:
    if any(_FILE_NOQA.search(line) for line in lines):
        return []
    out = []
    for e in errors:
        m = _NOQA.search(lines[e.line - 1]) if 0 < e.line <= len(lines) else None
        if m and (not m["codes"] or e.code in re.split(r"[,\s]+", m["codes"].upper())):
            continue
        out.append(e)
    return out


def lint(source: str, filename: str = "<file>") -> list[LintError]:
    # bytes that are not UTF-8 (kept as surrogate escapes) become U+FFFD, so they cannot make
    # the parse fail with a message that changes from one edit to the next
    source = source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:  # IndentationError and TabError included
        col = (e.offset or 0) + 1 if e.lineno else 1
        return [LintError(e.lineno or 1, col, "E999", f"{type(e).__name__}: {e.msg}")]
    except (ValueError, UnicodeError) as e:  # NUL bytes on older Pythons, undecodable text
        return [LintError(1, 1, "E902", f"{type(e).__name__}: {e}")]
    lines = source.splitlines(keepends=True)
    out = []
    for m in checker.Checker(tree, filename=filename).messages:
        code = _PYFLAKES.get(type(m))
        if code:
            out.append(LintError(m.lineno, m.col + 1, code, m.message % m.message_args))
    out += _style_errors(lines)
    return sorted(_noqa(out, lines), key=lambda e: (e.line, e.col, e.code))


def new_errors(
    before: list[LintError], after: list[LintError], start: int, end: int, n_new: int
) -> list[LintError]:
    """Errors in `after` that the change introduced, by MLGym's rule: lines start..end were
    replaced by n_new lines; an error of the old file before the region keeps its line, one
    after it moves by the difference, one inside it is dropped (errors in the lines you write
    must be fixed); an error of the new file equal (line, column, text) to a kept one is old.

    Where ours differs: when the old file did not parse, its other errors were invisible, so
    only syntax errors and errors inside the new lines count (fixing a syntax error is not
    refused for old problems it reveals)."""
    shift = n_new - (end - start + 1)
    kept = set()
    for e in before:
        if e.line < start:
            kept.add(e)
        elif e.line > end:
            kept.add(LintError(e.line + shift, e.col, e.code, e.text))
    blind = any(e.code in SYNTAX_CODES for e in before)
    lo, hi = start, start + n_new - 1
    return [e for e in after
            if e not in kept
            and not (blind and e.code not in SYNTAX_CODES and not lo <= e.line <= hi)]
