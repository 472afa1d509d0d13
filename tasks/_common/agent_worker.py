"""The sandboxed worker that runs agent code (started by `sandboxed.AgentWorker`).

Order matters: (1) move the reply channel off stdout so the agent's prints cannot forge
replies, (2) import the task's trusted host module and the libraries agent code commonly
needs, (3) confine the process with Landlock (read: the Python installation and system
libraries; write: the scratch folder only; no TCP, no signals out), refusing to go on if any
allowed path would contain a forbidden (secret) path, (4) only then import the agent's file
and serve requests: one JSON object per line in, one per line out.

Host modules define `setup(agent_module, config: dict) -> None` (and optionally
`preload(config)`, run before confinement to read trusted task files) and
`handle(op: str, args: dict) -> JSON-able`; they raise `evalkit.EvalError` for faults that
have a specific code (illegal move, ...). Any other exception from agent code becomes
`strategy_exception` with the traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import sysconfig
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_paths() -> list[str]:
    """What the confined worker may read: the interpreter, its libraries, shared libraries."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    # site folders chained in by .pth files (a virtual environment layered on another)
    paths.update(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    paths.update(["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                  "/dev/null", "/dev/urandom", "/dev/zero"])
    return sorted(os.path.realpath(p) for p in paths if os.path.exists(p))


def _overlap(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def confine(scratch: str, forbidden: list[str]) -> str:
    import landlock

    reads = read_paths()
    writes = [os.path.realpath(scratch), "/dev/null"]
    for f in forbidden:
        f = os.path.realpath(f)
        for p in reads + writes[:1]:
            if _overlap(p, f):
                raise RuntimeError(f"isolation_unavailable: allowed path {p} overlaps the secret path {f}")
    abi = landlock.restrict(reads, writes)
    return f"landlock-abi{abi}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--module-name", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--config", default="{}")
    ap.add_argument("--forbid", action="append", default=[])
    ap.add_argument("--isolation", choices=["landlock", "none"], default="landlock")
    a = ap.parse_args()

    reply_fd = os.dup(1)
    os.dup2(2, 1)  # agent prints go to stderr, never into the reply channel
    out = os.fdopen(reply_fd, "w", buffering=1)

    def send(obj) -> None:
        out.write(json.dumps(obj, allow_nan=False) + "\n")
        out.flush()

    sys.path.insert(0, str(HERE))
    import calltimer
    import evalkit

    try:
        import random  # noqa: F401  (pre-imported: agent code may use them after confinement)

        import numpy  # noqa: F401

        config = json.loads(a.config)
        host = _load(Path(a.host), "_task_host")
        if hasattr(host, "preload"):  # trusted task code that must be read before confinement
            host.preload(config)
        isolation = "none"
        if a.isolation == "landlock":
            isolation = confine(a.scratch, a.forbid)
    except Exception as exc:
        msg = str(exc)
        code = "isolation_unavailable" if "isolation" in msg or "Landlock" in msg else "evaluator_crash"
        send({"error": {"code": code, "message": msg}})
        return
    os.chdir(a.scratch)
    sys.path.insert(0, a.scratch)
    calltimer.install()
    try:
        calltimer.timed_call(
            lambda: host.setup(_load(Path(a.agent), a.module_name), config), (), float(config.get("import_timeout_s", 30))
        )
    except calltimer.CallTimeout:
        send({"error": {"code": "strategy_timeout", "message": f"importing {Path(a.agent).name} took too long"}})
        return
    except evalkit.EvalError as exc:
        send({"error": {"code": exc.code, "message": exc.message}})
        return
    except BaseException as exc:  # noqa: BLE001 - agent code may raise anything, even SystemExit
        tb = "".join(traceback.format_exception(exc, limit=-8))
        send({"error": {"code": "strategy_import_error", "message": f"importing {Path(a.agent).name} failed:\n{tb}"}})
        return
    send({"ready": True, "isolation": isolation})
    for line in sys.stdin:
        try:
            req = json.loads(line)
            send({"ok": host.handle(req["op"], req.get("args", {}))})
        except evalkit.EvalError as exc:
            send({"error": {"code": exc.code, "message": exc.message}})
        except calltimer.CallTimeout:
            send({"error": {"code": "strategy_timeout", "message": "a call exceeded the per-call time limit"}})
        except BaseException as exc:  # noqa: BLE001
            tb = "".join(traceback.format_exception(exc, limit=-8))
            send({"error": {"code": "strategy_exception", "message": f"{type(exc).__name__}: {exc}\n{tb}"}})


if __name__ == "__main__":
    main()
