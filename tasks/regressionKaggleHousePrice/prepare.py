"""Split Kaggle's House Prices train.csv exactly as MLGym did and keep the test labels secret.

train_test_split(random_state=42): 20% test, then 12.5% of the rest for validation, giving
train 1022 / validation 146 / test 292 rows. Public: data/{train,validation,test}.csv (test
without SalePrice). Secret: answer.csv (Id, SalePrice).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))
from prepare_cli import prepare_args  # noqa: E402


def main() -> None:
    a, params, _ = prepare_args()
    files = a.files

    df = pd.read_csv(files["train.csv"])
    rest, test = train_test_split(df, test_size=params["test_size"], random_state=params["random_state"])
    train, val = train_test_split(rest, test_size=params["validation_size"], random_state=params["random_state"])
    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    train.to_csv(data / "train.csv", index=False)
    val.to_csv(data / "validation.csv", index=False)
    test.drop(columns=["SalePrice"]).to_csv(data / "test.csv", index=False)
    a.secret.mkdir(parents=True, exist_ok=True)
    test[["Id", "SalePrice"]].to_csv(a.secret / "answer.csv", index=False)


if __name__ == "__main__":
    main()
