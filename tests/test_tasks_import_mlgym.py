"""`mlgym tasks import-mlgym`: small MLGym-shaped checkouts made here (task and dataset YAML
configs, data folders) become task folders in the user's task folder, which then validate,
run their baseline in a real session (bubblewrap) and score; secret files stay out of the
workspace, read-only files are read-only, baselines come from the config."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import require
from mlgym.tasks import mlgym_import, registry, scoring
from mlgym.tasks.cli import tasks as tasks_cli

HOUSE_EVAL = '''
import argparse
import csv
import json
import math

def evaluate_submission(submission_file):
    truth = [float(r["SalePrice"]) for r in csv.DictReader(open("/home/agent/workspace/data/answer.csv"))]
    pred = [float(r["SalePrice"]) for r in csv.DictReader(open(submission_file))]
    mean = sum(truth) / len(truth)
    sse = sum((t - p) ** 2 for t, p in zip(truth, pred))
    sst = sum((t - mean) ** 2 for t in truth)
    print("evaluating...")
    print(json.dumps({"rmse": math.sqrt(sse / len(truth)), "r2": 1 - sse / sst}))

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--submission_file")
    evaluate_submission(parser.parse_args().submission_file)
'''
HOUSE_BASELINE = '''
import csv
train = [float(r["SalePrice"]) for r in csv.DictReader(open("data/train.csv"))]
test = [r["Id"] for r in csv.DictReader(open("data/test.csv"))]
with open("submission.csv", "w") as f:
    f.write("Id,SalePrice\\n" + "".join(f"{i},{sum(train) / len(train)}\\n" for i in test))
'''
GAME_EVAL = '''
import json
from strategy import row_strategy
from target import target_column_strategy

PAYOFF = [[3, 0], [5, 1]]
history, total = [], 0
for _ in range(10):
    row, col = row_strategy(history), target_column_strategy(history)
    total += PAYOFF[row][col]
    history.append((row, col))
print(json.dumps({"Score": total / 10}))
'''

HOUSE_YAML = """
id: toyHousePrice
name: Toy House Prices
description: |-
  Predict the sale price. This task uses the following dataset(s):
  {dataset_docs}
  SUBMISSION FORMAT: save the predictions to `submission.csv`.
dataset_configs:
- datasets/toyHouse.yaml
task_entrypoint: CSVSubmissionTasks
training_timeout: 600
starter_code:
- data/toyHousePrice/baseline.py
- data/toyHousePrice/evaluate.py
baseline_paths:
- baseline.py
baseline_scores:
- rmse: 8.16496580927726
  r2: 0.0
evaluation_paths:
- evaluate.py
evaluation_read_only: true
secret_files:
- data/answer.csv
"""
DATASET_YAML = """
name: toyHouse
description: |-
  Id: the house; SalePrice: its price
data_path: data/toyHousePrice/data
is_local: true
"""
GAME_YAML = """
id: prisonersDilemmaL1
name: A repeated game
description: Write row_strategy(history) in strategy.py.
task_entrypoint: PythonSubmissionTasks
training_timeout: 300
starter_code:
- data/game/strategy.py
- data/game/target.py
- data/game/evaluate.py
baseline_paths:
- evaluate.py
baseline_scores:
- Score: 3.0
evaluation_paths:
- evaluate.py
evaluation_read_only: true
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


@pytest.fixture
def checkout(tmp_path) -> Path:
    co = tmp_path / "MLGym"
    write(co / "configs/tasks/toyHousePrice.yaml", HOUSE_YAML)
    write(co / "configs/datasets/toyHouse.yaml", DATASET_YAML)
    data = co / "data/toyHousePrice"
    write(data / "evaluate.py", HOUSE_EVAL)
    write(data / "baseline.py", HOUSE_BASELINE)
    write(data / "data/train.csv", "Id,SalePrice\n1,10\n2,30\n")
    write(data / "data/test.csv", "Id\n3\n4\n5\n")
    write(data / "data/answer.csv", "Id,SalePrice\n3,10\n4,20\n5,30\n")
    write(co / "configs/tasks/game.yaml", GAME_YAML)
    write(co / "data/game/strategy.py", "def row_strategy(history):\n    return 0\n")
    write(co / "data/game/target.py", "def target_column_strategy(history):\n    return 0\n")
    write(co / "data/game/evaluate.py", GAME_EVAL)
    # a config whose id is a built-in task's
    write(co / "configs/tasks/blotto.yaml", GAME_YAML.replace("prisonersDilemmaL1", "blotto"))
    return co


@pytest.fixture
def user_tasks(tmp_path, monkeypatch) -> Path:
    from mlgym.env_server import taskenv

    root = tmp_path / "my-tasks"
    monkeypatch.setenv("MLGYM_TASKENV", str(taskenv.path()))  # the real one, if built
    monkeypatch.setenv("MLGYM_TASKS", str(root))
    monkeypatch.setenv("MLGYM_HOME", str(tmp_path / "home"))  # prepared-data cache
    return root


def test_import_makes_valid_task_folders(checkout, user_tasks):
    res = CliRunner().invoke(tasks_cli, ["import-mlgym", str(checkout), "--secret", "target.py"])
    assert res.exit_code == 0, res.output
    assert "imported toyHousePrice" in res.stdout and "imported prisonersDilemmaL1" in res.stdout
    assert "built-in tasks have these ids" in res.stderr and "blotto" in res.stderr
    assert sorted(p.name for p in user_tasks.iterdir()) == ["prisonersDilemmaL1", "toyHousePrice"]
    # the user's task folder is searched by the registry (so list, run and baseline find them)
    assert {"toyHousePrice", "prisonersDilemmaL1", "blotto"} <= set(registry.task_ids())
    listed = CliRunner().invoke(tasks_cli, ["list"])
    assert "toyHousePrice" in listed.stdout and "imported" in listed.stdout
    assert CliRunner().invoke(tasks_cli, ["validate", "toyHousePrice"]).exit_code == 0

    house = registry.load_task("toyHousePrice")
    s = house.spec
    assert house.dir == user_tasks / "toyHousePrice"
    assert s.baseline.scores == {"rmse": 8.16496580927726, "r2": 0.0}
    assert s.baseline.commands == ["python baseline.py"]
    assert [(m.name, m.direction) for m in s.metrics] == [("rmse", "min"), ("r2", "max")]
    assert s.priority_metric == "rmse"  # the first one: the config does not say
    assert s.files.read_only == ["data", "evaluate.py"] and s.files.secret == ["secret"]
    assert s.files.submission == "submission.csv" and s.suites == ["imported"]
    assert "TOYHOUSE:\nId: the house; SalePrice: its price" in s.description  # MLGym's docs
    ws = house.dir / "workspace"
    assert sorted(str(p.relative_to(ws)) for p in ws.rglob("*") if p.is_file()) == [
        "baseline.py", "data/test.csv", "data/train.csv", "evaluate.py"]
    assert (house.dir / "secret/data/answer.csv").is_file()  # kept from the agent

    game = registry.load_task("prisonersDilemmaL1").spec
    assert (game.priority_metric, game.priority.direction) == ("Score", "max")  # as ours
    assert game.baseline.commands == []  # its baseline path is the evaluation script
    assert (game.files.submission, game.files.submission_kind) == (".", "dir")
    assert not (user_tasks / "prisonersDilemmaL1/workspace/target.py").exists()
    assert (user_tasks / "prisonersDilemmaL1/secret/target.py").is_file()


def test_import_options_and_errors(checkout, user_tasks):
    run = CliRunner().invoke
    res = run(tasks_cli, ["import-mlgym", str(checkout), "toyHousePrice", "--metric", "r2"])
    assert res.exit_code == 0, res.output
    assert registry.load_task("toyHousePrice").spec.priority_metric == "r2"
    res = run(tasks_cli, ["import-mlgym", str(checkout), "toyHousePrice"])
    assert res.exit_code == 1 and "exists; use --force" in res.stderr
    res = run(tasks_cli, ["import-mlgym", str(checkout), "blotto"])
    assert res.exit_code == 1 and "is a built-in task; import with --prefix" in res.stderr
    res = run(tasks_cli, ["import-mlgym", str(checkout), "blotto", "--prefix", "mlgym_"])
    assert res.exit_code == 0 and registry.load_task("mlgym_blotto").dir.parent == user_tasks
    assert registry.load_task("blotto").dir.parent == registry.TASKS_ROOT  # built-in wins
    res = run(tasks_cli, ["import-mlgym", str(checkout), "nothing"])
    assert res.exit_code == 1 and "no task config with id nothing" in res.output
    cfg = checkout / "configs/tasks/toyHousePrice.yaml"
    cfg.write_text(cfg.read_text().replace("rmse: 8.16496580927726\n  r2: 0.0", "{}"))
    with pytest.raises(mlgym_import.MlgymImportError, match="no baseline_scores"):
        mlgym_import.import_task(checkout, cfg, user_tasks, force=True)
    cfg.write_text(HOUSE_YAML.replace("CSVSubmissionTasks", "BaseMLTask"))
    with pytest.raises(mlgym_import.MlgymImportError, match="unknown task_entrypoint 'BaseMLTask'"):
        mlgym_import.import_task(checkout, cfg, user_tasks, force=True)
    shutil.rmtree(checkout / "data/toyHousePrice/data")
    cfg.write_text(HOUSE_YAML)
    with pytest.raises(mlgym_import.MlgymImportError, match="data_path .* not found"):
        mlgym_import.import_task(checkout, cfg, user_tasks, force=True)
    assert registry.load_task("toyHousePrice").spec.priority_metric == "r2"  # left as it was


async def test_imported_tasks_run_their_baseline_and_score(checkout, user_tasks, tmp_path):
    require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")
    from mlgym.bus import protocol as p
    from mlgym.env_server.commands import embedded_server, run_baseline

    res = CliRunner().invoke(tasks_cli, ["import-mlgym", str(checkout), "--secret", "target.py"])
    assert res.exit_code == 0, res.output
    house = await run_baseline("toyHousePrice", root=tmp_path)
    assert house["scores"] == pytest.approx({"rmse": 8.16496580927726, "r2": 0.0})
    game = await run_baseline("prisonersDilemmaL1", root=tmp_path)
    assert game["scores"] == {"Score": 3.0}

    # what the agent sees: no secret, read-only files refused, MLGym's texts
    async with embedded_server(tmp_path / "srv", "local") as client:
        opened = await client.request("env", p.SessionOpen(task="toyHousePrice"), timeout=300)
        assert "TOYHOUSE:" in opened.observation
        sid = opened.info.session

        async def act(cmd: str) -> p.Observation:
            return await client.request("env", p.Act(session=sid, command=cmd, token=opened.token),
                                        timeout=300)

        assert "answer.csv" not in (await act("ls -R")).output
        assert (await act("echo x >> evaluate.py")).exit_code != 0
        assert (await act("echo x >> data/test.csv")).exit_code != 0
        obs = await act("validate")
        assert obs.output.startswith("Submission artefact not found.")
        await act("printf 'Id,SalePrice\\n3,10\\n4,22\\n5,20\\n' > submission.csv")
        obs = await act("validate")
        assert obs.scores["r2"] == pytest.approx(1 - (0 + 4 + 100) / 200)
        assert obs.output.startswith("Your code produced a valid submission artefact at "
                                     "/home/agent/workspace/submission.csv.\nBaseline Score: ")

    # and the runs score on the task's own metric and baseline
    run = {"task": "toyHousePrice", "method": "me", "run_id": "r1",
           "attempts": [{"step": 3, "action": "validate", "scores": obs.scores}],
           "final_submission": {"step": 9, "scores": obs.scores}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run))
    rep = scoring.score_runs(scoring.load_results([path]))
    assert rep.tasks["toyHousePrice"].metric == "rmse" and rep.tasks["toyHousePrice"].baseline > 8
    assert rep.scores["best_attempt"]["toyHousePrice"]["me"] == pytest.approx(obs.scores["rmse"])
