"""Task data: find input files on the data search path, import local copies, and prepare
(split into public workspace files and secret labels) once, cached.

A data source `{file, dir, sha256}` is looked for first in the task's own folder,
`tasks/<id>/data/<file>` (small public data sets ship with the package there, with their source
and licence in `data/README.md`), then as `<root>/<dir>/<file>` and `<root>/<task id>/<file>`
in each root of the user's search path:
  1. `$MLGYM_DATA` (several roots separated by `:`),
  2. `~/.mlgym/data` (`$MLGYM_HOME/data`; where `mlgym data import` copies files).
A file whose sha256 differs is skipped with a warning, so a stale copy never feeds a task.

Preparation runs the task's prepare entry with this (the framework's) python and caches the
result under `~/.mlgym/prepared/<task id>/{public,secret}`; the cache key covers the spec,
the prepare script, static secret files and the data hashes, so any change re-prepares.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlgym import log, paths
from mlgym.tasks.spec import DataSource, TaskSpec

logger = log.get(__name__)


class DataError(RuntimeError):
    """Input data missing or corrupt, or preparation failed; the message says what to do."""


@dataclass(frozen=True)
class PreparedTask:
    """Where a task's prepared files are: `public_dir` is copied into the agent's workspace,
    `secret_dir` only ever reaches the evaluator (`--secret`)."""

    task_id: str
    public_dir: Path
    secret_dir: Path
    key: str


SHIPPED_DIR = "data"  # tasks/<id>/data/: input files that ship with the task


def data_roots() -> list[Path]:
    """The user's data roots ($MLGYM_DATA, then ~/.mlgym/data); a task's shipped files come
    before them (see `candidates`)."""
    roots: list[Path] = []
    env = os.environ.get("MLGYM_DATA")
    if env:
        roots += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    roots.append(paths.home() / "data")
    return roots


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def candidates(spec: TaskSpec, source: DataSource, task_dir: Path | None = None) -> list[Path]:
    """Every place the file may be, in search order: the task's shipped copy, then the roots."""
    out: list[Path] = [task_dir / SHIPPED_DIR / source.file] if task_dir is not None else []
    for root in data_roots():
        for sub in dict.fromkeys([source.dir or spec.id, spec.id]):
            out.append(root / sub / source.file)
    return out


def find_data_file(spec: TaskSpec, source: DataSource, task_dir: Path | None = None) -> Path:
    """The first copy of `source` on the search path whose sha256 matches."""
    looked: list[str] = []
    for path in candidates(spec, source, task_dir):
        if not path.is_file():
            looked.append(f"{path} (absent)")
            continue
        digest = sha256_file(path)
        if digest == source.sha256:
            return path
        logger.warning("data file has the wrong sha256, skipped", path=str(path), expected=source.sha256, got=digest)
        looked.append(f"{path} (sha256 {digest[:12]}... differs)")
    where = source.url or source.source or "its source"
    raise DataError(
        f"task {spec.id}: data file {source.file!r} (sha256 {source.sha256}) not found. Looked at:\n  "
        + "\n  ".join(looked)
        + f"\nGet it from {where}, then run `mlgym data import {spec.id} PATH` "
        "(or point MLGYM_DATA at a folder holding it)."
    )


def import_data(spec: TaskSpec, path: Path) -> list[Path]:
    """Copy the task's data files found at `path` (a file or a folder searched recursively)
    into `~/.mlgym/data/<task id>/`, checking each sha256. Returns the files written."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if not spec.data:
        raise DataError(f"task {spec.id} has no data sources to import")
    # a single file is taken by its hash whatever its name; in a folder only files named like
    # a data source are hashed (a download folder may hold many big unrelated files)
    names = {d.file for d in spec.data}
    pool = [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.is_file() and p.name in names]
    by_hash: dict[str, Path] = {}
    for p in pool:
        by_hash.setdefault(sha256_file(p), p)
    dest_dir = paths.home() / "data" / spec.id
    written: list[Path] = []
    for d in spec.data:
        src = by_hash.get(d.sha256)
        if src is None:
            continue
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / d.file
        tmp = dest.with_name(f".{d.file}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        written.append(dest)
        logger.info("imported data file", task=spec.id, file=d.file, source=str(src), dest=str(dest))
    if not written:
        wanted = ", ".join(f"{d.file} (sha256 {d.sha256[:12]}...)" for d in spec.data)
        raise DataError(f"no file under {path} matches the data of task {spec.id}: wanted {wanted}")
    return written


def _cache_key(spec: TaskSpec, task_dir: Path) -> str:
    h = hashlib.sha256()
    h.update((task_dir / "task.toml").read_bytes())
    if spec.prepare is not None:
        h.update((task_dir / spec.prepare.entry).read_bytes())
    for rel in spec.files.secret:
        base = task_dir / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            h.update(str(f.relative_to(task_dir)).encode())
            h.update(f.read_bytes())
    for d in spec.data:
        h.update(d.sha256.encode())
    return h.hexdigest()


def _copy_static_secrets(spec: TaskSpec, task_dir: Path, secret: Path) -> None:
    """A secret folder's contents merge into the prepared secret root; a file keeps its name."""
    for rel in spec.files.secret:
        src = task_dir / rel
        if src.is_dir():
            shutil.copytree(src, secret, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, secret / src.name)


def _run_prepare(spec: TaskSpec, task_dir: Path, public: Path, secret: Path) -> None:
    assert spec.prepare is not None
    files = [find_data_file(spec, d, task_dir) for d in spec.data]
    cmd = [sys.executable, str(task_dir / spec.prepare.entry), "--task-dir", str(task_dir),
           "--public", str(public), "--secret", str(secret)]
    for d, f in zip(spec.data, files, strict=True):
        cmd += ["--data-file", f"{d.file}={f}"]
    logger.info("preparing task data", task=spec.id)
    try:
        proc = subprocess.run(cmd, cwd=public.parent, capture_output=True, text=True,
                              timeout=spec.prepare.timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"task {spec.id}: prepare timed out after {spec.prepare.timeout_s} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DataError(f"task {spec.id}: prepare failed (exit {proc.returncode}):\n{tail}")


def _freeze(root: Path) -> None:
    """Prepared files are read-only, so nothing edits the cache by accident."""
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            p.chmod(0o444)


def prepared_root() -> Path:
    return paths.home() / "prepared"


def prepare(spec: TaskSpec, task_dir: Path, force: bool = False) -> PreparedTask:
    """Prepare once and cache; safe to call from several processes at once (file lock)."""
    root = prepared_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / spec.id
    key = _cache_key(spec, task_dir)
    with open(root / f".{spec.id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = final / "stamp.json"
        if not force and stamp.is_file():
            try:
                if json.loads(stamp.read_text()).get("key") == key:
                    return PreparedTask(spec.id, final / "public", final / "secret", key)
            except (OSError, ValueError):
                pass
        work = Path(tempfile.mkdtemp(prefix=f".{spec.id}.", dir=root))
        try:
            (work / "public").mkdir()
            (work / "secret").mkdir()
            _copy_static_secrets(spec, task_dir, work / "secret")
            if spec.prepare is not None:
                _run_prepare(spec, task_dir, work / "public", work / "secret")
            _freeze(work)
            (work / "stamp.json").write_text(json.dumps({"task": spec.id, "key": key}) + "\n")
            if final.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{spec.id}.old.", dir=root))
                os.replace(final, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        logger.info("task prepared", task=spec.id, path=str(final))
        return PreparedTask(spec.id, final / "public", final / "secret", key)
