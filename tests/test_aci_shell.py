"""Shell commands through the ACI: a real subprocess shell, refusal of interactive programs
before they run, validate/submit callbacks, extra tools and structured calls."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlgym.tools.aci import ACI, Arg, ToolDef, ToolResult
from mlgym.tools.aci.localshell import LocalShell
from mlgym.tools.aci import shell_guard
from mlgym.tools.aci.shell_guard import refusal

WS = "/home/agent/workspace"


def make(tmp_path, **kw) -> ACI:
    root = tmp_path / "ws"
    root.mkdir(exist_ok=True)
    return ACI(root, shell=LocalShell(root, WS), **kw)


async def test_shell_commands_run_and_track_the_directory(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("echo hello && exit 3")
    # delivered as MLGym's shell reader does: no empty lines (so no final newline either)
    assert (r.output, r.exit_code, r.action) == ("hello", 3, None)
    r = await aci.run("mkdir -p src/pkg && cd src/pkg && echo 'x = 1' > m.py")
    assert r.exit_code == 0
    assert aci.state().cwd == f"{WS}/src/pkg"
    r = await aci.run("open m.py")
    assert r.output.startswith(f"[File: {WS}/src/pkg/m.py (1 lines total)]")
    r = await aci.run("for i in 1 2; do\n  echo $i\ndone")  # multi-line shell is passed as is
    assert r.output == "1\n2"


async def test_shell_timeout_is_passed_to_the_shell(tmp_path):
    aci = make(tmp_path, command_timeout=0.3)
    r = await aci.run("sleep 30")
    assert r.exit_code == 124 and "timed out" in r.output
    r = await aci.run("sleep 30", timeout=0.2)
    assert r.exit_code == 124


REFUSED = [
    "vim train.py",
    "vi x",
    "nano x",
    "emacs x",
    "less log.txt",
    "more log.txt",
    "top",
    "htop",
    "watch nvidia-smi",
    "python",
    "python3",
    "python3.11",
    "ipython",
    "bash",
    "sh",
    "zsh",
    "bash -i",
    "python -i train.py",
    "python -m pdb train.py",
    "node",
    "git commit",
    "git commit --amend",
    "git -C repo commit -a",
    "git rebase -i HEAD~3",
    "git add -p",
    "sudo vim /etc/hosts",
    "FOO=1 python",
    "timeout 5 python3",
    "env A=1 B=2 ipython",
    "nohup python -u",
    "ls && vim x",
    "ls; python",
    "cd src\nvim x.py",
    "cat x | less",
    "echo hi 2>&1 && python",
    "sqlite3 db.sqlite",
    "tmux",
    "(cd src && vim a.py)",
]

ALLOWED = [
    "python train.py",
    "python -c 'print(1)'",
    "python -m pip list",
    "python3 -u train.py --lr 3",
    "echo 'print(1)' | python",
    "python - <<'EOF'\nimport os\nEOF",
    "python < script.py",
    "bash -c 'echo hi'",
    "bash -lc 'echo hi'",
    "bash run.sh",
    "sh -c ls",
    "git commit -m 'msg'",
    "git commit -am msg",
    "git commit --amend --no-edit",
    "git status",
    "git log -n 3",
    "grep vim notes.txt",
    "echo vim",
    "ls # vim",
    "cat > notes.md <<'EOF'\nvim and less\nEOF",
    'cat > a.py << EOF\nprint("it\'s")\nEOF',
    "python -W ignore train.py",
    "sqlite3 db 'select 1'",
    "node script.js",
    "node -e 'console.log(1)'",
    "pip install -q numpy",
    "nvidia-smi",
    "echo 'unbalanced",
    "ps aux | grep python",
    "timeout 60 python train.py",
]


@pytest.mark.parametrize("cmd", REFUSED)
def test_interactive_programs_are_refused(cmd):
    why = refusal(cmd, ["open", "edit"])
    assert why is not None, cmd
    kind, message = why
    assert kind == "interactive" and message.startswith("Error:") and "not supported" in message


@pytest.mark.parametrize("cmd", ALLOWED)
def test_ordinary_commands_are_allowed(cmd):
    assert refusal(cmd, ["open", "edit"]) is None, cmd


async def test_refusal_happens_before_anything_runs(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("touch marker && vim marker")
    assert r.exit_code == 1 and r.data["error"] == "interactive"
    assert "open" in r.output and "edit" in r.output  # says what to use instead
    assert not (tmp_path / "ws" / "marker").exists()
    r = await aci.run("python -c 'print(6*7)'")
    assert (r.exit_code, r.output) == (0, "42")


async def test_aci_commands_inside_shell_lines_are_refused(tmp_path):
    aci = make(tmp_path)
    (tmp_path / "ws" / "src").mkdir()
    r = await aci.run("cd src && open a.py")
    assert r.data["error"] == "aci_in_shell" and "on its own" in r.output
    assert aci.state().cwd == WS  # the cd did not run either
    r = await aci.run("ls\nsubmit")
    assert r.data["error"] == "aci_in_shell"


async def test_validate_and_submit_call_the_session_callbacks(tmp_path):
    calls = []

    async def evaluate(kind: str) -> ToolResult:
        # a real evaluation of the agent's artefact: read its submission file
        text = (tmp_path / "ws" / "submission.json").read_text()
        score = json.loads(text)["accuracy"]
        calls.append(kind)
        return ToolResult(
            output=f"Your score: accuracy {score}", data={"scores": {"accuracy": score}}
        )

    aci = make(tmp_path, validate=lambda: evaluate("validate"), submit=lambda: evaluate("submit"))
    await aci.run("""echo '{"accuracy": 0.75}' > submission.json""")
    r = await aci.run("validate")
    assert (r.action, r.data["scores"], r.output) == (
        "validate",
        {"accuracy": 0.75},
        "Your score: accuracy 0.75",
    )
    r = await aci.call("submit", {})
    assert r.action == "submit" and calls == ["validate", "submit"]
    r = await aci.run("validate now")
    assert r.exit_code == 1 and "too many arguments" in r.output and calls == ["validate", "submit"]


async def test_validate_without_a_callback(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("submit")
    assert (r.exit_code, r.data["error"]) == (1, "unavailable")
    assert r.output == "Error: `submit` is not available in this session."


async def test_registered_tools_work_in_both_forms_and_appear_in_docs(tmp_path):
    notes: list[str] = []

    async def memory_write(args):
        notes.append(args["text"])
        return f"Saved note {len(notes)}."

    tool = ToolDef(
        name="memory_write",
        signature="memory_write <text>",
        docstring="Saves a note to the team's memory.",
        arguments=(Arg(name="text", description="the note", rest_of_line=True),),
    )
    aci = make(tmp_path)
    aci.register(tool, memory_write)
    r = await aci.run("memory_write ridge alpha=0.1 gives r2 0.88; try GBM next")
    assert (r.exit_code, r.output) == (0, "Saved note 1.")
    r = await aci.run('memory_write "quoted note"')
    r = await aci.call("memory_write", {"text": "structured"})
    assert notes == ["ridge alpha=0.1 gives r2 0.88; try GBM next", "quoted note", "structured"]
    assert "memory_write:\n  docstring: Saves a note" in aci.help_text()
    assert any(t["function"]["name"] == "memory_write" for t in aci.openai_tools())
    r = await aci.run("memory_write")
    assert r.exit_code == 1 and r.output.startswith("Usage: memory_write <text>")
    with pytest.raises(ValueError):
        aci.register(tool, memory_write)
    with pytest.raises(ValueError):
        aci.register(ToolDef(name="open", signature="open", docstring="x"), memory_write)


async def test_structured_calls(tmp_path):
    aci = make(tmp_path)
    (tmp_path / "ws" / "a.txt").write_text("a\nb\n")
    r = await aci.call("open", {"path": "a.txt", "line_number": "2"})
    assert r.exit_code == 0 and "2:b" in r.output
    r = await aci.call("open", {"path": "a.txt", "colour": "red"})
    assert r.exit_code == 1 and "colour" in r.output and r.data["error"] == "format"
    r = await aci.call("goto", {"line_number": "two"})
    assert r.exit_code == 1 and "line_number" in r.output
    r = await aci.call("edit", {"start_line": 1})
    assert r.exit_code == 1 and "end_line" in r.output
    r = await aci.call("teleport", {})
    assert r.data["error"] == "unknown_tool" and "search_dir" in r.output
    r = await aci.call("bash", {"command": "echo $((40 + 2))"})
    assert r.output == "42"
    r = await aci.call("bash", {"command": "goto 1"})  # text-form ACI commands work too
    assert r.output.startswith(f"[File: {WS}/a.txt")
    r = await aci.call("bash", {"command": "less a.txt"})
    assert r.data["error"] == "interactive"
    r = await aci.run("bash -c 'echo via-shell'")  # in text, `bash ...` is the real bash
    assert r.output == "via-shell"


async def test_empty_action(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("  \n \n")
    assert r.exit_code == 1 and r.data["error"] == "format" and "empty command" in r.output


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["vim", "python", "ls", "-i", "-la", "x=1", "a.py", "sudo", "-u",
                                 "bob", "timeout", "5", "git", "commit", "-m", "m", "top", "~/d",
                                 "a%b", "bash", "-c", "echo", "less", "node", "sqlite3", "db"]),
                max_size=6),
       st.sampled_from([" ", "  "]))
def test_plain_command_fast_path_matches_the_tokeniser(words, sep):
    # lines without quotes or operators skip shlex; they must split exactly as shlex does
    line = sep.join(words)
    assert shell_guard._PLAIN.fullmatch(line)
    fast = shell_guard.simple_commands(line)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shell_guard, "_PLAIN", re.compile(r"(?!)"))
        slow = shell_guard.simple_commands(line)
        slow_refusal = refusal(line, ["open"])
    assert fast == slow and refusal(line, ["open"]) == slow_refusal
