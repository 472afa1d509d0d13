"""Resource limits for local sandboxes: a cgroup per sandbox where one can be made, rlimits
otherwise.

Why a cgroup: RLIMIT_NPROC counts processes per host uid and is not enforced at all for root
(bubblewrap's user namespace maps the sandbox user back to the caller's uid), and RLIMIT_AS
breaks programs that reserve address space (JAX, PyTorch) while not bounding real memory. A
cgroup's pids.max and memory limit bound the sandbox as a whole and let us kill every process in
it at once; its own cpu group gives the sandbox an equal CPU share with its neighbours, however
many processes it runs. Both cgroup v2 (a delegated, writable subtree) and v1 (memory, pids and
cpu hierarchies) work.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlgym import log

logger = log.get(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_names = itertools.count(1)
_OOM_KILL = re.compile(r"^oom_kill (\d+)", re.M)
_PIDS_MAX = re.compile(r"^max (\d+)", re.M)
_swept = False


@dataclass
class Limits:
    memory_mb: int = 4096
    cpu_seconds: int = 0
    max_processes: int = 256
    file_size_mb: int = 8192


@dataclass
class Cgroup:
    """The cgroup directories of one sandbox (one on v2; memory and pids on v1)."""

    dirs: list[Path]
    version: int
    controls: set[str] = field(default_factory=set)  # "memory", "pids", "cpu"
    _fds: dict[str, int] = field(default_factory=dict, repr=False)  # counter files, held open

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(pids)

    def kill_all(self, wait_s: float = 2.0) -> None:
        """SIGKILL everything in the cgroup, repeating until empty (forks may race)."""
        deadline = time.monotonic() + wait_s
        while True:
            pids = self.procs()
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.close()
        self.kill_all()
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # processes still exiting
            else:
                logger.warning("cgroup_not_removed", path=str(d))

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        return self._count("oom", ("memory.events", "memory.oom_control"), _OOM_KILL)

    def limit_hits(self) -> int:
        """How many forks the process limit refused (pids.events `max`): a count that grew
        during a command means the command drove the sandbox to its limit (a fork bomb)."""
        return self._count("pids", ("pids.events",), _PIDS_MAX)

    def _count(self, key: str, names: tuple[str, ...], pattern: re.Pattern[str]) -> int:
        """A counter from one of the cgroup's event files. Called twice per command, so the
        file that has it is looked for once and then held open: a pread costs ~1.5 us where
        opening the file each time cost ~17 us."""
        fd = self._fds.get(key)
        if fd is None:
            for d in self.dirs:
                for name in names:
                    with contextlib.suppress(OSError):
                        if pattern.search((d / name).read_text()):
                            fd = self._fds[key] = os.open(d / name, os.O_RDONLY | os.O_CLOEXEC)
                            break
                if fd is not None:
                    break
            else:
                return 0
        try:
            m = pattern.search(os.pread(fd, 4096, 0).decode())
        except OSError:
            return 0
        return int(m.group(1)) if m else 0

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def join_prefix(self) -> list[str]:
        """Shell words that put the current process in the cgroup before exec'ing on."""
        return [f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs]


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ("" key for v2)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def cgroup_of(pid: int) -> Cgroup | None:
    """A read-only view of the memory and pids cgroups a (host) process is in, for
    `oom_kills()`, `limit_hits()` and `procs()` (a container's, found through its first
    process); None when neither can be found."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                paths[c] = path
    if (CGROUP_ROOT / "cgroup.controllers").exists() and "" in paths:
        d = CGROUP_ROOT / paths[""].lstrip("/")
        return Cgroup([d], 2, {"memory", "pids"}) if d.is_dir() else None
    dirs, controls = [], set()
    for ctrl, mount in _v1_mounts().items():
        if ctrl in ("memory", "pids") and ctrl in paths and \
                (d := mount / paths[ctrl].lstrip("/")).is_dir():
            dirs.append(d)
            controls.add(ctrl)
    return Cgroup(dirs, 1, controls) if dirs else None


def _v1_mounts() -> dict[str, Path]:
    mounts: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "cgroup":
                for opt in parts[3].split(","):
                    if opt in ("memory", "pids", "cpu"):
                        mounts[opt] = Path(parts[1])
    return mounts


def _base(mount: Path, own: str) -> Path:
    """Make our cgroups beside/below our own when visible there, else at the mount's root."""
    candidate = mount / own.lstrip("/")
    return candidate if candidate.is_dir() else mount


def _sweep(base: Path) -> None:
    """Remove cgroups left by servers that died (named mlgym-<server pid>-<n>)."""
    with contextlib.suppress(OSError):
        for d in base.glob("mlgym-*-*"):
            m = re.fullmatch(r"mlgym-(\d+)-\d+", d.name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                Cgroup([d], 0).remove()


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def create_cgroup(limits: Limits) -> Cgroup | None:
    """A fresh cgroup enforcing the memory and process limits, or None if this machine gives us
    no writable cgroup (then rlimits are all there is)."""
    global _swept
    name = f"mlgym-{os.getpid()}-{next(_names)}"
    own = _own_paths()
    memory = limits.memory_mb * 1024 * 1024
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # unified (v2) hierarchy
        base = _base(CGROUP_ROOT, own.get("", "/"))
        if not _swept:
            _sweep(base)
        d = base / name
        try:
            d.mkdir()
        except OSError:
            return None
        cg = Cgroup([d], 2)
        if _write(d / "memory.max", str(memory)):
            _write(d / "memory.swap.max", "0")
            cg.controls.add("memory")
        if _write(d / "pids.max", str(limits.max_processes)):
            cg.controls.add("pids")
        if (d / "cpu.weight").exists():  # the parent delegates cpu: a share of its own
            cg.controls.add("cpu")
        if not cg.controls:
            cg.remove()
            return None
        _swept = True
        return cg
    dirs: list[Path] = []
    controls: set[str] = set()
    for ctrl, mount in _v1_mounts().items():
        base = _base(mount, own.get(ctrl, "/"))
        if not _swept:
            _sweep(base)
        d = base / name
        try:
            d.mkdir()
        except OSError:
            continue
        if ctrl == "memory":
            ok = _write(d / "memory.limit_in_bytes", str(memory))
        elif ctrl == "pids":
            ok = _write(d / "pids.max", str(limits.max_processes))
        else:  # cpu: being a group of its own is the point (the default, equal share)
            ok = _write(d / "cpu.shares", "1024")
        if ctrl == "memory" and ok:
            _write(d / "memory.memsw.limit_in_bytes", str(memory))  # only with swap accounting
        if ok:
            dirs.append(d)
            controls.add(ctrl)
        else:
            with contextlib.suppress(OSError):
                d.rmdir()
    _swept = True
    if not dirs:
        return None
    return Cgroup(dirs, 1, controls)


def wrapper(limits: Limits, cgroup: Cgroup | None) -> tuple[list[str], dict[str, str]]:
    """argv prefix that joins the cgroup and sets rlimits, then execs the rest; and a
    description of how each limit is enforced."""
    how: dict[str, str] = {}
    steps = list(cgroup.join_prefix()) if cgroup else []
    if limits.cpu_seconds > 0:
        # soft limit: SIGXCPU (catchable: save a checkpoint); 5 s later, SIGKILL
        steps.append(f"ulimit -S -t {int(limits.cpu_seconds)}")
        steps.append(f"ulimit -H -t {int(limits.cpu_seconds) + 5}")
        how["cpu"] = "rlimit (per process)"
    if limits.file_size_mb > 0:
        steps.append(f"ulimit -f {int(limits.file_size_mb) * 1024}")
        how["file_size"] = "rlimit"
    if cgroup and "memory" in cgroup.controls:
        how["memory"] = f"cgroup v{cgroup.version}"
    elif limits.memory_mb > 0:
        steps.append(f"ulimit -v {int(limits.memory_mb) * 1024}")
        how["memory"] = "rlimit address space (per process; no writable cgroup)"
    if cgroup and "cpu" in cgroup.controls:
        how["cpu_share"] = f"cgroup v{cgroup.version} (an equal share with other sandboxes)"
    else:
        how["cpu_share"] = "none (no writable cpu cgroup): a busy sandbox slows its neighbours"
    if cgroup and "pids" in cgroup.controls:
        how["processes"] = f"cgroup v{cgroup.version} pids.max"
    elif os.geteuid() != 0:
        steps.append(f"ulimit -u {int(limits.max_processes) + _count_own_processes()}")
        how["processes"] = "rlimit (per host uid)"
    else:
        how["processes"] = "NOT ENFORCED (root, no writable cgroup)"
        logger.warning("process_limit_unenforced",
                       reason="running as root without a writable pids cgroup")
    script = " && ".join([*steps, 'exec "$@"'])
    return ["/bin/bash", "--noprofile", "--norc", "-c", script, "mlgym-limits"], how


def _count_own_processes() -> int:
    uid = os.geteuid()
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if p.stat().st_uid == uid:
                    n += 1
    return n
