"""File viewer and editor of the ACI: formats, ranges, lint gate (real files, real shell)."""

from __future__ import annotations

import pytest
from mlgym.tools.aci import ACI
from mlgym.tools.aci.localshell import LocalShell

WS = "/home/agent/workspace"


def make(tmp_path, **kw) -> ACI:
    root = tmp_path / "ws"
    root.mkdir(exist_ok=True)
    return ACI(root, shell=LocalShell(root, WS), **kw)


def write(aci: ACI, name: str, text: str):
    p = aci.workspace.host_root + "/" + name
    with open(p, "w") as f:
        f.write(text)
    return p


def read(path) -> str:
    with open(path) as f:
        return f.read()


def numbered(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(1, n + 1))


async def test_open_shows_header_numbered_lines_and_counts(tmp_path):
    aci = make(tmp_path, window=10)
    write(aci, "f.txt", numbered(30))
    r = await aci.run("open f.txt")
    assert r.exit_code == 0
    lines = r.output.split("\n")
    assert lines[0] == f"[File: {WS}/f.txt (30 lines total)]"
    assert lines[1:11] == [f"{i}:line {i}" for i in range(1, 11)]
    assert lines[11] == "(20 more lines below)"
    assert "more lines above" not in r.output
    assert aci.state().open_file == f"{WS}/f.txt"
    assert aci.state().prompt_lines() == f"(Open file: {WS}/f.txt)\n(Current directory: {WS})"


async def test_default_window_is_1000_lines(tmp_path):
    aci = make(tmp_path)
    write(aci, "big.txt", numbered(1500))
    out = (await aci.run("open big.txt")).output.split("\n")
    assert out[1] == "1:line 1" and out[1000] == "1000:line 1000"
    assert out[1001] == "(500 more lines below)"


async def test_open_at_line_brings_it_into_view(tmp_path):
    aci = make(tmp_path, window=12)
    write(aci, "f.txt", numbered(100))
    out = (await aci.run("open f.txt 50")).output
    assert "50:line 50" in out
    assert "(48 more lines above)" in out  # the line sits W/6 = 2 lines below the top: 49
    assert "(40 more lines below)" in out


async def test_open_line_past_end_warns_and_clamps(tmp_path):
    aci = make(tmp_path, window=10)
    write(aci, "f.txt", numbered(30))
    r = await aci.run("open f.txt 99")
    assert r.exit_code == 0
    assert r.output.startswith(
        "Warning: <line_number> (99) is greater than the number of lines in the file (30)\n"
        "Warning: Setting <line_number> to 30\n"
    )
    assert r.output.rstrip().endswith("30:line 30")


async def test_open_errors(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("open nope.py")
    assert (r.exit_code, r.data["error"]) == (1, "not_found")
    assert r.output == "File nope.py not found"
    (tmp_path / "ws" / "d").mkdir()
    r = await aci.run("open d")
    assert "is a directory" in r.output and r.exit_code == 1
    (tmp_path / "ws" / "b.bin").write_bytes(b"\x00\x01\x02abc")
    r = await aci.run("open b.bin")
    assert r.data["error"] == "binary"
    (tmp_path / "ws" / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    r = await aci.run("open pic.png")
    assert r.output == ("Error: pic.png is an image file. Current environment does not support "
                        "image viewing.")
    r = await aci.run("open f.txt abc")
    assert r.output == 'Usage: open "<path>" [<line_number>]\nError: <line_number> must be a number'
    r = await aci.run("open f.txt -3")
    assert r.output.endswith("Error: <line_number> must be a number")
    r = await aci.run("open")
    assert "missing <path>" in r.output


async def test_goto_and_its_errors(tmp_path):
    aci = make(tmp_path, window=10)
    r = await aci.run("goto 3")
    assert r.output == "No file open. Use the open command first."
    write(aci, "f.txt", numbered(30))
    await aci.run("open f.txt")
    out = (await aci.run("goto 25")).output
    assert "25:line 25" in out and "(20 more lines above)" in out
    r = await aci.run("goto 31")
    assert r.exit_code == 1 and r.output == "Error: <line> must be less than or equal to 30"
    r = await aci.run("goto 0")  # as MLGym: the top of the file
    assert r.exit_code == 0 and "1:line 1" in r.output


async def test_scroll_moves_by_window_minus_overlap_and_stops_at_ends(tmp_path):
    aci = make(tmp_path, window=10)
    write(aci, "f.txt", numbered(25))
    r = await aci.run("scroll_down")
    assert r.output.startswith("No file open")
    first = (await aci.run("open f.txt")).output
    up = await aci.run("scroll_up")  # at the top: the same window again, as MLGym shows it
    assert up.exit_code == 0 and up.output == first
    out = (await aci.run("scroll_down")).output.split("\n")
    assert out[1] == "(8 more lines above)" and out[2] == "9:line 9"
    out = (await aci.run("scroll_down")).output  # would start at 17; kept inside the file
    assert "(15 more lines above)" in out and "25:line 25" in out and "more lines below" not in out
    assert out.endswith("\nWARNING: Scrolling many times in a row is very inefficient.\n"
                        "If you know what you are looking for, use `search_file <pattern>` "
                        "instead.")  # third scroll in a row
    r = await aci.run("scroll_down")
    assert r.output.split("\n")[:2] == [f"[File: {WS}/f.txt (25 lines total)]",
                                         "(15 more lines above)"]
    back = (await aci.run("scroll_up")).output
    assert "(7 more lines above)" in back and "8:line 8" in back


async def test_create_makes_empty_file_and_refuses_existing(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("create src/new.py")
    assert r.exit_code == 0
    assert r.output == f"[File: {WS}/src/new.py (1 lines total)]\n1:"  # one empty line
    assert (tmp_path / "ws" / "src" / "new.py").read_bytes() == b"\n"
    assert aci.state().open_file == f"{WS}/src/new.py"
    r = await aci.run("edit 1:1\nprint('hi')\nend_of_edit")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ws" / "src" / "new.py").read_text() == "print('hi')\n"
    r = await aci.run("create src/new.py")
    assert r.exit_code == 1 and r.data["error"] == "exists"
    assert r.output.startswith("Error: File 'src/new.py' already exists.\n[File: ")
    assert (tmp_path / "ws" / "src" / "new.py").read_text() == "print('hi')\n"


async def test_edit_needs_an_open_file(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("edit 1:1\nx\nend_of_edit")
    assert (r.exit_code, r.output) == (1, "No file open. Use the `open` command first.")


async def test_edit_replaces_deletes_and_inserts(tmp_path):
    aci = make(tmp_path, window=50)
    p = write(aci, "f.txt", numbered(5))
    await aci.run("open f.txt")
    r = await aci.run("edit 2:3\nnew A\nnew B\nnew C\nend_of_edit")
    assert r.exit_code == 0
    assert read(p) == "line 1\nnew A\nnew B\nnew C\nline 4\nline 5\n"
    assert "3:new B" in r.output and "(6 lines total)" in r.output and "File updated." in r.output
    await aci.run("edit 2:4\nend_of_edit")  # empty body deletes
    assert read(p) == "line 1\nline 4\nline 5\n"
    await aci.run("edit 2:1\ninserted\nend_of_edit")  # end = start - 1 inserts before start
    assert read(p) == "line 1\ninserted\nline 4\nline 5\n"
    await aci.run("edit 5:4\nappended\nend_of_edit")  # start = N + 1 appends
    assert read(p) == "line 1\ninserted\nline 4\nline 5\nappended\n"
    # past the end, as MLGym: the range is cut at the last line; a start past it appends
    r = await aci.run("edit 5:9\nlast\nend_of_edit")
    assert r.exit_code == 0 and read(p) == "line 1\ninserted\nline 4\nline 5\nlast\n"
    await aci.run("edit 9:12\nmore\nend_of_edit")
    assert read(p) == "line 1\ninserted\nline 4\nline 5\nlast\nmore\n"
    await aci.run("edit 1:6\nend_of_edit")  # every line deleted: one empty line is left
    assert read(p) == "\n"


@pytest.mark.parametrize(
    "cmd, message",
    [
        ("edit 0:1", "start_line must be at least 1"),
        ("edit 4:2", "end_line (2) is before start_line (4)"),
        ("edit 1", "Usage: edit <start_line>:<end_line>"),  # alone, as MLGym
        ("edit a:b", "<start_line> must be a number"),
    ],
)
async def test_edit_range_errors_leave_file_unchanged(tmp_path, cmd, message):
    aci = make(tmp_path)
    p = write(aci, "f.txt", numbered(5))
    await aci.run("open f.txt")
    r = await aci.run(f"{cmd}\nX\nend_of_edit")
    assert r.exit_code == 1 and message in r.output, r.output
    assert read(p) == numbered(5)


async def test_insert_after_line_top_and_end(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "f.txt", "a\nb\n")
    await aci.run("open f.txt")
    assert (await aci.run("insert 1\nx\nend_of_insert")).exit_code == 0
    assert read(p) == "a\nx\nb\n"
    await aci.run("insert 0\ntop\nend_of_insert")
    await aci.run("insert 4\nend\nend_of_insert")
    assert read(p) == "top\na\nx\nb\nend\n"
    r = await aci.run("insert -1\nz\nend_of_insert")
    assert r.exit_code == 1
    assert read(p) == "top\na\nx\nb\nend\n"
    r = await aci.run("insert 9\nz\nend_of_insert")  # past the end appends, as MLGym
    assert r.exit_code == 0 and read(p) == "top\na\nx\nb\nend\nz\n"


GOOD = "import os\n\n\ndef f(x):\n    return x + 1\n\n\nprint(f(2), os.sep)\n"


async def test_lint_rejects_new_undefined_name_showing_errors_would_be_and_original(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "m.py", GOOD)
    await aci.run("open m.py")
    r = await aci.run("edit 5:5\n    return y + 1\nend_of_edit")
    assert r.exit_code == 1 and r.data["error"] == "lint"
    out = r.output
    assert "ERRORS:\n- F821 undefined name 'y'\nThis is how" in out
    would, original = out.split("This is how your edit would have looked if applied")[1].split(
        "This is the original code before your edit"
    )
    assert "5:    return y + 1" in would and "5:    return x + 1" in original
    assert "Your changes have NOT been applied" in out
    assert read(p) == GOOD


async def test_lint_rejects_bad_indentation_and_syntax(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "m.py", GOOD)
    await aci.run("open m.py")
    r = await aci.run("edit 5:5\n  return x + 1\n      print(x)\nend_of_edit")
    assert r.exit_code == 1 and "E999 IndentationError: unexpected indent" in r.output
    r = await aci.run("insert 5\n    if x:\nend_of_insert")
    assert r.exit_code == 1 and "E999 IndentationError" in r.output
    r = await aci.run("edit 8:8\nprint(f(2)\nend_of_edit")
    assert r.exit_code == 1 and "E999 SyntaxError" in r.output
    assert read(p) == GOOD


async def test_lint_counts_only_new_errors_in_a_file_with_old_ones(tmp_path):
    aci = make(tmp_path)
    src = "import os\n\n\ndef f(x):\n    return undefined_a + x\n\n\nprint(f(2), os.sep)\n"
    p = write(aci, "m.py", src)
    await aci.run("open m.py")
    r = await aci.run("insert 1\nimport sys\nimport json\nend_of_insert")  # shifts the old error
    assert r.exit_code == 0, r.output
    r = await aci.run("edit 1:1\nimport os  # first\nend_of_edit")  # an old error elsewhere
    assert r.exit_code == 0, r.output
    # MLGym's rule: an old error inside the lines you replace counts as yours
    r = await aci.run("edit 7:7\n    return undefined_a + x  # kept\nend_of_edit")
    assert r.exit_code == 1 and "- F821 undefined name 'undefined_a'" in r.output
    r = await aci.run("insert 10\nprint(undefined_b)\nend_of_insert")
    assert r.exit_code == 1
    errors = r.output.split("ERRORS:\n")[1].split("\nThis is how")[0]
    assert errors == "- F821 undefined name 'undefined_b'"
    assert "undefined_a" in read(p) and "undefined_b" not in read(p)


async def test_lint_selects_mlgyms_codes(tmp_path):
    """E111 (indentation not a multiple of four) refuses an edit; F841 (unused variable),
    E501 (long line) and F706 (return outside a function) do not: flake8 with MLGym's
    selection F821,F822,F831,E111,E112,E113,E999,E902."""
    aci = make(tmp_path)
    p = write(aci, "m.py", GOOD)
    await aci.run("open m.py")
    r = await aci.run("edit 5:5\n  return x + 1\nend_of_edit")
    assert r.exit_code == 1 and "- E111 indentation is not a multiple of 4" in r.output
    r = await aci.run("edit 5:5\n    unused = 1\n    return x + 1  " + "#" * 120 + "\nend_of_edit")
    assert r.exit_code == 0, r.output
    r = await aci.run("insert 9\nreturn 3\nend_of_insert")
    assert r.exit_code == 0, r.output
    r = await aci.run("insert 10\ndef g(a, a):\n    return a\nend_of_insert")
    assert r.exit_code == 1 and "- F831 duplicate argument 'a' in function definition" in r.output
    r = await aci.run("insert 10\n__all__ = ['nothing_here']\nend_of_insert")
    assert r.exit_code == 1 and "- F822 undefined name 'nothing_here' in __all__" in r.output
    r = await aci.run("insert 10\nprint(nothing_here)  # noqa\nend_of_insert")
    assert r.exit_code == 0, r.output
    assert "return 3" in read(p)


async def test_lint_with_an_old_syntax_error(tmp_path):
    aci = make(tmp_path)
    src = "def f(:\n    pass\n\n\nprint(hidden_undefined)\n"
    p = write(aci, "m.py", src)
    await aci.run("open m.py")
    assert (await aci.run("insert 5\nx = 1\nend_of_insert")).exit_code == 0  # old error stays
    r = await aci.run("edit 1:1\ndef f():\nend_of_edit")  # fixing it reveals an old problem
    assert r.exit_code == 0, r.output
    assert read(p).startswith("def f():\n")


async def test_non_python_files_are_not_linted(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "notes.md", "# notes\n")
    await aci.run("open notes.md")
    r = await aci.run("edit 1:1\n    def broken(:\n  undefined_name\nend_of_edit")
    assert r.exit_code == 0
    assert read(p) == "    def broken(:\n  undefined_name\n"


async def test_a_file_name_after_the_range(tmp_path):
    """MLGym's edit ignores words after the range and edits the open file; models write the
    open file's name there, which is dropped. Another file's name is refused (MLGym would have
    changed the open file instead)."""
    aci = make(tmp_path)
    p = write(aci, "f.txt", "a\nb\n")
    q = write(aci, "g.txt", "c\n")
    await aci.run("open f.txt")
    r = await aci.run("edit 1:1 f.txt\nA\nend_of_edit")
    assert r.exit_code == 0 and read(p) == "A\nb\n"
    r = await aci.run(f"insert 2 {WS}/f.txt\nC\nend_of_insert")
    assert r.exit_code == 0 and read(p) == "A\nb\nC\n"
    r = await aci.run("edit 1:1 g.txt\nX\nend_of_edit")
    assert r.exit_code == 1 and "works on the open file; to change another file, `open` it" in r.output
    assert read(p) == "A\nb\nC\n" and read(q) == "c\n"


async def test_structured_edit_matches_text_form(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "f.txt", numbered(3))
    await aci.call("open", {"path": "f.txt"})
    r = await aci.call("edit", {"start_line": 2, "end_line": "2", "replacement_text": "B\nC\n"})
    assert r.exit_code == 0, r.output
    assert read(p) == "line 1\nB\nC\nline 3\n"
    r = await aci.call("insert", {"line_number": 0, "text_to_add": "top"})
    assert read(p) == "top\nline 1\nB\nC\nline 3\n"


async def test_body_text_keeps_end_of_edit_inside_a_line(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "m.py", "x = 1\n")
    await aci.run("open m.py")
    r = await aci.run('edit 1:1\nmarker = "end_of_edit"\n  \nend_of_edit  \n\n')
    assert r.exit_code == 0, r.output
    assert read(p) == 'marker = "end_of_edit"\n  \n'


async def test_missing_terminator_is_an_error_and_changes_nothing(tmp_path):
    aci = make(tmp_path)
    p = write(aci, "f.txt", "a\n")
    await aci.run("open f.txt")
    r = await aci.run("edit 1:1\nb\n")
    assert r.exit_code == 1 and r.data["error"] == "format"
    assert r.output == ("Malformed edit command. Please ensure you use the `end_of_edit` keyword "
                        "to mark the end of your edit.")
    r = await aci.run("edit 1:1\nb\n  end_of_edit")  # a terminator starts its line
    assert r.exit_code == 1 and r.output.startswith("Malformed edit command.")
    r = await aci.run("insert 1\nb\n")
    assert r.output == ("Malformed insert command. Please ensure you use the `end_of_insert` "
                        "keyword to mark the end of your insert.")
    assert read(p) == "a\n"


async def test_bytes_line_endings_and_long_lines(tmp_path):
    aci = make(tmp_path, max_line_chars=50)
    root = tmp_path / "ws"
    (root / "latin.txt").write_bytes(b"caf\xe9\nsecond\n")
    await aci.run("open latin.txt")
    out = (await aci.run("edit 2:2\nSECOND\nend_of_edit")).output
    assert "1:caf\ufffd" in out
    assert (root / "latin.txt").read_bytes() == b"caf\xe9\nSECOND\n"  # undecodable byte kept
    (root / "win.txt").write_bytes(b"a\r\nb\r\n")
    await aci.run("open win.txt")
    await aci.run("insert 1\nmid\nend_of_insert")
    assert (root / "win.txt").read_bytes() == b"a\r\nmid\r\nb\r\n"
    (root / "wide.csv").write_text("x" * 500 + "\n")
    out = (await aci.run("open wide.csv")).output
    assert "1:" + "x" * 50 + " ... [450 more characters not shown]" in out


async def test_too_large_to_edit_but_viewable(tmp_path):
    aci = make(tmp_path, max_edit_bytes=1000, window=5)
    write(aci, "data.csv", numbered(500))
    r = await aci.run("open data.csv 300")
    assert r.exit_code == 0 and "300:line 300" in r.output
    r = await aci.run("edit 1:1\nx\nend_of_edit")
    assert r.data["error"] == "too_large" and "use shell tools" in r.output


async def test_open_file_deleted_by_shell(tmp_path):
    aci = make(tmp_path)
    write(aci, "f.txt", "a\n")
    await aci.run("open f.txt")
    assert (await aci.run("rm f.txt")).exit_code == 0
    r = await aci.run("goto 1")
    assert r.exit_code == 1 and "not found" in r.output


async def test_python_file_with_bytes_that_are_not_utf8_can_be_edited(tmp_path):
    aci = make(tmp_path)
    p = tmp_path / "ws" / "old.py"
    p.write_bytes(b"# caf\xe9\nx = 1\n\n\nprint(x)\n")
    await aci.run("open old.py")
    r = await aci.run("insert 0\ny = 2\nend_of_insert")  # moves the odd byte
    assert r.exit_code == 0, r.output
    assert p.read_bytes() == b"y = 2\n# caf\xe9\nx = 1\n\n\nprint(x)\n"
    r = await aci.run("insert 0\nprint(undefined_z)\nend_of_insert")
    assert r.exit_code == 1 and "F821 undefined name 'undefined_z'" in r.output
