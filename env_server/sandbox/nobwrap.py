"""The `local` sandbox where bubblewrap is not installed: what this machine allows instead, and
the one warning that says so.

Two modes, chosen once per process by a probe (or by $MLGYM_NO_BWRAP=namespaces|plain):
- `namespaces`: nsbox.py, a stand-in for bubblewrap built on Linux namespaces, takes its
  place. Everything is as with bubblewrap (paths, mounts, limits, evaluation sandbox); what
  differs is assurance: a small program of ours instead of bubblewrap's reviewed one, and, on
  a kernel without user namespaces, commands that run as root (capabilities dropped).
- `plain`: no namespaces at all (a container without privileges, user namespaces off):
  commands run as plain processes of the server's user that see the whole host, and each
  workspace is its host folder. The session and the ACI use that host path consistently
  (observations name it instead of /home/agent/workspace); scores are the same.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from mlgym import log, paths

logger = log.get(__name__)

NSBOX = Path(__file__).resolve().parent / "nsbox.py"
INSTALL = "apt-get install bubblewrap"
ENV = "MLGYM_NO_BWRAP"  # auto (default), namespaces, plain
MODES = ("auto", "namespaces", "plain")


@dataclass(frozen=True)
class StandIn:
    mode: str  # "namespaces" | "plain"
    launcher: str | None  # what local.py runs in bubblewrap's place (namespaces), else None
    warning: str


_lock = threading.Lock()
_chosen: dict[str, StandIn] = {}
_announced: set[str] = set()


def not_found(wanted: str) -> str:
    return f"bubblewrap not found ({wanted})"


def stand_in(missing: str) -> StandIn:
    """The replacement for bubblewrap on this machine; `missing` says why there is none (the
    warning begins with it: `not_found(path)`, or what `unusable` found). Blocking (a probe,
    the first time): call it in a thread."""
    mode = os.environ.get(ENV, "auto").strip() or "auto"
    if mode not in MODES:
        raise ValueError(f"${ENV} is {mode!r}; use one of {', '.join(MODES)}")
    with _lock:
        key = f"{missing}\0{mode}"
        known = _chosen.get(key)
        if known is None or (known.launcher and not os.access(known.launcher, os.X_OK)):
            _chosen[key] = known = _choose(missing, mode)  # (again, if its home was removed)
        return known


_usable: dict[str, str] = {}


def unusable(bwrap: str) -> str:
    """Why the installed bubblewrap cannot make a sandbox here ("" when it can): in a container
    without privileges it is there but refused namespaces. Cached; blocking."""
    with _lock:
        if bwrap not in _usable:
            _usable[bwrap] = _run_probe([bwrap, "--ro-bind", "/", "/", "--proc", "/proc",
                                         "--dev", "/dev", "--", "true"])
        return _usable[bwrap]


def _choose(missing: str, mode: str) -> StandIn:
    why = f"${ENV}=plain"
    if mode != "plain":
        for python in _interpreters():
            launcher = _launcher(python)
            ok, why = _probe(launcher, user=True)
            if ok:
                return StandIn("namespaces", launcher, _namespaces_warning(missing, as_root=False))
            if os.geteuid() == 0 and _probe(launcher, user=False)[0]:
                return StandIn("namespaces", launcher, _namespaces_warning(missing, as_root=True))
        if mode == "namespaces":
            raise RuntimeError(f"{missing}, and ${ENV}=namespaces but no namespace can be made "
                               f"here: {why}")
    return StandIn("plain", None, (
        f"{missing}, and this machine allows no namespaces ({why}): sandbox commands run "
        f"WITHOUT ISOLATION, as plain processes of uid {os.geteuid()} that see the whole host "
        "(its files, processes and network), each workspace at its host folder instead of "
        "/home/agent/workspace, read-only task files not enforced. Scores are the same. For "
        f"isolation, install bubblewrap ({INSTALL})."))


def _namespaces_warning(missing: str, *, as_root: bool) -> str:
    who = ("; this kernel allows no user namespace, so commands run as root (uid 0) with "
           "every capability dropped" if as_root else "")
    return (f"{missing}: sandboxes are built by mlgym's stand-in for it (Linux namespaces, "
            f"env_server/sandbox/nsbox.py) with the same paths and layout{who}. It has not had "
            f"bubblewrap's review: for isolation you can rely on, install bubblewrap ({INSTALL}).")


def announce(warning: str) -> None:
    """Log a sandbox warning once per process (every sandbox carries it in its status)."""
    with _lock:
        if warning in _announced:
            return
        _announced.add(warning)
    logger.warning("sandbox_not_isolated", warning=warning)


def _interpreters() -> list[str]:
    """Pythons to run nsbox.py with, fastest to start first: the system's, then ours."""
    out = []
    for p in ("/usr/bin/python3", str(Path(sys.base_prefix) / "bin" / "python3"), sys.executable):
        if os.access(p, os.X_OK) and os.path.realpath(p) not in map(os.path.realpath, out):
            out.append(p)
    return out


def _launcher(python: str) -> str:
    """An executable that runs nsbox.py with `python` (local.py runs one program in
    bubblewrap's place): a two-line script, made once under ~/.mlgym/bin."""
    text = f'#!/bin/sh\nexec {_quote(python)} -I -S {_quote(str(NSBOX))} "$@"\n'
    name = "nsbox-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    for folder in (paths.home() / "bin", Path(tempfile.gettempdir())):
        path = folder / name
        try:
            if not (path.is_file() and path.read_text() == text):
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{name}.{os.getpid()}"
                tmp.write_text(text)
                tmp.chmod(0o755)
                os.replace(tmp, path)
            return str(path)
        except OSError:
            continue
    return str(NSBOX)  # nowhere to write: the probe will fail and the mode be plain


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _probe(launcher: str, *, user: bool) -> tuple[bool, str]:
    """Can the stand-in make a sandbox here (as uid 1000 in a user namespace, or as root
    without one)? (ok, the reason when not)."""
    argv = [launcher, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
    if user:
        argv += ["--unshare-user", "--uid", "1000", "--gid", "1000"]
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
             "--", "true"]
    why = _run_probe(argv)
    return not why, why


def _run_probe(argv: list[str]) -> str:
    """"" when `argv` (a sandbox around `true`) succeeds, else its last line of complaint."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if r.returncode == 0:
        return ""
    lines = (r.stderr or r.stdout).strip().splitlines()
    return (lines[-1] if lines else f"exit {r.returncode}").removeprefix("nsbox: ")
