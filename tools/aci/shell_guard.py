"""Refuse shell commands that would wait for a terminal (vim, less, a bare python, git commit
without -m) BEFORE they run, with a message that says what to do instead; and refuse ACI
commands buried inside a shell line (`cd src && open x.py`), which the shell cannot run.

The command line is split into simple commands with shlex (quotes respected, heredoc bodies
skipped); each command's program is looked up after skipping wrappers such as `sudo`, `env`,
`timeout`. A command whose stdin is a pipe, a file or a heredoc is not interactive.
When the line cannot be tokenised (unbalanced quotes), it is left to the shell to report.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Collection

import msgspec

_PUNCT = "();<>|&\n"
_HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)\s*(['\"]?)([A-Za-z0-9_.\-]+)\2")
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"(python|python[23](\.\d+)?|pypy3?|ipython3?|bpython|ptpython)")
_KEYWORDS = {
    "if",
    "then",
    "else",
    "elif",
    "do",
    "while",
    "until",
    "!",
    "{",
    "}",
    "time",
    "exec",
    "command",
    "builtin",
    "nohup",
    "xargs",
}
# wrapper -> options that take a value
_WRAPPERS = {
    "sudo": {"-u", "-g", "-C", "-h", "-p"},
    "env": {"-u", "-C", "-S"},
    "nice": {"-n"},
    "timeout": {"-s", "-k", "--signal", "--kill-after"},
    "stdbuf": {"-i", "-o", "-e"},
    "ionice": {"-c", "-n", "-p"},
    "chrt": set(),
    "taskset": set(),
}

EDITORS = {
    "vi",
    "vim",
    "nvim",
    "view",
    "vimdiff",
    "gvim",
    "nano",
    "pico",
    "emacs",
    "emacsclient",
    "joe",
    "jed",
    "mcedit",
    "micro",
    "ne",
    "ed",
    "ex",
}
PAGERS = {"less", "more", "most", "pg"}
MONITORS = {"top", "htop", "btop", "atop", "nvtop", "glances", "iotop", "nmon", "watch"}
FULLSCREEN = {"tmux", "screen", "mc", "ranger", "nnn", "tig", "vd", "visidata", "nmtui"}
SHELLS = {"bash", "sh", "zsh", "dash", "fish", "ksh", "csh", "tcsh"}
REPLS = {
    "node",
    "nodejs",
    "irb",
    "R",
    "julia",
    "lua",
    "ghci",
    "scala",
    "bc",
    "sqlite3",
    "psql",
    "mysql",
    "gdb",
    "ftp",
    "sftp",
    "telnet",
    "ssh",
    "octave",
    "php",
}
INTERACTIVE_MODULES = {"pdb", "code", "IPython", "idlelib", "ipdb", "pudb", "asyncio"}

_PYTHON_HINT = (
    "Run a script (`python script.py`), a one-liner (`python -c '...'`) or a module "
    "(`python -m module`) instead."
)


def _no(what: str, instead: str = "") -> str:
    return f"Error: {what}, which is not supported. {instead}".rstrip()


class SimpleCommand(msgspec.Struct):
    words: list[str]
    stdin: bool  # stdin comes from a pipe, a file or a heredoc


def _drop_heredocs(text: str) -> str:
    out, pending = [], []
    for line in text.split("\n"):
        if pending:
            strip_tabs, word = pending[0]
            if (line.lstrip("\t") if strip_tabs else line).rstrip() == word:
                pending.pop(0)
            continue
        out.append(line)
        pending = [(m[1] == "-", m[3]) for m in _HEREDOC.finditer(line)]
    return "\n".join(out)


_PLAIN = re.compile(r"[\w ./=:,+@%^~-]*")  # no quotes, operators, expansions or escapes


def simple_commands(text: str) -> list[SimpleCommand] | None:
    """The simple commands of a shell line, or None when it cannot be tokenised."""
    if _PLAIN.fullmatch(text):  # most commands (`ls -la`, `python train.py`): one plain
        words = text.split()    # command, split as the shell would; shlex costs ~40 us
        return [SimpleCommand(words, False)] if words else []
    text = _drop_heredocs(text.replace("\\\n", " "))
    lex = shlex.shlex(text, posix=True, punctuation_chars=_PUNCT)
    lex.whitespace = " \t\r"
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:
        return None
    cmds: list[SimpleCommand] = []
    cur = SimpleCommand([], False)
    skip_next = False
    for i, tok in enumerate(tokens):
        is_op = tok != "" and all(c in _PUNCT for c in tok)
        if skip_next and not is_op:
            skip_next = False
            continue
        if not is_op:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if (
                tok.isdigit()
                and nxt
                and all(c in "<>&" for c in nxt)
                and any(c in "<>" for c in nxt)
            ):
                continue  # a file descriptor number of a redirection (2>&1)
            cur.words.append(tok)
            continue
        if any(c in "<>" for c in tok):
            skip_next = True
            if "<" in tok:
                cur.stdin = True
            continue
        if cur.words:
            cmds.append(cur)
        piped = tok.rstrip("\n") in ("|", "|&")
        cur = SimpleCommand([], piped)
    if cur.words:
        cmds.append(cur)
    return cmds


def _program(words: list[str]) -> list[str]:
    """Skip assignments, shell keywords and wrappers (sudo, env, timeout, ...)."""
    i = 0
    while i < len(words):
        w = words[i]
        if _ASSIGN.match(w) or w in _KEYWORDS:
            i += 1
            continue
        base = posixpath.basename(w)
        if base in _WRAPPERS:
            i += 1
            while i < len(words) and (words[i].startswith("-") or _ASSIGN.match(words[i])):
                i += 2 if words[i] in _WRAPPERS[base] else 1
            if base == "timeout" and i < len(words):
                i += 1  # the duration
            if base in ("nice", "taskset", "chrt") and i < len(words) and words[i][:1].isdigit():
                i += 1
            continue
        return [base, *words[i + 1 :]]
    return []


def _python_refusal(prog: str, args: list[str], stdin: bool) -> str | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-m"):
            module = a[2:] or (args[i + 1] if i + 1 < len(args) else "")
            if module.split(".")[0] in INTERACTIVE_MODULES:
                return _no(f"`{prog} -m {module}` starts an interactive session", _PYTHON_HINT)
            return None
        if a.startswith("-c") or a == "-":
            return None
        if a == "-i" or (re.fullmatch(r"-[a-zA-Z]+", a) and "i" in a[1:] and a[1] not in "WX"):
            return _no(f"`{prog} -i` starts an interactive session after the script", _PYTHON_HINT)
        if a in ("-W", "-X", "-Q", "--check-hash-based-pycs"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return None  # a script
    if stdin:
        return None
    return _no(
        f"a bare `{prog}` starts an interactive session (there is no terminal)", _PYTHON_HINT
    )


def _git_refusal(args: list[str]) -> str | None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ("-C", "-c") else 1
    if i >= len(args):
        return None
    sub, opts = args[i], args[i + 1 :]
    if sub == "commit":
        gives_message = any(
            o in ("--no-edit", "--fixup")
            or o.startswith(("--message", "--file", "--reuse-message", "--fixup=", "-m", "-F"))
            or re.fullmatch(r"-[a-zA-Z]+", o)
            and any(c in o[1:] for c in "mFC")
            for o in opts
        )
        if not gives_message:
            return (
                "Error: `git commit` without a message opens an editor, which is not supported. "
                'Use `git commit -m "message"`.'
            )
    if sub == "rebase" and any(o in ("-i", "--interactive") for o in opts):
        return _no("`git rebase -i` needs an editor", "Use a non-interactive rebase.")
    if sub == "add" and any(
        o in ("-p", "--patch", "-i", "--interactive", "-e", "--edit") for o in opts
    ):
        return _no("interactive `git add` needs a terminal", "Name the files to add instead.")
    if sub in ("mergetool", "difftool"):
        return _no(f"`git {sub}` is interactive", "Use `git diff`, or edit the files.")
    return None


def _refusal(prog: str, args: list[str], stdin: bool) -> str | None:
    if prog in EDITORS:
        return (
            f"Error: `{prog}` is an interactive editor, which is not supported. Use `open` to "
            "view a file and `edit`/`insert`/`create` to change it."
        )
    if prog in PAGERS:
        return _no(
            f"`{prog}` is an interactive pager", "Use `cat`, `head`, `tail`, `grep` or `open`."
        )
    if prog in MONITORS:
        return (
            f"Error: `{prog}` runs until stopped and needs a terminal, which is not supported. "
            "Take one snapshot instead (`ps aux`, `free -m`, `nvidia-smi`)."
        )
    if prog in FULLSCREEN:
        return _no(f"`{prog}` is a full-screen terminal program", "Run commands directly.")
    if _PYTHON.fullmatch(prog):
        return _python_refusal(prog, args, stdin)
    if prog == "jupyter" and args[:1] and args[0] in ("console", "qtconsole"):
        return f"Error: `jupyter {args[0]}` is interactive, which is not supported. {_PYTHON_HINT}"
    if prog in SHELLS:
        flags = "".join(a[1:] for a in args if re.fullmatch(r"-[a-zA-Z]+", a))
        if "i" in flags:
            return f"Error: `{prog} -i` starts an interactive shell, which is not supported."
        positional = [a for a in args if not a.startswith("-") and not a.startswith("+")]
        if not stdin and "c" not in flags and not positional:
            return (
                f"Error: a bare `{prog}` starts an interactive shell, which is not supported. "
                f"Run commands directly, or `{prog} script.sh` / `{prog} -c '...'`."
            )
        return None
    if prog in ("node", "nodejs") and not stdin:
        if "-i" in args or "--interactive" in args:
            return f"Error: `{prog} -i` starts an interactive session, which is not supported."
        if not any(not a.startswith("-") or a in ("-e", "-p", "--eval", "--print") for a in args):
            return _no(f"a bare `{prog}` starts an interactive session", "Run a script or use -e.")
        return None
    if prog == "sqlite3" and not stdin and len([a for a in args if not a.startswith("-")]) <= 1:
        return _no(
            "`sqlite3` without SQL on the command line is interactive",
            "Give the SQL as an argument: `sqlite3 db.sqlite 'SELECT ...'`.",
        )
    if prog in REPLS and not args and not stdin:
        return _no(
            f"a bare `{prog}` starts an interactive session",
            "Give it a script or a command to run.",
        )
    if prog == "git":
        return _git_refusal(args)
    return None


def refusal(text: str, aci_commands: Collection[str] = ()) -> tuple[str, str] | None:
    """(kind, message) saying why this shell command must not run, or None when it may.
    kind is "interactive" or "aci_in_shell"."""
    cmds = simple_commands(text)
    if not cmds:
        return None
    for cmd in cmds:
        words = _program(cmd.words)
        if not words:
            continue
        prog, args = words[0], words[1:]
        if prog in aci_commands:
            return "aci_in_shell", (
                f"Error: `{prog}` is an ACI command: it must be the whole action, on its own "
                "(it cannot be combined with shell commands, `&&`, `;` or pipes). Send the "
                "shell part and the ACI command as separate actions."
            )
        why = _refusal(prog, args, cmd.stdin)
        if why:
            return "interactive", why
    return None
