"""Generate the MNIST-1D data with the `mnist1d` package, from a seed the agent never sees.

MNIST-1D (Greydanus & Kobak, 2020; Apache-2.0) builds 1-D signals of length 40 from ten
hand-made digit templates with random padding, translation, scaling, shear and correlated and
i.i.d. noise. The well-known copy uses seed 42, so its test labels are public; this task draws
its own samples with `params.seed` (kept out of the workspace) and splits them into train,
validation (public, labelled) and test (features public, labels secret).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))
from prepare_cli import prepare_args  # noqa: E402


def generate(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = n, seed, 1.0
    data = make_dataset(args)
    return np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"], dtype=np.int64)


def frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(np.round(x, 6), columns=[f"x{i}" for i in range(x.shape[1])])


def main() -> None:
    a, params, _ = prepare_args()
    n_train, n_val, n_test = params["train_size"], params["validation_size"], params["test_size"]
    x, y = generate(int(params["seed"]), n_train + n_val + n_test)
    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    a.secret.mkdir(parents=True, exist_ok=True)
    parts = {"train": slice(0, n_train), "validation": slice(n_train, n_train + n_val),
             "test": slice(n_train + n_val, n_train + n_val + n_test)}
    for name, sl in parts.items():
        df = frame(x[sl])
        if name == "test":
            df.insert(0, "id", np.arange(len(df)))
            df.to_csv(data / "test.csv", index=False)
            pd.DataFrame({"id": np.arange(len(df)), "label": y[sl]}).to_csv(a.secret / "answer.csv", index=False)
        else:
            df["label"] = y[sl]
            df.to_csv(data / f"{name}.csv", index=False)


if __name__ == "__main__":
    main()
