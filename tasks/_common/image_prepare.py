"""Shared prepare step of the image-classification tasks (CIFAR-10, Fashion-MNIST): fetch the
data set and split it into public files and secret labels.

Source (see hub_data.py): `--source PATH`, a local copy `<data root>/<task id>/`
(`mlgym data import`), or the Hugging Face hub id `params.hub_dataset`. Public:
data/train (images and labels) and data/test (images only), both `datasets.save_to_disk`
folders. Secret: test_labels.csv (`label`, in test order).
"""

from __future__ import annotations

from hub_data import load_split, prepare_args, require_columns


def main() -> None:
    a, params, task_id = prepare_args()
    image, label = params["image_column"], params["label_column"]
    train = load_split(task_id, params["hub_dataset"], params["train_split"], a.source)
    test = load_split(task_id, params["hub_dataset"], params["test_split"], a.source)
    require_columns({"train": train, "test": test}, image, label)
    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    a.secret.mkdir(parents=True, exist_ok=True)
    train.select_columns([image, label]).save_to_disk(str(data / "train"))
    test.select_columns([image]).save_to_disk(str(data / "test"))
    labels = test.select_columns([label]).to_pandas()[label].astype(int)
    labels.to_frame("label").to_csv(a.secret / "test_labels.csv", index=False)
    print(f"train {len(train)} rows, test {len(test)} rows")

