#!/usr/bin/env python3
"""Install everything into ./.venv with nothing but python3: the framework, its test tools and
the separate task environment that sandboxed programs run with.

Works on a bare Debian python3 too (no pip, no ensurepip): then pip itself is fetched from PyPI
as a wheel and bootstrapped from it. The local sandbox isolates agents with bubblewrap: where it
is missing, the install says so, and as root with apt-get installs it (first saying so; not with
--no-system). Usage: python3 install.py [--no-taskenv] [--no-system]
"""

from __future__ import annotations

import json
import os
import shutil
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


def bubblewrap() -> None:
    """bubblewrap isolates the local sandbox. Missing: install it where we can (root with
    apt-get), else say how; either way say what the sandbox does without it."""
    if shutil.which("bwrap") is None and os.geteuid() == 0 and shutil.which("apt-get") \
            and "--no-system" not in sys.argv:
        step("bubblewrap, which isolates the sandbox agents work in, is not installed: "
             "installing it (apt-get install bubblewrap; --no-system skips this)")
        quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ,
                                                       "DEBIAN_FRONTEND": "noninteractive"}}
        install = ["apt-get", "install", "-y", "-qq", "bubblewrap"]
        if subprocess.run(install, **quiet).returncode != 0:  # no package lists yet?
            subprocess.run(["apt-get", "update", "-qq"], **quiet)
            subprocess.run(install, **quiet)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        how = ("" if os.geteuid() == 0 else "sudo ") + "apt-get install bubblewrap"
        step("bubblewrap is not installed: the sandbox uses mlgym's stand-in for it (Linux "
             "namespaces: same layout, less reviewed) where this machine allows namespaces, and "
             "runs commands WITHOUT isolation where it does not; every run says which. For "
             f"bubblewrap's isolation: {how}")
        return
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        step(f"bubblewrap is installed but cannot make a sandbox here (a container without "
             f"privileges?): {probe.stderr.strip()[-200:]}; the sandbox falls back as without it")
    else:
        step(f"sandbox isolation: bubblewrap ({bwrap})")


def main() -> int:
    if sys.version_info < (3, 11):
        sys.exit(f"Python >= 3.11 is needed, this is {sys.version.split()[0]}")
    bubblewrap()
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
