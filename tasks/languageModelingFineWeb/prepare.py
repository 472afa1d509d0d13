"""Fetch GPT-2-tokenised FineWeb shards (the modded-nanogpt format) for training and scoring.

Each shard is a `.bin` file: a header of 256 int32 (magic 20240520, version 1, token count)
followed by the tokens as uint16. Source: `--source PATH` or a local copy
`<data root>/<task id>/` holding the files (`mlgym data import`), else the hub repository
`params.hub_repo` (a data-set repo) through `huggingface_hub.hf_hub_download`.
Public: data/fineweb10B/fineweb_train_000001.bin ... (`params.train_shards` of them).
Secret: the validation shard(s), scored by the evaluator.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))

from hub_data import local_copy, prepare_args  # noqa: E402


def fetch(name: str, repo: str, task_id: str, source: Path | None) -> Path:
    root = local_copy(task_id, source)
    if root is not None:
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
        raise SystemExit(f"{root}: {name} not found (a local copy must hold the .bin shards)")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, name, subfolder="fineweb10B", repo_type="dataset"))
    except Exception as exc:
        raise SystemExit(f"cannot fetch {name} from {repo} ({type(exc).__name__}: {exc}); without network, "
                         f"copy the shards elsewhere and run `mlgym data import {task_id} PATH`") from None


def main() -> None:
    a, params, task_id = prepare_args("a folder holding the .bin shards")
    out = a.public / "data" / "fineweb10B"
    out.mkdir(parents=True, exist_ok=True)
    a.secret.mkdir(parents=True, exist_ok=True)
    for i in range(1, int(params["train_shards"]) + 1):
        name = f"fineweb_train_{i:06d}.bin"
        shutil.copyfile(fetch(name, params["hub_repo"], task_id, a.source), out / name)
    for name in params["val_shards"]:
        shutil.copyfile(fetch(name, params["hub_repo"], task_id, a.source), a.secret / name)


if __name__ == "__main__":
    main()
