"""Output processing (progress-bar collapse, head/tail cut, full log) and workspace path
confinement: the backend-neutral pieces, without any shell."""

from __future__ import annotations

import os

import pytest

from mlgym.env_server.sandbox.base import (
    SandboxPathError,
    host_path,
    inside_relative,
    read_confined,
    write_confined,
)
from mlgym.env_server.sandbox.output import CarriageReturnCollapser, OutputCollector, collapse


def test_carriage_returns_keep_the_last_state_per_line():
    assert collapse("10%\r50%\r100%\ndone\n") == "100%\ndone\n"
    assert collapse("a\r\nb\r\n") == "a\nb\n"  # Windows line ends are not overwrites
    assert collapse("x\rno newline at end") == "no newline at end"


def test_collapse_streams_across_chunk_boundaries():
    c = CarriageReturnCollapser()
    pieces = ["epoch 1: 1", "0%\r", "epoch 1: 90%", "\r", "epoch 1: 100%\r", "\n", "next\r\n"]
    out = "".join(c.feed(p) for p in pieces) + c.flush()
    assert out == "epoch 1: 100%\nnext\n"


async def test_collector_keeps_head_and_tail_and_writes_the_whole_to_a_log(tmp_path):
    streamed: list[str] = []
    log = (tmp_path / "out.log", "/inside/out.log")
    col = OutputCollector(1000, log, on_output=streamed.append, stream_limit=500)
    lines = [f"line {i}\n" for i in range(10_000)]
    for i in range(0, len(lines), 37):
        await col.feed("".join(lines[i : i + 37]))
    output, cut, full = await col.finish()
    whole = "".join(lines)
    assert full == "/inside/out.log"
    assert (tmp_path / "out.log").read_text() == whole
    assert output.startswith("line 0\nline 1\n")
    assert output.endswith("line 9999\n")
    assert f"{cut} characters cut" in output and "/inside/out.log" in output
    assert cut == len(whole) - 1000
    assert len(output) < 1300
    assert sum(len(s) for s in streamed) < 700  # live output stops at stream_limit
    assert "live output stopped" in streamed[-1]


async def test_collector_without_log_says_the_full_output_was_not_kept():
    col = OutputCollector(300)
    await col.feed("x" * 10_000)
    output, cut, full = await col.finish()
    assert full is None and cut == 10_000 - 300
    assert "not kept" in output


async def test_small_output_is_untouched():
    col = OutputCollector(1000)
    await col.feed("hello\r")
    await col.feed("\nworld")
    assert await col.finish() == ("hello\nworld", 0, None)


def test_inside_paths_are_confined_lexically():
    assert str(inside_relative("/home/agent/workspace/a/../b.txt")) == "b.txt"
    assert str(inside_relative("data/x.csv")) == "data/x.csv"
    for bad in ["../x", "/etc/passwd", "/home/agent/workspace/../x", "a/../../x"]:
        with pytest.raises(SandboxPathError):
            inside_relative(bad)


def test_symlinks_out_of_the_workspace_are_refused(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret")
    os.symlink(outside, ws / "link")
    os.symlink(outside / "secret.txt", ws / "file_link")
    os.symlink("../outside", ws / "relative_link")
    for path in ["link/secret.txt", "file_link", "relative_link/secret.txt"]:
        with pytest.raises(SandboxPathError):
            read_confined(ws, path)
    with pytest.raises(SandboxPathError):
        write_confined(ws, "link/new.txt", b"x")
    with pytest.raises(SandboxPathError):
        write_confined(ws, "file_link", b"x")
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "s3cret"


def test_files_inside_the_workspace_round_trip(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    write_confined(ws, "/home/agent/workspace/sub/dir/a.bin", b"\x00\x01")
    assert read_confined(ws, "sub/dir/a.bin") == (b"\x00\x01", 2)
    os.symlink("sub/dir/a.bin", ws / "inner_link")  # a link that stays inside is fine
    assert read_confined(ws, "inner_link") == (b"\x00\x01", 2)
    assert host_path(ws, "inner_link") == (ws / "sub/dir/a.bin").resolve()
