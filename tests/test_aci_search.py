"""search_dir, search_file and find_file: formats, skips, limits."""

from __future__ import annotations

from mlgym.tools.aci import ACI, search
from mlgym.tools.aci.localshell import LocalShell

WS = "/home/agent/workspace"


def make(tmp_path, **kw) -> ACI:
    root = tmp_path / "ws"
    root.mkdir(exist_ok=True)
    return ACI(root, shell=LocalShell(root, WS), **kw)


def tree(root, files: dict[str, str | bytes]):
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


async def test_search_dir_counts_matching_lines_per_file(tmp_path):
    aci = make(tmp_path)
    tree(
        tmp_path / "ws",
        {
            "a.py": "foo = 1\nprint(foo)\nbar\n",
            "src/b.py": "x = 'foo'\n",
            "src/c.txt": "nothing\n",
            ".git/config": "foo\n",
            ".hidden.py": "foo\n",
            "blob.bin": b"foo\x00foo\n",
        },
    )
    r = await aci.run("search_dir foo")
    assert r.exit_code == 0
    assert r.output == "\n".join(
        [
            f'Found 3 matches for "foo" in {WS}:',
            f"{WS}/a.py (2 matches)",
            f"{WS}/src/b.py (1 matches)",
            f'End of matches for "foo" in {WS}',
        ]
    )
    r = await aci.run("search_dir foo src")
    assert r.output.splitlines()[0] == f'Found 1 matches for "foo" in {WS}/src:'
    r = await aci.run('search_dir "print(foo)"')  # plain text, not a regex
    assert f"{WS}/a.py (1 matches)" in r.output
    r = await aci.run("search_dir zzz")
    assert r.output == f'No matches found for "zzz" in {WS}'
    r = await aci.run("search_dir foo nodir")
    assert (r.exit_code, r.output) == (1, "Directory nodir not found")


async def test_search_dir_follows_the_shell_directory(tmp_path):
    aci = make(tmp_path)
    tree(tmp_path / "ws", {"a.py": "foo\n", "src/b.py": "foo\n"})
    await aci.run("cd src")
    r = await aci.run("search_dir foo")
    assert r.output.splitlines()[1] == f"{WS}/src/b.py (1 matches)"
    r = await aci.run("search_dir foo ..")
    assert "Found 2 matches" in r.output


async def test_search_dir_refuses_more_than_100_files(tmp_path):
    aci = make(tmp_path)
    tree(tmp_path / "ws", {f"d/f{i:03}.txt": "needle\n" for i in range(101)})
    r = await aci.run("search_dir needle")
    assert (
        r.output == f'More than 101 files matched for "needle" in {WS}. Please narrow your search.'
    )  # MLGym's message names the count of matching files
    (tmp_path / "ws" / "d" / "f000.txt").write_text("no\n")
    r = await aci.run("search_dir needle")
    assert r.output.startswith(f'Found 100 matches for "needle" in {WS}:')


def test_search_dir_skips_files_over_the_size_cap(tmp_path):
    aci = make(tmp_path)
    tree(
        tmp_path / "ws",
        {"small.txt": "needle\n", "big.csv": "needle\n" * 100, "big.npy": b"\x00needle" * 100},
    )
    out = search.search_dir(aci.workspace, "needle", None, WS, max_file_bytes=100)
    assert f"{WS}/small.txt (1 matches)" in out and "big.csv (" not in out
    assert f"(1 files over 0 MiB were not searched: {WS}/big.csv; use grep for them.)" in out


async def test_search_file_in_open_file_and_named_file(tmp_path):
    aci = make(tmp_path)
    tree(tmp_path / "ws", {"m.py": "def a():\n    pass\n\ndef b(): pass\n", "o.txt": "pass: yes\n"})
    r = await aci.run("search_file pass")
    assert (r.exit_code, r.output) == (1, "No file open. Use the open command first.")
    await aci.run("open m.py")
    r = await aci.run("search_file pass")
    assert r.output == "\n".join(
        [
            f'Found 2 matches for "pass" in {WS}/m.py:',
            "Line 2:    pass",
            "Line 4:def b(): pass",
            f'End of matches for "pass" in {WS}/m.py',
        ]
    )
    r = await aci.run("search_file pass o.txt")
    assert "Line 1:pass: yes" in r.output  # the whole line, colons included
    r = await aci.run("search_file nothing_here")
    assert r.output == f'No matches found for "nothing_here" in {WS}/m.py'
    r = await aci.run("search_file pass missing.txt")
    assert r.exit_code == 1
    assert "Error: File name missing.txt not found. Please provide a valid file name." in r.output


async def test_search_file_lists_up_to_1000_lines(tmp_path):
    aci = make(tmp_path)
    tree(tmp_path / "ws", {"log.txt": "hit\n" * 1000, "big.txt": "hit\n" * 1001})
    r = await aci.run("search_file hit log.txt")  # MLGym lists every match
    assert r.output.startswith(f'Found 1000 matches for "hit" in {WS}/log.txt:\nLine 1:hit\n')
    r = await aci.run("search_file hit big.txt")
    assert (
        r.output
        == f'More than 1001 lines matched for "hit" in {WS}/big.txt. Please narrow your search.'
    )


async def test_find_file_with_wildcards(tmp_path):
    aci = make(tmp_path)
    tree(tmp_path / "ws", {"a.py": "", "src/b.py": "", "src/c.txt": "", ".git/x.py": ""})
    r = await aci.run("find_file '*.py'")
    assert r.output == "\n".join(
        [f'Found 2 matches for "*.py" in {WS}:', f"{WS}/a.py", f"{WS}/src/b.py"]
    )
    r = await aci.run("find_file c.txt src")
    assert r.output == f'Found 1 matches for "c.txt" in {WS}/src:\n{WS}/src/c.txt'
    r = await aci.run("find_file nope.py")
    assert r.output == f'No matches found for "nope.py" in {WS}'
    r = await aci.run("find_file src/b.py")
    assert r.exit_code == 1 and "is a path" in r.output
    tree(tmp_path / "ws", {f"many/{i}.py": "" for i in range(1001)})
    r = await aci.run("find_file '*.py' many")
    assert r.output.startswith("More than 1001 files matched")


async def test_search_usage_errors(tmp_path):
    aci = make(tmp_path)
    r = await aci.run("search_dir")
    assert r.output.startswith('Usage: search_dir <search_term> [<dir>]') and r.exit_code == 1
    r = await aci.run("search_dir def train .")  # MLGym answers with its usage line
    assert (r.output, r.exit_code) == ("Usage: search_dir <search_term> [<dir>]", 1)
    r = await aci.run("search_file def train x.py")
    assert "too many arguments" in r.output and "Quote an argument" in r.output
