"""One attempt at one run: `mlgym run` (fresh) or `mlgym resume` as a subprocess, on whatever
machine executes it (this one, or a Ray worker).

The attempt holds an exclusive lock on the run folder for as long as any process of it lives
(the `mlgym run` child inherits the locked descriptor), so a retry never starts on a folder an
earlier attempt is still writing, e.g. a run whose worker died and which is still stopping.
The child gets PR_SET_PDEATHSIG: when the process driving it dies (a killed sweep or Ray
worker), the run is told to stop (SIGTERM: it saves its state and can be resumed). Asked to
stop (`stop` set, or KeyboardInterrupt from Ray's cancel), the child gets SIGINT, as a user's
Ctrl-C: it stops cleanly and says it can be resumed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

import msgspec

from mlgym.files import data_extents

LOCK_FILE = ".sweep.lock"
TEAM_FILE = "sweep-team.toml"
STOP_GRACE_S = 90.0  # a run told to stop waits for its agents (grace 5 s each) and tears down
LOCK_WAIT_S = 120.0

try:  # loaded before any fork: the child only makes the calls
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux
    _libc = None
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _child_setup() -> None:
    """In the child, before exec: die with the parent (PR_SET_PDEATHSIG), and take SIGINT and
    SIGTERM as a run expects them. A Ray worker blocks and ignores them, and both the mask and
    an ignored disposition survive exec: the run would never hear a stop."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if _libc is not None:
        for sig in _STOP_SIGNALS:
            _libc.signal(int(sig), 0)  # SIG_DFL
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Job(msgspec.Struct, kw_only=True):
    """What a worker needs to make one attempt; nothing refers to the driver's machine but
    `run_dir` with storage `local`/`shared`."""

    run: str
    attempt: int
    kind: Literal["fresh", "resume"]
    task: str
    team: str
    team_toml: str = ""
    seed: int = 0
    args: list[str] = []  # more `mlgym run` options
    env: dict[str, str] = {}
    storage: Literal["local", "shared", "copy"] = "local"
    run_dir: str = ""  # local, shared: where the run lives; copy: unused (a temporary folder)
    payload: bytes | None = None  # copy + resume: the run folder so far, as a .tar.gz
    resources: dict[str, float] = {}  # cpus, memory_mb, gpus: what the Ray executor reserves


class AttemptExit(msgspec.Struct, kw_only=True):
    """How the attempt's process ended, as seen where it ran."""

    run: str
    attempt: int
    returncode: int | None = None  # negative: killed by that signal
    interrupted: bool = False  # we asked it to stop
    lost: str = ""  # the attempt never got to run its child to the end (why)
    node: str = ""
    started: float = 0.0  # wall clock (time.time()) at the worker
    child_start: float = 0.0
    child_end: float = 0.0
    ended: float = 0.0
    log_tail: str = ""
    payload: bytes | None = None  # copy: the run folder, as a .tar.gz

    @property
    def child_s(self) -> float:
        return max(self.child_end - self.child_start, 0.0)


def argv(job: Job, run_dir: Path) -> list[str]:
    base = [sys.executable, "-m", "mlgym.cli"]
    if job.kind == "resume":
        return base + ["resume", str(run_dir), "--no-progress", "--json"]
    team = job.team
    if job.team_toml:  # a file: ship its text, so a worker without the file runs the same team
        team = str(run_dir / TEAM_FILE)
        (run_dir / TEAM_FILE).write_text(job.team_toml)
    return base + ["run", "--task", job.task, "--team", team, "--run-dir", str(run_dir), "--seed",
                   str(job.seed), *job.args, "--no-progress", "--json"]


def run_attempt(job: Job, stop: threading.Event | None = None) -> AttemptExit:
    """Run the attempt to its end; never raises for the run's own failures (they are in the
    exit). With storage `copy`, the run folder comes back in `payload`."""
    out = AttemptExit(run=job.run, attempt=job.attempt, node=socket.gethostname(), started=time.time())
    tmp = tempfile.TemporaryDirectory(prefix="mlgym-sweep-") if job.storage == "copy" else None
    try:
        run_dir = Path(tmp.name) / job.run if tmp else Path(job.run_dir)
        if job.payload:
            unpack(job.payload, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        _run_locked(job, run_dir, out, stop)
        if tmp is not None:
            out.payload = pack(run_dir)
    except Exception as exc:  # a failure of the attempt machinery, not of the run
        out.lost = out.lost or f"{type(exc).__name__}: {exc}"
    finally:
        if tmp is not None:
            tmp.cleanup()
    out.ended = time.time()
    return out


def _run_locked(job: Job, run_dir: Path, out: AttemptExit, stop: threading.Event | None) -> None:
    with open(run_dir / LOCK_FILE, "a+") as lock:
        if not _acquire(lock, LOCK_WAIT_S, stop):
            out.lost = f"the run folder is still locked by an earlier attempt after {LOCK_WAIT_S:g} s"
            return
        lock.seek(0)
        lock.truncate()
        lock.write(f"{socket.gethostname()} {os.getpid()}\n")
        lock.flush()
        log_path = run_dir / f"sweep-attempt-{job.attempt}.log"
        env = {**os.environ, **job.env}
        with open(log_path, "ab") as log:
            out.child_start = time.time()
            proc = subprocess.Popen(argv(job, run_dir), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, pass_fds=(lock.fileno(),),
                                    start_new_session=True, preexec_fn=_child_setup)
            out.interrupted = _wait(proc, stop)
            out.child_end = time.time()
        out.returncode = proc.returncode
        out.log_tail = _tail(log_path)


def _acquire(lock, wait_s: float, stop: threading.Event | None) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                return False
            time.sleep(0.5)


def _wait(proc: subprocess.Popen, stop: threading.Event | None) -> bool:
    """Wait for the child; on `stop` or KeyboardInterrupt, SIGINT it and wait for its clean
    stop (SIGTERM, then SIGKILL past the grace). True when we asked it to stop."""
    try:
        while stop is None or not stop.is_set():
            try:
                proc.wait(0.2)
                return False
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        pass
    _stop_child(proc)
    return True


def _stop_child(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(KeyboardInterrupt):  # a second cancel changes nothing
                try:
                    proc.wait(0.2)
                    return
                except subprocess.TimeoutExpired:
                    pass


def _tail(path: Path, n: int = 1500) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - n, 0))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


SPARSE_KEY = "MLGYM.sparse"  # a pax header: the member holds a sparse file's extents


def pack(run_dir: Path) -> bytes:
    """The run folder as a .tar.gz (sockets and the lock left out). A sparse file (a stopped
    run's session disk image: 50 GB of which a few MB are written) goes as its data extents
    only, so packing it reads and sends what it holds, not its size in zeros."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(run_dir.rglob("*")):
            if p.is_socket() or p.is_fifo() or p.name == LOCK_FILE:
                continue
            arcname = str(p.relative_to(run_dir))
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_blocks * 512 < st.st_size:
                payload = _sparse_payload(p, st.st_size)
                info = tar.gettarinfo(p, arcname)
                info.size, info.pax_headers = len(payload), {SPARSE_KEY: "1"}
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.add(p, arcname=arcname, recursive=False)
    return buf.getvalue()


def _sparse_payload(path: Path, size: int) -> bytes:
    """A JSON line {"size", "extents": [[offset, length], ...]}, then the extents' bytes."""
    extents, chunks = [], []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for offset, length in data_extents(fd, size):
            chunk = os.pread(fd, length, offset)
            extents.append([offset, len(chunk)])
            chunks.append(chunk)
    finally:
        os.close(fd)
    head = json.dumps({"size": size, "extents": extents}).encode() + b"\n"
    return head + b"".join(chunks)


def unpack(data: bytes, run_dir: Path) -> None:
    """Extract a packed run folder; members that would land outside it are refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        sparse = [m for m in members if m.pax_headers.get(SPARSE_KEY) and m.isfile()]
        tar.extractall(run_dir, members=[m for m in members if m not in sparse], filter="data")
        for member in sparse:
            safe = tarfile.data_filter(member, str(run_dir))  # raises for a path outside
            body = tar.extractfile(member).read()
            head, _, rest = body.partition(b"\n")
            layout = json.loads(head)
            target = run_dir / safe.name
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, int(layout["size"]))
                at = 0
                for offset, length in layout["extents"]:
                    os.pwrite(fd, rest[at:at + length], offset)
                    at += length
            finally:
                os.close(fd)
