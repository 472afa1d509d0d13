"""Task specs, the registry, the data search path / import / prepare cache, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlgym.tasks import data, registry
from mlgym.tasks.cli import data as data_cli
from mlgym.tasks.cli import tasks as tasks_cli
from mlgym.tasks.spec import TaskSpecError, load_spec

MINE = ["prisonersDilemma", "battleOfSexes", "blotto", "3SATTime", "3SATTimeLite",
        "regressionKaggleHousePrice", "titanicSurvival"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGYM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLGYM_DATA", raising=False)
    return tmp_path / "home"


def copy_task(tmp_path: Path, task_id: str) -> Path:
    dest = tmp_path / "tasks" / task_id
    shutil.copytree(registry.TASKS_ROOT / task_id, dest)
    return dest


def edit(task_dir: Path, old: str, new: str) -> None:
    path = task_dir / "task.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("task_id", MINE)
def test_task_specs_load(task_id):
    task = registry.load_task(task_id)
    assert task.spec.id == task_id
    assert task.spec.priority_metric in task.spec.baseline.scores
    assert (task.dir / task.spec.files.workspace).is_dir()
    assert task.spec.full_description().strip()


def test_suites():
    full = {t.id for t in registry.list_tasks("full")}
    lite = {t.id for t in registry.list_tasks("lite")}
    both = {"prisonersDilemma", "battleOfSexes", "blotto", "regressionKaggleHousePrice", "titanicSurvival"}
    assert both <= full and both <= lite
    assert "3SATTime" in full and "3SATTime" not in lite
    assert "3SATTimeLite" in lite and "3SATTimeLite" not in full


@pytest.mark.parametrize(("old", "new", "field"), [
    ('direction = "max"', 'direction = "up"', "metrics[0].direction"),
    ('name = "House Price', 'nmae = "House Price', "nmae"),
    ('priority_metric = "r2"', 'priority_metric = "accuracy"', "priority_metric"),
    ("timeout_s = 120", 'timeout_s = "slow"', "evaluation.timeout_s"),
    ('sha256 = "1e18', 'sha256 = "XX18', "data[0].sha256"),
    ('submission = "submission.csv"', 'submission = "../escape.csv"', "files.submission"),
    ('entry = "evaluator.py"', 'entry = "missing.py"', "evaluation.entry"),
    ('suites = ["full", "lite"]', 'suites = ["huge"]', "suites[0]"),
    ('scores = { r2 = 0.8799891474739243,', 'scores = { acc = 1.0, r2 = 0.8799891474739243,', "baseline.scores.acc"),
    ('id = "regressionKaggleHousePrice"', 'id = "otherName"', "id"),
    ("[baseline]\n", "[baseline]\ntolerance = { acc = 0.1 }\n", "baseline.tolerance.acc"),
    ("[baseline]\n", "[baseline]\ntolerance = { r2 = -0.1 }\n", "baseline.tolerance.r2"),
])
def test_spec_errors_name_file_and_field(tmp_path, old, new, field):
    task_dir = copy_task(tmp_path, "regressionKaggleHousePrice")
    edit(task_dir, old, new)
    with pytest.raises(TaskSpecError) as err:
        load_spec(task_dir)
    assert err.value.field == field
    assert str(task_dir / "task.toml") in str(err.value)
    assert f"`{field}`" in str(err.value)


def test_baseline_reproduction_tolerance():
    """`mlgym bench tasks` counts a baseline as reproduced within `[baseline] tolerance`
    (relative, per metric), else within float noise."""
    from mlgym.tasks.spec import Baseline

    b = Baseline(scores={"accuracy": 0.66, "Time": 0.9}, tolerance={"Time": 1.0})
    assert b.reproduces({"accuracy": 0.66000001, "Time": 1.7}) == {"accuracy": True, "Time": True}
    assert b.reproduces({"accuracy": 0.6405, "Time": 1.9}) == {"accuracy": False, "Time": False}
    assert b.reproduces({"Time": 0.9}) == {"accuracy": False, "Time": True}  # a metric missing


def test_spec_missing_field_and_bad_toml(tmp_path):
    task_dir = copy_task(tmp_path, "titanicSurvival")
    text = (task_dir / "task.toml").read_text()
    (task_dir / "task.toml").write_text(text.replace('name = "Titanic Survival Prediction"\n', ""))
    with pytest.raises(TaskSpecError, match=r"field `name`: Object missing required field"):
        load_spec(task_dir)
    (task_dir / "task.toml").write_text("id = \n")
    with pytest.raises(TaskSpecError, match=r"task.toml: field `\(syntax\)`"):
        load_spec(task_dir)


def test_secret_may_not_be_in_workspace(tmp_path):
    task_dir = copy_task(tmp_path, "prisonersDilemma")
    edit(task_dir, 'secret = ["secret"]', 'secret = ["workspace/strategy.py"]')
    with pytest.raises(TaskSpecError, match=r"files.secret\[0\]"):
        load_spec(task_dir)


def test_cli_list_show_validate(tmp_path):
    runner = CliRunner()
    res = runner.invoke(tasks_cli, ["list", "--json"])
    rows = {r["id"]: r for r in json.loads(res.output.strip().splitlines()[0])} if res.output.startswith("[") else {}
    assert {"blotto", "3SATTime"} <= set(rows)
    assert rows["3SATTime"]["direction"] == "min"
    res = runner.invoke(tasks_cli, ["list", "--suite", "lite"])
    assert "3SATTimeLite" in res.output and "3SATTime " not in res.output
    res = runner.invoke(tasks_cli, ["show", "titanicSurvival"])
    assert res.exit_code == 0 and "accuracy (max, priority)" in res.output and "## Data" in res.output
    res = runner.invoke(tasks_cli, ["show", "noSuchTask"])
    assert res.exit_code != 0 and "unknown task" in res.output
    for task_id in MINE:
        res = runner.invoke(tasks_cli, ["validate", task_id])
        assert res.exit_code == 0, res.output


def test_cli_validate_reports_broken_spec(tmp_path, monkeypatch):
    root = tmp_path / "tasks"
    copy_task(tmp_path, "blotto")
    edit(root / "blotto", 'direction = "max"', 'direction = "sideways"')
    monkeypatch.setattr(registry, "TASKS_ROOT", root)
    monkeypatch.setattr(registry.task_ids, "__defaults__", (root,))
    monkeypatch.setattr(registry.load_task, "__defaults__", (root,))
    monkeypatch.setattr(registry.list_tasks, "__defaults__", (None, root, False))
    res = CliRunner().invoke(tasks_cli, ["validate"])
    assert res.exit_code == 1
    assert "blotto/task.toml: field `metrics[0].direction`" in res.output


def test_data_search_path_and_sha_check(home, tmp_path, monkeypatch):
    task = registry.load_task("titanicSurvival")
    spec, source = task.spec, task.spec.data[0]
    shipped = task.dir / "data" / "train.csv"
    assert data.sha256_file(shipped) == source.sha256  # the task carries its own data
    assert data.find_data_file(spec, source, task.dir) == shipped
    # without the task folder: a corrupt copy on the user's path is skipped, a good one found
    bad = tmp_path / "data1" / "titanic"
    bad.mkdir(parents=True)
    (bad / "train.csv").write_text("PassengerId\n1\n")
    good = tmp_path / "data2" / "titanicSurvival"
    good.mkdir(parents=True)
    shutil.copy(shipped, good / "train.csv")
    monkeypatch.setenv("MLGYM_DATA", f"{tmp_path / 'data1'}:{tmp_path / 'data2'}")
    assert data.find_data_file(spec, source) == good / "train.csv"
    # nothing anywhere: a clear error naming the file and the import command
    monkeypatch.setattr(data, "data_roots", lambda: [tmp_path / "nowhere"])
    with pytest.raises(data.DataError, match=r"mlgym data import titanicSurvival"):
        data.find_data_file(spec, source)


def test_no_product_code_names_a_shared_folder():
    """Data comes with the tasks or from the user's own roots, never from a folder beside
    the repository that a fresh clone does not have."""
    root = registry.TASKS_ROOT.parent
    offenders = []
    for pkg in ("bus", "env_server", "agents", "tools", "tasks", "mlgym"):
        for path in (root / pkg).rglob("*.py"):
            text = path.read_text()
            if '"shared" / "data"' in text or "../shared" in text or "shared/data" in text:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_data_import_and_prepare_cache(home, tmp_path, monkeypatch):
    shipped = registry.TASKS_ROOT / "regressionKaggleHousePrice" / "data" / "train.csv"
    local = tmp_path / "download"
    local.mkdir()
    shutil.copy(shipped, local / "train.csv")
    (local / "other.csv").write_text("a,b\n1,2\n")
    res = CliRunner().invoke(data_cli, ["import", "regressionKaggleHousePrice", str(local)])
    assert res.exit_code == 0, res.output
    imported = home / "data" / "regressionKaggleHousePrice" / "train.csv"
    assert imported.read_bytes() == shipped.read_bytes()
    # a copy of the task without its shipped data, only the import location on the path:
    # prepare finds the imported copy
    monkeypatch.setattr(data, "data_roots", lambda: [home / "data"])
    shutil.rmtree(copy_task(tmp_path, "regressionKaggleHousePrice") / "data")
    shutil.copytree(registry.COMMON_DIR, tmp_path / "tasks" / "_common")
    task = registry.load_task("regressionKaggleHousePrice", tmp_path / "tasks")
    first = registry.prepare(task)
    assert sorted(p.name for p in (first.public_dir / "data").iterdir()) == ["test.csv", "train.csv", "validation.csv"]
    assert (first.secret_dir / "answer.csv").is_file()
    assert "SalePrice" not in (first.public_dir / "data" / "test.csv").read_text().splitlines()[0]
    stamp = (first.public_dir.parent / "stamp.json").stat().st_mtime_ns
    again = registry.prepare(task)  # cached: nothing rebuilt
    assert again == first and (first.public_dir.parent / "stamp.json").stat().st_mtime_ns == stamp
    # a wrong file is refused by sha256
    res = CliRunner().invoke(data_cli, ["import", "regressionKaggleHousePrice", str(local / "other.csv")])
    assert res.exit_code != 0 and "no file under" in res.output


def test_workspace_never_gets_secrets(home, tmp_path):
    task = registry.load_task("prisonersDilemma")
    prepared = registry.prepare(task)
    assert (prepared.secret_dir / "opponent.py").is_file()
    ws = tmp_path / "ws"
    read_only = registry.populate_workspace(task, prepared, ws)
    assert sorted(p.name for p in ws.iterdir()) == ["evaluate.py", "strategy.py"]
    assert read_only == [ws / "evaluate.py"]
    layout = registry.evaluation_layout(task, prepared, tmp_path / "eval")
    assert (layout.secret_dir / "opponent.py").is_file() and (layout.common_dir / "evalkit.py").is_file()
    assert layout.entry.is_file() and layout.task_dir.parent == layout.common_dir.parent


def test_3sat_lite_shares_the_solver_files():
    """3SATTimeLite is the same task on a smaller instance set: its files must not drift."""
    a, b = registry.TASKS_ROOT / "3SATTime", registry.TASKS_ROOT / "3SATTimeLite"
    for rel in ["workspace/solver.py", "workspace/heuristic.py", "workspace/evaluate.py", "evaluator.py", "prepare.py"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
