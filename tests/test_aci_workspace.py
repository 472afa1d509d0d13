"""Path confinement: `..`, absolute paths and symlinks never lead the file tools out."""

from __future__ import annotations

import os

import pytest
from mlgym.tools.aci import ACI, AciError, Workspace
from mlgym.tools.aci.localshell import LocalShell

WS = "/home/agent/workspace"


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    (root / "ok.txt").write_text("fine\n")
    return root, outside, ACI(root, shell=LocalShell(root, WS))


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        f"{WS}/../outside/secret.txt",
        "/etc/passwd",
        "/home/agent/other",
    ],
)
async def test_paths_outside_are_refused(setup, path):
    _, _, aci = setup
    for cmd in (f"open {path}", f"create {path}", f"search_file SECRET {path}"):
        r = await aci.run(cmd)
        assert (r.exit_code, r.data["error"]) == (1, "path"), (cmd, r.output)
        assert "outside the workspace" in r.output
        assert "TOP SECRET" not in r.output
    r = await aci.run(f"search_dir SECRET {path}")
    assert r.data["error"] == "path"


async def test_absolute_inside_paths_and_tilde_work(setup):
    _, _, aci = setup
    assert (await aci.run(f"open {WS}/ok.txt")).output.startswith(f"[File: {WS}/ok.txt")
    assert (await aci.run("open ~/workspace/ok.txt")).exit_code == 0
    assert (await aci.run(f"open {WS}/sub/../ok.txt")).exit_code == 0


async def test_symlinks_pointing_out_are_refused(setup):
    root, outside, aci = setup
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside, root / "linkdir")
    for cmd in (
        "open link.txt",
        "open linkdir/secret.txt",
        "create linkdir/new.py",
        "search_file SECRET link.txt",
        "search_dir SECRET linkdir",
        "find_file '*' linkdir",
    ):
        r = await aci.run(cmd)
        assert r.data.get("error") == "path", (cmd, r.output)
        assert "symbolic link" in r.output and "TOP SECRET" not in r.output
    assert not (outside / "new.py").exists()
    r = await aci.run("search_dir SECRET")  # the walk does not follow links out
    assert r.output == f'No matches found for "SECRET" in {WS}'


async def test_symlinks_inside_are_followed_and_shown_by_real_path(setup):
    root, _, aci = setup
    os.symlink(root / "ok.txt", root / "alias.txt")
    r = await aci.run("open alias.txt")
    assert r.output.startswith(f"[File: {WS}/ok.txt (1 lines total)]")
    await aci.run("edit 1:1\nchanged\nend_of_edit")
    assert (root / "ok.txt").read_text() == "changed\n" and os.path.islink(root / "alias.txt")


async def test_shell_directory_outside_the_workspace(setup):
    _, outside, aci = setup
    r = await aci.run(f"cd {outside}")
    assert r.exit_code == 0
    assert aci.state().cwd == str(outside.resolve())  # the local shell reports a host path there
    r = await aci.run("open secret.txt")
    assert r.data["error"] == "path"
    assert (await aci.run(f"open {WS}/ok.txt")).exit_code == 0


def test_link_swapped_in_after_the_check_is_not_followed(tmp_path):
    root, outside = tmp_path / "ws", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "f.txt").write_text("inside\n")
    (outside / "f.txt").write_text("outside\n")
    ws = Workspace(root, WS)
    r = ws.resolve("d/f.txt", WS)
    # the final component becomes a link to the outside
    (root / "d" / "f.txt").unlink()
    os.symlink(outside / "f.txt", root / "d" / "f.txt")
    with pytest.raises(AciError, match="symbolic link"):
        ws.read_bytes(r, 1000)
    # a parent folder becomes a link to the outside
    r2 = ws.resolve("e/f.txt", WS)
    os.symlink(outside, root / "e")
    with pytest.raises(AciError, match="passes through `e`, a symbolic link"):
        ws.read_bytes(r2, 1000)
    with pytest.raises(AciError, match="passes through `e`, a symbolic link"):
        ws.write_bytes(r2, b"pwned\n")
    assert (outside / "f.txt").read_text() == "outside\n"


def test_workspace_arguments(tmp_path):
    with pytest.raises(ValueError):
        Workspace(tmp_path / "missing")
    with pytest.raises(ValueError):
        Workspace(tmp_path, "relative/root")
    ws = Workspace(tmp_path, "/w/")
    assert ws.resolve("a/b", "/w").inside == "/w/a/b"
    with pytest.raises(AciError):
        ws.resolve("x\x00y", "/w")
    with pytest.raises(AciError):
        ws.resolve("", "/w")
