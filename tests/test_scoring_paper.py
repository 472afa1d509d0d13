"""MLGym-Bench's published table reproduced from its 624 published runs (tests/data/mlgym_paper):
all 26 AUPs to 3 decimals and all 338 per-task best scores; the bundled paper figures behind
`mlgym score --with-paper`; MLGym's own run folders read as they are."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlgym.tasks import mlgym_results, paper, scoring
from mlgym.tasks.cli import score as score_cli

DATA = Path(__file__).parent / "data" / "mlgym_paper"
RUNS = DATA / "runs.jsonl.gz"

# the published tables name tasks by display name
TASK_NAMES = {
    "House Price": "regressionKaggleHousePrice", "3-SAT": "3SATTime",
    "CIFAR-10": "imageClassificationCifar10", "Fashion MNIST": "imageClassificationFMnist",
    "MS-COCO": "imageCaptioningCOCO", "Language Modeling": "languageModelingFineWeb",
    "MNLI": "naturalLanguageInferenceMNLI", "Battle of Sexes": "battleOfSexes",
    "Prisoners Dilemma": "prisonersDilemma", "Blotto": "blotto", "Breakout": "rlBreakoutMinAtar",
    "Meta Maze": "rlMetaMazeMisc", "Mountain Car Continuous": "rlMountainCarContinuous",
}


def _method(name: str) -> str:
    return scoring.BASELINE if name == "baseline" else name


def published_aup() -> dict[str, tuple[float, float]]:
    with open(DATA / "aup_scores_aggregate_results.csv") as fh:
        return {_method(r["Model"]): (float(r["Best AUP"]), float(r["Last AUP"]))
                for r in csv.DictReader(fh)}


def published_scores(kind: str) -> dict[str, dict[str, float | None]]:
    with open(DATA / f"{kind}_scores_aggregate_results.csv") as fh:
        return {TASK_NAMES[r.pop("Task")]: {_method(m): (float(v) if v else None)
                                           for m, v in r.items()}
                for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def report():
    return scoring.score_runs(scoring.load_results([RUNS]))


def test_runs_are_the_published_set(report):
    assert sum(sum(c.values()) for c in report.runs.values()) == 624
    assert len(report.tasks) == 13 and len(report.methods) == 13  # 12 models + Baseline


def test_all_26_published_aups(report):
    pub = published_aup()
    assert len(pub) == 13
    got = {m: (round(report.profiles["best_attempt"].aup[m], 3),
               round(report.profiles["best_submission"].aup[m], 3)) for m in pub}
    assert got == pub
    # one tau range for both profiles: the bound comes from the Best Attempt ratios
    assert report.tau_max == 1.5
    assert report.profiles["best_attempt"].tau_max == report.profiles["best_submission"].tau_max


def test_all_published_best_scores(report):
    n = 0
    for kind, measure in (("best", "best_attempt"), ("last", "best_submission")):
        for task, row in published_scores(kind).items():
            for method, want in row.items():
                got = report.scores[measure][task][method]
                if want is None:
                    assert got is None, (kind, task, method)
                else:
                    # rounded as the table was written: the models' scores were numpy floats
                    # (np.round: 0.8855 -> 0.886), the baseline a Python float (0.7835 -> 0.783)
                    r = round if method == scoring.BASELINE else np.round
                    assert got is not None and r(got, 3) == want, (kind, task, method, got)
                n += 1
    assert n == 2 * 13 * 13


def test_separate_tau_ranges_would_miss_the_table(report):
    """The published Best Submission AUPs need the shared range: with the Best Submission
    ratios alone the bound gives tau_max 1.2 and every AUP about 0.3 lower."""
    bs = report.profiles["best_submission"]
    assert math.ceil(round(math.log10(max(bs.bounds.values())) * 10, 9)) / 10 == 1.2
    # Blotto: 0.576 / 0.023 = 25.0 -> ceil(1.05 x 25.0) = 27 -> log10 27 = 1.43 -> 1.5
    assert report.profiles["best_attempt"].bounds["blotto"] == 27


def test_bundled_paper_figures_are_the_runs(tmp_path):
    derived = paper.derive(scoring.load_results([RUNS]), paper.load()["published_aup"])
    assert derived == paper.load()
    assert paper.published_aup() == published_aup()


def test_with_paper_alone_reproduces_the_table():
    res = CliRunner().invoke(score_cli, ["--with-paper", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)  # --json: the JSON object alone on stdout
    pub = published_aup()
    assert {m: (rep["profiles"]["best_attempt"]["aup"][m],
                rep["profiles"]["best_submission"]["aup"][m]) for m in pub} == pub


def _mlgym_folder(root: Path, model: str, task: str, k: int, agent: list, status: str) -> Path:
    name = f"{model}__{task}__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents"
    folder = root / f"{name}_run_{k}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"agent": agent,
                                                     "baseline": {"Score": -0.248}}))
    (folder / f"{task}.traj").write_text(json.dumps({"trajectory": [], "history": [],
                                                     "info": {"exit_status": status}}))
    return folder


def test_mlgym_run_folders_are_read_as_they_are(tmp_path):
    root = tmp_path / "trajectories" / "me"
    _mlgym_folder(root, "litellm-my-model", "blotto", 0,
                  [{"Score": 0.1}, {"Score": 0.4}, {"Score": 0.2}], "submitted")
    _mlgym_folder(root, "litellm-my-model", "blotto", 1, [{"Score": 0.3}],
                  "autosubmission (max_steps)")
    _mlgym_folder(root, "litellm-my-model", "blotto", 2, [], "submission_not_found (max_steps)")
    runs = scoring.load_results([tmp_path / "trajectories"])
    assert [r.method for r in runs] == ["litellm-my-model"] * 3
    r0, r1, r2 = runs
    assert r0.task == "blotto" and r0.run_id.endswith("_run_0")
    assert [a.action for a in r0.attempts] == ["validate", "validate", "submit"]
    assert r0.final_submission.scores == {"Score": 0.2} and not r0.final_submission.auto
    assert r1.final_submission.auto and r1.exit_status == "autosubmission (max_steps)"
    assert r2.attempts == [] and r2.final_submission is None
    assert r0.baseline == {"Score": -0.248}
    rep = scoring.score_runs(runs)
    assert rep.scores["best_attempt"]["blotto"]["litellm-my-model"] == 0.4
    assert rep.scores["best_submission"]["blotto"]["litellm-my-model"] == 0.3


def test_mlgym_folder_errors_name_the_file(tmp_path):
    bad = tmp_path / "not-a-run-name"
    bad.mkdir()
    (bad / "results.json").write_text("{}")
    with pytest.raises(scoring.ResultsError, match="not-a-run-name.*MLGym run folder name"):
        scoring.load_results([tmp_path])
    assert mlgym_results.parse_folder_name("m__t__default_run_0") == ("m", "t")


def test_with_paper_ranks_a_user_method_among_the_models(tmp_path):
    root = tmp_path / "mine"
    _mlgym_folder(root, "gpt-o1", "blotto", 0, [{"Score": 0.6}], "submitted")  # a paper name
    out = tmp_path / "out"
    res = CliRunner().invoke(score_cli, [str(root), "--with-paper", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| gpt-o1 (yours) |" in res.stdout and "| gpt-o1 |" in res.stdout
    assert "named like a paper model" in res.stderr and "no runs on 12" in res.stderr
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["methods"]) == 14 and len(rep["tasks"]) == 13
    # its 0.6 on blotto is the new best there: every paper model's blotto ratio moved
    assert rep["scores"]["best_attempt"]["blotto"]["gpt-o1 (yours)"] == 0.6
    assert rep["profiles"]["best_attempt"]["ratios"]["blotto"]["gpt-o1 (yours)"] == 1.0
    assert (out / "profile_best_attempt.svg").read_text().count("gpt-o1 (yours)") >= 1
