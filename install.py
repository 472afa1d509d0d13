#!/usr/bin/env python3
"""Install everything into ./.venv with nothing but python3: the framework, its test tools and
the separate task environment that sandboxed programs run with.

Works on a bare Debian python3 too (no pip, no ensurepip): then pip itself is fetched from PyPI
as a wheel and bootstrapped from it. Usage: python3 install.py [--no-taskenv]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def bootstrap_pip() -> None:
    """Fetch pip's wheel from PyPI and let it install itself (for pythons without ensurepip)."""
    meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60))
    wheel = next(u for u in meta["urls"] if u["filename"].endswith(".whl"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        path.write_bytes(urllib.request.urlopen(wheel["url"], timeout=120).read())
        run(PY, path / "pip", "install", "--quiet", path)


def main() -> int:
    if sys.version_info < (3, 11):
        sys.exit(f"Python >= 3.11 is needed, this is {sys.version.split()[0]}")
    if not PY.exists():
        step(f"creating {VENV}")
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (subprocess.CalledProcessError, OSError):
            step("no ensurepip here: bootstrapping pip from PyPI")
            venv.EnvBuilder(with_pip=False, clear=True).create(VENV)
            bootstrap_pip()
    step("installing mlgym and its test tools")
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev,hub]")
    # the tests also build tiny models and run evaluators in-process, so the test python gets
    # the task requirements too (pip's cache makes the second install below cheap)
    run(PY, "-m", "pip", "install", "--quiet", "-r", ROOT / "tasks" / "requirements.txt")
    if "--no-taskenv" not in sys.argv:
        step("building the task environment (the Python that sandboxed programs run with)")
        run(VENV / "bin" / "mlgym", "env", "setup")
    loop = subprocess.run([str(PY), "-c", "from mlgym.bus import hotpath; print(hotpath.name())"],
                          capture_output=True, text=True).stdout.strip()
    if loop == "c":
        step("bus broker: C loop built")
    else:
        step("bus broker: C loop not built (no C compiler or Python headers: apt-get install gcc "
             "python3-dev, then rerun); the broker uses its Python loop, same behaviour, less throughput")
    step("done: try  .venv/bin/mlgym demo")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
