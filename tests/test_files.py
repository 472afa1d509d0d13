"""mlgym/files.py: files read by other processes while a run is live are replaced atomically.

A separate reader process polls the file as fast as it can while this process rewrites it
with contents of very different sizes: every read must parse and be one complete version."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlgym.files import atomic_write, atomic_write_json

READER = textwrap.dedent("""
    import json, sys, time
    path, out = sys.argv[1], sys.argv[2]
    reads = bad = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            text = open(path).read()
        except FileNotFoundError:
            continue
        if text == "STOP\\n":
            break
        reads += 1
        try:
            data = json.loads(text)
            if len(data["pad"]) != data["n"]:
                bad += 1
        except ValueError:
            bad += 1
    open(out, "w").write(json.dumps({"reads": reads, "bad": bad}))
""")


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path: Path):
    target = tmp_path / "run.json"
    atomic_write_json(target, {"n": 0, "pad": ""})
    report = tmp_path / "report.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(target), str(report)])
    try:
        for i in range(400):
            n = 200_000 if i % 2 else 10  # big and small versions, so a torn read would show
            atomic_write_json(target, {"n": n, "pad": "x" * n, "i": i})
        atomic_write(target, "STOP\n")
        assert reader.wait(timeout=90) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
    seen = json.loads(report.read_text())
    print(f"reader: {seen['reads']} reads during 400 rewrites")
    assert seen["reads"] > 0 and seen["bad"] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_mode_is_kept_or_follows_the_umask(tmp_path: Path):
    fresh = atomic_write(tmp_path / "a.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # as open() would make it
    fresh.chmod(0o600)
    atomic_write(fresh, "{}\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_text() == "{}\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path):
    target = atomic_write_json(tmp_path / "result.json", {"ok": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"score": float("nan")}, allow_nan=False)  # fails in dumps
    with pytest.raises(TypeError):
        atomic_write(target, 12345)  # type: ignore[arg-type]  # fails while writing
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_the_live_run_files_go_through_the_helper():
    """run.json, pids.json, result.json, trajectories, kept artefacts, bus.json: every writer
    of a file that another process reads during a run calls mlgym.files, none writes in place."""
    root = Path(__file__).resolve().parent.parent
    writers = {
        "agents/supervisor.py": ["atomic_write_json(self.dir / RUN_FILE",
                                 "atomic_write_json(self.dir / PIDS_FILE"],
        "agents/results.py": ["atomic_write_json(run_dir / RESULT_FILE",
                              'atomic_write_json(d / f"{agent}.traj"'],
        "agents/rundir.py": ["atomic_write(d / self.name"],
        "bus/endpoints.py": ["atomic_write(Path(run_dir) / DESCRIPTOR"],
        "bus/recorder.py": ["atomic_write_json(self.run_dir / INFO_NAME"],
    }
    for rel, calls in writers.items():
        text = (root / rel).read_text()
        for call in calls:
            assert call in text, f"{rel} does not write with {call!r}"
        assert ".write_text(" not in text and ".write_bytes(" not in text, rel
