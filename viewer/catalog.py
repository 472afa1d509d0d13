"""Which runs the viewer serves: the run folders found under its root, by name.

A run's name is its folder's path relative to the root (`.`-free, `/`-separated). Names that
come in a request are only ever looked up among the folders the scan found, never joined onto
a path, so `../`, absolute paths and links that lead out of the root name nothing. A folder is
a run when it holds run.json or an event log; a folder with sweep.json is a sweep (its runs
are found beneath it like any others).
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from pathlib import Path

RUN_MARKERS = ("run.json", "events.sqlite", "result.json")
SWEEP_FILE = "sweep.json"
MAX_DEPTH = 4  # a sweep folder may hold runs/<design>/<run>/
RESCAN_S = 2.0  # a name the last scan did not know makes a new scan at most this often
SKIP_DIRS = {"artefacts", "trajectories", "env", "logs", "analysis", "node_modules", "__pycache__"}
# what a name may hold: run ids are task-team-stamp-xxxx; folders made by hand get some slack
NAME_RE = re.compile(r"^[A-Za-z0-9_.@+=,-]+(?:/[A-Za-z0-9_.@+=,-]+)*$")


class UnknownRun(LookupError):
    """A name that is not one of the runs under the root (or is not a valid name at all)."""


def valid_name(name: str) -> bool:
    """A relative, `/`-separated name with no empty, `.` or `..` parts."""
    if not name or len(name) > 512 or not NAME_RE.match(name):
        return False
    return all(part not in (".", "..") for part in name.split("/"))


def is_run(path: Path) -> bool:
    return any((path / m).is_file() for m in RUN_MARKERS)


class Catalog:
    """The root folder given to `mlgym view` and the runs beneath it."""

    def __init__(self, root: Path):
        self.root = root
        self._found: dict[str, Path] = {}
        self._scanned = 0.0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> Catalog:
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"{path} is not a folder")
        return cls(root)

    @property
    def is_sweep(self) -> bool:
        return (self.root / SWEEP_FILE).is_file()

    @property
    def single(self) -> bool:
        """The root is itself one run folder."""
        return is_run(self.root)

    def scan(self) -> dict[str, Path]:
        """name -> folder of every run under the root (the root itself when it is a run)."""
        if self.single:
            found = {self.root.name if valid_name(self.root.name) else "run": self.root}
        else:
            out: dict[str, Path] = {}
            self._walk(self.root, 0, out)
            found = dict(sorted(out.items()))
        with self._lock:
            self._found, self._scanned = found, time.monotonic()
        return found

    def _walk(self, folder: Path, depth: int, out: dict[str, Path]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name in SKIP_DIRS or not entry.is_dir():
                continue
            path = Path(entry.path)
            if entry.is_symlink() and not self.inside(path):
                continue  # a link out of the root is never served
            name = path.relative_to(self.root).as_posix()
            if not valid_name(name):
                continue
            if is_run(path):
                out[name] = path
            elif depth + 1 < MAX_DEPTH:
                self._walk(path, depth + 1, out)

    def inside(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.root)
        except (ValueError, OSError):
            return False
        return True

    def find(self, name: str) -> Path:
        """The folder of run `name`; raises UnknownRun for anything a scan did not find. The
        last scan answers (a run page asks many times a second); a name it does not know
        makes a new one, at most every RESCAN_S seconds."""
        if not valid_name(name):
            raise UnknownRun(name)
        with self._lock:
            path, age = self._found.get(name), time.monotonic() - self._scanned
        if path is None and age > RESCAN_S:
            path = self.scan().get(name)
        if path is None or not is_run(path) or not self.inside(path):
            raise UnknownRun(name)
        return path


def read_inside(folder: Path, relative: str, max_bytes: int) -> tuple[bytes, bool]:
    """(content, truncated) of a file under `folder` by a relative name; links (the file itself
    or a folder on the way that leads outside), FIFOs and devices are refused as missing. Run
    folders hold files that agents influenced: never follow them elsewhere."""
    if not valid_name(relative):
        raise FileNotFoundError(relative)
    base = folder.resolve()
    path = base / relative
    try:
        path.parent.resolve().relative_to(base)
    except ValueError:
        raise FileNotFoundError(relative) from None
    # O_NOFOLLOW: the last part is never a link; O_NONBLOCK: a FIFO does not hang the open
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(relative)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:max_bytes], len(data) > max_bytes
