"""File helpers shared by the packages.

Atomic file writes for files that other processes read while a run is live (run.json,
pids.json, result.json, trajectories, kept artefacts): a reader sees the old content or the
new, never an empty or half-written file, and a crash leaves no partial file behind.

How: write a temporary file in the same folder (so the rename stays on one file system), flush
and fsync it, `os.replace` it over the target (atomic on POSIX), then fsync the folder so the
rename itself survives a power cut. (The `atomicwrites` package that did this is archived.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes | str, *, mode: int | None = None) -> Path:
    """Replace `path` with `data` atomically; returns the path. The new file gets `mode`, or
    the target's current mode when it exists, else 0o666 less the umask (what open() gives)."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2,
                      allow_nan: bool = True) -> Path:
    """`atomic_write` of `obj` as JSON (a trailing newline included)."""
    return atomic_write(path, json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each run of data in the first `size` bytes of an open file, holes
    left out (SEEK_DATA / SEEK_HOLE): what a sparse file holds, so copies keep it sparse."""
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        if data >= hole:
            return
        yield data, hole - data
        offset = hole
