"""Load a task's Hugging Face data set from a local copy or from the hub (used by prepare.py).

The original tasks read their data with `datasets.load_dataset(<hub id>)`. Here a prepare
script calls `load_split(task_id, hub_id, split, source)`, which looks, in order, at:
  1. `source` (a `--source PATH` given to prepare.py),
  2. a local copy `<data root>/<task id>/` on the data search path ($MLGYM_DATA, then
     $MLGYM_HOME/data = ~/.mlgym/data, where `mlgym data import` puts copies),
  3. the hub itself, through `datasets.load_dataset(hub_id, split=...)` and its cache.
A local copy may hold, per split, a folder written by `Dataset.save_to_disk` (`<split>/`),
or parquet files: `<split>.parquet`, `<split>-*.parquet` or the hub's own layout
`data/<split>-*.parquet` (what `huggingface-cli download --repo-type dataset` produces).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from prepare_cli import prepare_args as common_prepare_args


def data_roots() -> list[Path]:
    try:  # the framework's search path when mlgym is importable (prepare runs with its python)
        from mlgym.tasks.data import data_roots as roots

        return list(roots())
    except ImportError:
        out = [Path(p).expanduser() for p in os.environ.get("MLGYM_DATA", "").split(os.pathsep) if p]
        out.append(Path(os.environ.get("MLGYM_HOME", Path.home() / ".mlgym")) / "data")
        return out


def local_copy(task_id: str, source: Path | None) -> Path | None:
    if source is not None:
        if not source.exists():
            raise SystemExit(f"--source {source} does not exist")
        return source
    for root in data_roots():
        candidate = root / task_id
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def split_files(root: Path, split: str) -> list[str]:
    for pattern in (f"{split}.parquet", f"{split}-*.parquet", f"data/{split}-*.parquet",
                    f"{split}/*.parquet"):
        files = sorted(str(p) for p in root.glob(pattern))
        if files:
            return files
    return []


def load_split(task_id: str, hub_id: str, split: str, source: Path | None = None, config: str | None = None):
    """One split as a `datasets.Dataset`."""
    import datasets

    root = local_copy(task_id, source)
    if root is not None:
        saved = root / split
        if (saved / "dataset_info.json").is_file() or (saved / "state.json").is_file():
            return datasets.load_from_disk(str(saved))
        files = split_files(root, split)
        if files:
            return datasets.load_dataset("parquet", data_files={split: files}, split=split)
        raise SystemExit(f"{root}: no split {split!r} (looked for a save_to_disk folder {split}/ or "
                         f"{split}.parquet, {split}-*.parquet, data/{split}-*.parquet)")
    if not hub_id:
        raise SystemExit(f"task {task_id}: no local copy found on the data path "
                         f"({', '.join(str(r) for r in data_roots())}); import one with "
                         f"`mlgym data import {task_id} PATH`")
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # offline, or the hub refused
        raise SystemExit(f"cannot load {hub_id} split {split!r} from the hub ({type(exc).__name__}: {exc}). "
                         f"Without network, download it elsewhere and run `mlgym data import {task_id} PATH`.") from None


def prepare_args(source_help: str = "a local copy of the data set") -> tuple[argparse.Namespace, dict[str, Any], str]:
    """The common prepare.py arguments (prepare_cli.py) plus `--source PATH`."""
    return common_prepare_args(("--source", {"type": Path, "default": None, "help": source_help}))


def require_columns(splits: dict[str, Any], *columns: str) -> None:
    """Exit with a clear message when a split lacks one of `columns`."""
    for name, ds in splits.items():
        if any(c not in ds.column_names for c in columns):
            wanted = "/".join(repr(c) for c in columns)
            raise SystemExit(f"split {name} lacks the columns {wanted}: {ds.column_names}")
