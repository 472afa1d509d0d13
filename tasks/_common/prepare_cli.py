"""The command line `mlgym` gives every task's prepare.py, parsed in one place:

    prepare.py --task-dir DIR --public DIR --secret DIR [--data-file NAME=PATH ...] [extras]

Task scripts import it after putting tasks/_common on sys.path (as they do for the other
helpers here); `extra` adds a script's own options, e.g. ("--wheel", {"type": Path}).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any


def prepare_args(*extra: tuple[str, dict[str, Any]]) -> tuple[argparse.Namespace, dict[str, Any], str]:
    """(args, the task's params, its id), the last two from <task dir>/task.toml. `args.files`
    maps each --data-file NAME to its PATH."""
    p = argparse.ArgumentParser()
    p.add_argument("--task-dir", type=Path, required=True)
    p.add_argument("--public", type=Path, required=True)
    p.add_argument("--secret", type=Path, required=True)
    p.add_argument("--data-file", action="append", default=[], metavar="NAME=PATH",
                   help="a data file the task declares (repeatable)")
    for flag, options in extra:
        p.add_argument(flag, **options)
    a = p.parse_args()
    bad = [item for item in a.data_file if "=" not in item]
    if bad:
        p.error(f"--data-file takes NAME=PATH, got {bad[0]!r}")
    a.files = dict(item.split("=", 1) for item in a.data_file)
    spec = tomllib.loads((a.task_dir / "task.toml").read_text())
    return a, spec["params"], spec["id"]
