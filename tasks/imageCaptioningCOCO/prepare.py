"""Prepare MS-COCO captioning: public training images with captions, test images without.

The original task shipped its own prepared COCO files rather than a hub data set, so the
data comes from a local copy (`--source PATH` or `mlgym data import imageCaptioningCOCO PATH`)
or, if `params.hub_dataset` names one, from the hub (see _common/hub_data.py). Each split
needs an image column (`params.image_column`, a `datasets` Image) and a caption column
(`params.captions_column`, a list of reference strings per image).
Public: data/train (image, captions) and data/test (id, image). Secret: test_captions.json
({"id": [references...]}).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))

from hub_data import load_split, prepare_args, require_columns  # noqa: E402


def main() -> None:
    a, params, task_id = prepare_args()
    image, caps = params["image_column"], params["captions_column"]
    train = load_split(task_id, params["hub_dataset"], params["train_split"], a.source)
    test = load_split(task_id, params["hub_dataset"], params["test_split"], a.source)
    require_columns({"train": train, "test": test}, image, caps)
    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    a.secret.mkdir(parents=True, exist_ok=True)
    train = train.select_columns([image, caps])
    if (image, caps) != ("image", "captions"):
        train = train.rename_columns({image: "image", caps: "captions"})
    train.save_to_disk(str(data / "train"))
    refs = test[caps]
    if any(not isinstance(r, list) or not r or not all(isinstance(c, str) for c in r) for r in refs):
        raise SystemExit(f"test split: every row needs a non-empty list of caption strings in {caps!r}")
    test_pub = test.select_columns([image]).add_column("id", list(range(len(test))))
    if image != "image":
        test_pub = test_pub.rename_column(image, "image")
    test_pub.select_columns(["id", "image"]).save_to_disk(str(data / "test"))
    (a.secret / "test_captions.json").write_text(json.dumps({str(i): r for i, r in enumerate(refs)}))
    print(f"train {len(train)} images, test {len(test)} images")


if __name__ == "__main__":
    main()
