"""Shared by the viewer's tests: real run folders (scripted offline runs, made once per test
process), `mlgym view` as a subprocess, and the headless Chromium the browser tests drive."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlgym.viewer.synth import CHROMIUM, copy_run

RUNS = (("battleOfSexes", "default"), ("prisonersDilemma", "single"))
_made: dict[str, Path] = {}


def finished_runs() -> Path:
    """A folder with two real finished runs (`mlgym run`, scripted, offline): battleOfSexes by
    the default team and prisonersDilemma by the single agent. Made once, in parallel."""
    if "runs" not in _made:
        root = Path(tempfile.mkdtemp(prefix="mlgym-viewer-runs-"))
        atexit.register(shutil.rmtree, root, True)
        env = {**os.environ, "MLGYM_OFFLINE": "1"}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlgym.cli",
                    "run",
                    "--task",
                    task,
                    "--team",
                    team,
                    "--run-dir",
                    str(root / f"{task}-{team}"),
                    "--no-progress",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(root / f"{task}.log", "wb"),
            )
            for task, team in RUNS
        ]
        for p in procs:
            assert p.wait(timeout=400) == 0, (root / f"{RUNS[procs.index(p)][0]}.log").read_text()[
                -3000:
            ]
        _made["runs"] = root
    return _made["runs"]


def copy_runs(dest: Path) -> Path:
    """The finished runs copied under `dest` (a test that adds files to them)."""
    return copy_run(finished_runs(), dest, skip=tuple(f"{task}.log" for task, _ in RUNS))


class ViewServer:
    """`mlgym view ROOT [args]` in a subprocess; `url` is the URL it printed."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None):
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlgym.cli", "view", str(root), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise AssertionError(f"mlgym view printed no URL: {self.proc.stderr.read()[-2000:]}")
        self.base = self.url.split("?")[0].split("#")[0].rstrip("/")
        self.port = int(self.base.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chromium_ok() -> tuple[bool, str]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):  # CI's bare phase hides it
        return False, f"{CHROMIUM} is missing (Debian package chromium)"
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return (
            False,
            "the playwright package is missing "
            "(pip install playwright; never `playwright install`)",
        )
    return True, ""


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
