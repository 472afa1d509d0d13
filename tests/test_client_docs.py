"""docs/client.md cannot drift from the code: its API reference is generated from the Python
client's signatures, its table of team seats is the shipped teams', and its example runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from mlgym.agents import config as C
from mlgym.bus import apidoc

DOC = apidoc.DOC


def test_api_reference_is_the_codes():
    text = DOC.read_text()
    assert apidoc.render(text) == text, "docs/client.md is stale: python -m mlgym.bus.apidoc --write"
    for name in ("connect", "publish", "subscribe", "request", "history", "SyncBusClient"):
        assert f"{name}(" in text or f"class {name}" in text


def test_team_seats_are_the_shipped_teams():
    rows = re.findall(r"^\| `([\w-]+)` \| (.+) \|$", DOC.read_text(), re.M)
    documented = {team: dict(re.findall(r"`([\w-]+)`: (\w+)", seats)) for team, seats in rows}
    shipped = {p.stem: C.load_team(p.stem).members() for p in sorted(C.TEAMS_DIR.glob("*.toml"))}
    assert documented == shipped


def test_the_python_example_runs(tmp_path):
    code = re.search(r"```python\n(.+?)```", DOC.read_text(), re.S).group(1)
    run_dir = tmp_path / "run"
    broker = subprocess.Popen([sys.executable, "-m", "mlgym.cli", "bus", "serve", "--run-dir",
                               str(run_dir)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "bus.json").exists():
            assert broker.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = json.loads((run_dir / "bus.json").read_text())["url"]
        script = code.replace('asyncio.run(main("runs/demo"))', f"asyncio.run(main({url!r}))")
        assert script != code
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60)
    finally:
        broker.terminate()
        broker.wait(timeout=30)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("1 me Note(text='hello'") and "BusStatus(" in lines[-1]
