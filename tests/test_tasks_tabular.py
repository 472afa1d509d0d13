"""House price and Titanic: data preparation, baselines reproduced, artefact validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlgym.tasks import registry



@pytest.fixture(scope="module")
def home(tmp_path_factory):
    old = os.environ.get("MLGYM_HOME")
    os.environ["MLGYM_HOME"] = str(tmp_path_factory.mktemp("mlgym-home"))
    yield
    if old is None:
        os.environ.pop("MLGYM_HOME", None)
    else:
        os.environ["MLGYM_HOME"] = old


def setup_task(task_id: str, tmp: Path):
    task = registry.load_task(task_id)
    prepared = registry.prepare(task)  # the data ships in the task folder: nothing to skip
    ws = tmp / "ws"
    registry.populate_workspace(task, prepared, ws)
    return task, prepared, ws


def run_baseline(task, ws: Path) -> Path:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in task.spec.baseline.commands:  # `python` = this venv's, as the task venv's in a sandbox
        subprocess.run(cmd, shell=True, cwd=ws, check=True, capture_output=True, env=env)
    return ws / task.spec.files.submission


def evaluate(task, prepared, submission: Path, tmp: Path, name: str = "e") -> dict:
    work = tmp / name
    work.mkdir()
    return registry.evaluate_unsandboxed(task, prepared, submission, work, python=sys.executable)


@pytest.fixture(scope="module")
def house(home, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("house")
    task, prepared, ws = setup_task("regressionKaggleHousePrice", tmp)
    sub = run_baseline(task, ws)
    return task, prepared, ws, pd.read_csv(sub)


@pytest.fixture(scope="module")
def titanic(home, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("titanic")
    task, prepared, ws = setup_task("titanicSurvival", tmp)
    sub = run_baseline(task, ws)
    return task, prepared, ws, pd.read_csv(sub)


def test_house_split_matches_original(house):
    _, prepared, ws, _ = house
    sizes = {n: len(pd.read_csv(ws / "data" / f"{n}.csv")) for n in ("train", "validation", "test")}
    assert sizes == {"train": 1022, "validation": 146, "test": 292}
    assert "SalePrice" not in pd.read_csv(ws / "data" / "test.csv").columns
    answer = pd.read_csv(prepared.secret_dir / "answer.csv")
    assert list(answer.columns) == ["Id", "SalePrice"] and len(answer) == 292


def test_house_baseline_reproduces_published(house, tmp_path):
    task, prepared, ws, _ = house
    res = evaluate(task, prepared, ws / "submission.csv", tmp_path)
    assert "scores" in res, res
    assert abs(res["scores"]["r2"] - 0.8799891474739243) < 1e-6
    assert abs(res["scores"]["rmse"] - 30340.111853413255) < 1e-3


def write(tmp: Path, frame: pd.DataFrame, name: str = "submission.csv") -> Path:
    path = tmp / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda f: f.rename(columns={"SalePrice": "Price"}), "wrong_columns"),
    (lambda f: f.assign(Extra=1), "wrong_columns"),
    (lambda f: f.iloc[:-3], "wrong_row_count"),
    (lambda f: f.assign(SalePrice=f.SalePrice.where(f.index != 5)), "nan_values"),
    (lambda f: f.assign(SalePrice=f.SalePrice.astype(object).where(f.index != 7, "cheap")), "non_numeric"),
    (lambda f: f.assign(Id=f.Id.where(f.index != 0, 999999)), "wrong_ids"),
    (lambda f: pd.concat([f.iloc[:-1], f.iloc[:1]]), "wrong_ids"),
])
def test_house_bad_submissions(house, tmp_path, mutate, code):
    task, prepared, _, good = house
    res = evaluate(task, prepared, write(tmp_path, mutate(good.copy())), tmp_path)
    assert res.get("error", {}).get("code") == code, res
    assert res["error"]["message"]


def test_house_missing_and_hostile_submissions(house, tmp_path):
    task, prepared, _, _ = house
    res = evaluate(task, prepared, tmp_path / "submission.csv", tmp_path, "missing")
    assert res["error"]["code"] == "missing_submission"
    # a symlink to the secret answer key would score perfectly: refused
    link = tmp_path / "link.csv"
    link.symlink_to(prepared.secret_dir / "answer.csv")
    res = evaluate(task, prepared, link, tmp_path, "link")
    assert res["error"]["code"] == "not_a_regular_file"
    (tmp_path / "garbage.csv").write_bytes(b"\x00\xff\x00 not a csv \n\"unterminated")
    res = evaluate(task, prepared, tmp_path / "garbage.csv", tmp_path, "garbage")
    assert res["error"]["code"] in {"bad_format", "wrong_columns"}


def test_titanic_true_labels_and_gender_baseline(titanic, tmp_path):
    task, prepared, ws, _ = titanic
    report = json.loads((prepared.secret_dir / "match_report.json").read_text())
    assert report["passengers"] == 1309 and report["train_outcomes_agreeing"] == 891
    assert report["test_exact_raw_name"] == 317
    assert sum(report["test_matched_by"].values()) == 418
    answer = pd.read_csv(prepared.secret_dir / "answer.csv")
    test = pd.read_csv(task.dir / "data" / "test.csv")
    fake = (test.Sex == "female").astype(int)  # what MLGym's ground_truth.csv holds
    # the true outcomes are not MLGym's gender-only "ground truth"
    assert (answer.Survived.values != fake.values).sum() > 50
    res = evaluate(task, prepared, ws / "submission.csv", tmp_path)
    assert res["scores"]["accuracy"] == pytest.approx(0.76555, abs=5e-5)
    assert not (ws / "data" / "ground_truth.csv").exists()


def test_titanic_bad_submissions(titanic, tmp_path):
    task, prepared, _, good = titanic
    cases = {
        "wrong_columns": good.rename(columns={"Survived": "survived"}),
        "wrong_row_count": good.iloc[:400],
        "bad_values": good.assign(Survived=good.Survived * 2),
        "nan_values": good.assign(Survived=good.Survived.where(good.index != 3)),
    }
    for code, frame in cases.items():
        res = evaluate(task, prepared, write(tmp_path, frame, f"{code}.csv"), tmp_path, code)
        assert res.get("error", {}).get("code") == code, (code, res)
    perfect = pd.read_csv(prepared.secret_dir / "answer.csv")
    res = evaluate(task, prepared, write(tmp_path, perfect, "perfect.csv"), tmp_path, "perfect")
    assert res["scores"]["accuracy"] == 1.0


@pytest.mark.parametrize("fixture", ["house", "titanic"])
def test_answers_stay_secret(fixture, request, tmp_path):
    """The shipped raw files feed prepare only: the workspace gets public files without the
    test labels, and the evaluation layout holds the answer key but not the raw data."""
    task, prepared, ws, _ = request.getfixturevalue(fixture)
    label = {"house": "SalePrice", "titanic": "Survived"}[fixture]
    in_ws = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*") if p.is_file())
    assert not any("answer" in p or p.startswith("secret") for p in in_ws), in_ws
    assert label not in pd.read_csv(ws / "data" / "test.csv").columns
    answer = (prepared.secret_dir / "answer.csv").read_bytes()
    assert all((ws / p).read_bytes() != answer for p in in_ws)
    layout = registry.evaluation_layout(task, prepared, tmp_path / "eval")
    assert (layout.secret_dir / "answer.csv").read_bytes() == answer
    assert (task.dir / "data").is_dir() and not (layout.task_dir / "data").exists()
    assert (layout.task_dir / task.spec.evaluation.entry).is_file()
