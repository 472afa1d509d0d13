"""The artefacts a run kept: `artefacts/step-<generation>-<step>/<file>` is the exact copy of
what validation scored at that session step (the supervisor takes it with `ReadArtefact`),
`best/` and `latest/` point at the best and latest of them. The viewer shows one with a diff
to the validation before it."""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Any

from mlgym.viewer.catalog import read_inside

DIR = "artefacts"
MAX_BYTES = 2 * 1024 * 1024  # shown in full up to this; larger copies are described
STEP_RE = re.compile(r"^step-(\d+)-(\d+)$")


def labels(run_dir: Path) -> list[str]:
    """The validation copies in order (generation, then step), then best and latest."""
    root = run_dir / DIR
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    steps = sorted(
        (n for n in names if STEP_RE.match(n)),
        key=lambda n: tuple(map(int, STEP_RE.match(n).groups())),
    )
    return steps + [n for n in ("best", "latest") if n in names]


def _files(run_dir: Path, label: str) -> list[str]:
    folder = run_dir / DIR / label
    return (
        sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        if folder.is_dir()
        else []
    )


def _content(run_dir: Path, label: str, name: str) -> dict[str, Any]:
    data, truncated = read_inside(run_dir, f"{DIR}/{label}/{name}", MAX_BYTES)
    out: dict[str, Any] = {
        "name": name,
        "bytes": (run_dir / DIR / label / name).stat().st_size,
        "sha256": hashlib.sha256(data).hexdigest() if not truncated else None,
        "truncated": truncated,
    }
    try:
        out["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["text"] = None  # binary: described, not shown
    return out


def show(run_dir: Path, label: str) -> dict[str, Any]:
    """An artefact copy's files with a unified diff against the previous validation's."""
    known = labels(run_dir)
    if label not in known:
        raise FileNotFoundError(label)
    steps = [n for n in known if STEP_RE.match(n)]
    prev = None
    if label in steps and steps.index(label) > 0:
        prev = steps[steps.index(label) - 1]
    files = []
    for name in _files(run_dir, label):
        item = _content(run_dir, label, name)
        if prev is not None and item["text"] is not None and name in _files(run_dir, prev):
            before = _content(run_dir, prev, name)
            if before["text"] is not None:
                item["diff"] = "".join(
                    difflib.unified_diff(
                        before["text"].splitlines(keepends=True),
                        item["text"].splitlines(keepends=True),
                        fromfile=f"{prev}/{name}",
                        tofile=f"{label}/{name}",
                    )
                )
        files.append(item)
    return {"label": label, "previous": prev, "labels": known, "files": files}
