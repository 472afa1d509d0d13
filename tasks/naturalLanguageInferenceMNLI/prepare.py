"""Fetch MultiNLI and the pretrained BERT, keep the scored split's labels secret.

Data (see _common/hub_data.py): `--source PATH`, a local copy `<data root>/<task id>/`, or
the hub id `params.hub_dataset`. The pretrained model: `<source or local copy>/<model
folder name>/` when present, else `huggingface_hub.snapshot_download(params.base_model)`
(weights as safetensors, config and tokenizer files only).
Public: data/train and data/validation_mismatched (`datasets` folders: premise, hypothesis,
genre, label) and models/<name>/ (the pretrained BERT). Secret: validation_matched.parquet.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))

from hub_data import load_split, local_copy, prepare_args  # noqa: E402

COLUMNS = ["premise", "hypothesis", "genre", "label"]
MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json"]


def fetch_model(repo: str, task_id: str, source: Path | None, dest: Path) -> None:
    name = repo.split("/")[-1]
    root = local_copy(task_id, source)
    if root is not None and (root / name / "config.json").is_file():
        shutil.copytree(root / name, dest, ignore=shutil.ignore_patterns("*.bin", "*.h5", "*.msgpack", "*.ot"))
        return
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo, allow_patterns=MODEL_FILES)
    except Exception as exc:
        raise SystemExit(f"cannot fetch {repo} ({type(exc).__name__}: {exc}); put a copy in "
                         f"<local copy>/{name}/ and run `mlgym data import {task_id} PATH`") from None
    shutil.copytree(path, dest)


def main() -> None:
    a, params, task_id = prepare_args()
    hub = params["hub_dataset"]
    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    a.secret.mkdir(parents=True, exist_ok=True)
    for split in (params["train_split"], params["dev_split"]):
        ds = load_split(task_id, hub, split, a.source)
        ds = ds.filter(lambda r: r["label"] in (0, 1, 2)).select_columns(COLUMNS)
        ds.save_to_disk(str(data / split))
    scored = load_split(task_id, hub, params["eval_split"], a.source)
    scored = scored.filter(lambda r: r["label"] in (0, 1, 2)).select_columns(COLUMNS)
    scored.to_pandas().to_parquet(a.secret / "validation_matched.parquet", index=False)
    fetch_model(params["base_model"], task_id, a.source, a.public / "models" / params["base_model"].split("/")[-1])
    print(f"scored split: {len(scored)} rows")


if __name__ == "__main__":
    main()
