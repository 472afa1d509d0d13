"""Performance profiles and AUP against values computed by hand (independently of the code),
with an infeasible method, a missing score, a lower-is-better metric and the baseline as a
method; results loading; the `mlgym score` command and its files."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from mlgym.tasks import scoring
from mlgym.tasks.cli import score as score_cli


def run(task, method, run_id, attempts=(), final=None, metric=None, baseline=None):
    out = {"task": task, "method": method, "run_id": run_id, "exit_status": "submitted",
           "attempts": [{"step": i + 1, "action": "validate", "scores": s} for i, s in enumerate(attempts)],
           "final_submission": None if final is None else {"step": 50, "scores": final}}
    if metric:
        out["metric"] = {"name": metric[0], "direction": metric[1]}
    if baseline is not None:
        out["baseline"] = baseline
    return out


# Three unregistered tasks (metric and measured baseline come from the runs):
#   A: acc, max, baseline 1.0;  X: 2.0, Y: 1.6
#   B: loss, min, baseline 10;  X: 5, Y: no score at all (missing)
#   C: acc, max, baseline 0.5;  X: 0.4 (worse than the baseline), Y: 0.8
def example_runs():
    A, B, C = ("acc", "max"), ("loss", "min"), ("acc", "max")
    return [
        run("A", "X", "a1", [{"acc": 1.2}, {"acc": 2.0}], {"acc": 1.5}, A, {"acc": 1.0}),
        run("A", "X", "a2", [{"acc": 1.1}], {"acc": 1.9}, A, {"acc": 1.0}),
        run("A", "Y", "a3", [{"acc": 1.6}], {"acc": 1.6}, A, {"acc": 1.0}),
        run("B", "X", "b1", [{"loss": 7.0}, {"loss": 5.0}], {"loss": 6.0}, B, {"loss": 10.0}),
        run("B", "Y", "b2", [], None, B, {"loss": 10.0}),
        run("C", "X", "c1", [{"acc": 0.4}], {"acc": 0.4}, C, {"acc": 0.5}),
        run("C", "Y", "c2", [{"acc": 0.8}], {"acc": 0.7}, C, {"acc": 0.5}),
    ]


def load(tmp_path, runs):
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in runs) + "\n")
    return scoring.load_results([path])


def test_best_attempt_and_best_submission(tmp_path):
    rep = scoring.score_runs(load(tmp_path, example_runs()))
    ba, bs = rep.scores["best_attempt"], rep.scores["best_submission"]
    assert ba["A"] == {"X": 2.0, "Y": 1.6, "Baseline": 1.0}
    assert bs["A"] == {"X": 1.9, "Y": 1.6, "Baseline": 1.0}  # best final submission over X's 2 runs
    assert ba["B"] == {"X": 5.0, "Y": None, "Baseline": 10.0}  # lower is better
    assert bs["B"] == {"X": 6.0, "Y": None, "Baseline": 10.0}
    assert rep.runs["A"] == {"X": 2, "Y": 1, "Baseline": 0}


def test_profile_and_aup_by_hand(tmp_path):
    p = scoring.score_runs(load(tmp_path, example_runs())).profiles["best_attempt"]
    # ratios by hand: A best 2.0 -> X 1, Y 2/1.6 = 1.25, Baseline 2/1 = 2
    #                 B best 5 (min) -> X 1, Baseline 10/5 = 2, Y infeasible -> 1.05 * 2 = 2.1
    #                 C best 0.8 -> Y 1, Baseline 0.8/0.5 = 1.6, X infeasible -> 1.05 * 1.6 = 1.68
    expect = {"A": {"X": 1.0, "Y": 1.25, "Baseline": 2.0},
              "B": {"X": 1.0, "Y": 2.1, "Baseline": 2.0},
              "C": {"X": 1.68, "Y": 1.0, "Baseline": 1.6}}
    for t, row in expect.items():
        for m, r in row.items():
            assert p.ratios[t][m] == pytest.approx(r, rel=1e-12), (t, m)
    assert p.feasible["C"] == {"X": False, "Y": True, "Baseline": True}
    assert p.feasible["B"]["Y"] is False
    # tau_max: ceil(1.05 * worst) per task = ceil(2.1) = 3, ceil(2.205) = 3, ceil(1.764) = 2;
    # log10(3) = 0.477 -> rounded up to one decimal: 0.5
    assert p.tau_max == 0.5
    assert len(p.tau) == 500 and p.tau[0] == 0 and p.tau[-1] == 0.5
    # AUP = sum_{i=0}^{498} d * rho(tau_i), d = 0.5/499, rho = (1/3) * #tasks with log10 r <= tau_i.
    # Task t counts for every i with i*d >= l_t: that is 499 - ceil(l_t / d) values of i.
    d = 0.5 / 499
    logs = {"X": [0.0, 0.0, math.log10(1.68)], "Y": [math.log10(1.25), math.log10(2.1), 0.0],
            "Baseline": [math.log10(2.0), math.log10(2.0), math.log10(1.6)]}
    for m, ls in logs.items():
        hand = d / 3 * sum(499 - math.ceil(lt / d) for lt in ls)
        assert p.aup[m] == pytest.approx(hand, abs=1e-12), m
    # and the rough continuous values, (1/3) * sum (tau_max - l_t), to 3 decimals
    assert round(p.aup["X"], 2) == 0.42 and round(p.aup["Y"], 2) == 0.36 and round(p.aup["Baseline"], 2) == 0.23


def test_negative_scores_are_infeasible_and_empty_tasks_excluded(tmp_path):
    runs = [run("G", "X", "1", [{"Score": 0.3}], {"Score": 0.3}, ("Score", "max"), {"Score": -0.25}),
            run("G", "Y", "2", [{"Score": -0.1}], {"Score": -0.1}, ("Score", "max"), {"Score": -0.25}),
            run("H", "X", "3", [{"Score": -1.0}], None, ("Score", "max"), {"Score": -0.5})]
    rep = scoring.score_runs(load(tmp_path, runs))
    p = rep.profiles["best_attempt"]
    # G: only X is feasible (Y and the baseline are negative) -> both get 1.05 * 1
    assert p.ratios["G"] == {"X": 1.0, "Y": pytest.approx(1.05), "Baseline": pytest.approx(1.05)}
    assert p.excluded == ["H"] and p.tasks == ["G"]


def test_paper_like_scale(tmp_path):
    """13 tasks, baseline and two methods improving it by typical margins, one task where a
    method fails: tau_max and AUPs land on the paper's scale and the baseline is scored like
    any method (its AUP comes from its own ratios)."""
    runs = []
    for i in range(13):
        base = 1.0 + i
        metric = ("m", "max")
        runs.append(run(f"T{i}", "strong", f"s{i}", [{"m": base * 1.25}], {"m": base * 1.2}, metric, {"m": base}))
        weak = base * 1.05 if i != 5 else base * 0.9  # worse than the baseline on T5: infeasible
        runs.append(run(f"T{i}", "weak", f"w{i}", [{"m": weak}], {"m": weak}, metric, {"m": base}))
    # one task where the best is 28x the baseline: tau_max = ceil1(log10(ceil(1.05 * 28 * 1.05)))
    runs.append(run("T13", "strong", "s13", [{"m": 28.0}], {"m": 28.0}, ("m", "max"), {"m": 1.0}))
    runs.append(run("T13", "weak", "w13", [{"m": 2.0}], {"m": 2.0}, ("m", "max"), {"m": 1.0}))
    p = scoring.score_runs(load(tmp_path, runs)).profiles["best_attempt"]
    # worst ratio on T13 is the baseline's 28 -> ceil(29.4) = 30 -> log10 30 = 1.477 -> 1.5
    assert p.tau_max == 1.5
    aup = p.aup
    assert 0 < aup["Baseline"] < aup["weak"] < aup["strong"] <= 1.5
    assert 1.1 < aup["Baseline"] < 1.5 and aup["strong"] > 1.4


def test_results_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "A", "method": "X"}))
    with pytest.raises(scoring.ResultsError, match="run_id"):
        scoring.load_results([bad])
    bad.write_text(json.dumps({"task": "A", "method": "Baseline", "run_id": "1"}))
    with pytest.raises(scoring.ResultsError, match="reserved"):
        scoring.load_results([bad])
    bad.write_text("{oops")
    with pytest.raises(scoring.ResultsError, match="not JSON"):
        scoring.load_results([bad])
    unknown = tmp_path / "u.json"
    unknown.write_text(json.dumps(run("NotATask", "X", "1", [{"a": 1.0}])))
    with pytest.raises(scoring.ResultsError, match="not registered"):
        scoring.score_runs(scoring.load_results([unknown]))


def test_registered_task_uses_spec_metric_and_baseline(tmp_path):
    runs = [run("3SATTime", "X", "1", [{"Time": 12.0}], {"Time": 14.0}, baseline={"Time": 20.0}),
            run("prisonersDilemma", "X", "2", [{"Score": 2.5}], {"Score": 2.5})]
    rep = scoring.score_runs(load(tmp_path, runs))
    assert rep.tasks["3SATTime"].direction == "min" and rep.tasks["3SATTime"].baseline == 16.158
    rep = scoring.score_runs(load(tmp_path, runs), baseline_source="measured")
    assert rep.tasks["3SATTime"].baseline == 20.0  # measured in the run's own set-up
    assert rep.tasks["prisonersDilemma"].baseline == pytest.approx(2.3716301918029785)


def test_score_cli_writes_tables_and_plots(tmp_path):
    folder = tmp_path / "runs"
    for i, r in enumerate(example_runs()):
        (folder / f"run{i}").mkdir(parents=True)
        (folder / f"run{i}" / "result.json").write_text(json.dumps(r))
    (folder / "run0" / "trajectory.json").write_text("[not a result]")  # ignored: not a result file
    out = tmp_path / "out"
    res = CliRunner().invoke(score_cli, [str(folder), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    last = json.loads(res.stdout)  # --json: the JSON object alone on stdout
    assert last["profiles"]["best_attempt"]["tau_max"] == 0.5
    assert last["profiles"]["best_attempt"]["aup"]["X"] == round(last["profiles"]["best_attempt"]["aup_exact"]["X"], 3)
    assert "wrote" in res.stderr
    md = CliRunner().invoke(score_cli, [str(folder)])
    assert "| X |" in md.stdout and md.stdout.startswith("## Scores")
    for name in ["scores.csv", "ratios.csv", "aup.csv", "report.md", "report.json",
                 "profile_best_attempt.png", "profile_best_attempt.svg", "profile_best_submission.png",
                 "profile_best_submission.svg"]:
        assert (out / name).stat().st_size > 0, name
    assert (out / "profile_best_attempt.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (out / "profile_best_attempt.svg").read_text()[:500]


def test_one_tau_range_for_both_profiles(tmp_path):
    """The bound is taken over the Best Attempt and the Best Submission ratios together."""
    runs = [run("A", "X", "1", [{"acc": 30.0}], {"acc": 2.0}, ("acc", "max"), {"acc": 1.0})]
    rep = scoring.score_runs(load(tmp_path, runs))
    ba, bs = rep.profiles["best_attempt"], rep.profiles["best_submission"]
    # best attempt: baseline ratio 30 -> ceil(1.05 * 30) = 32; best submission: 2 -> ceil(2.1) = 3
    assert ba.bounds == {"A": 32} and bs.bounds == {"A": 3}
    assert rep.tau_max == ba.tau_max == bs.tau_max == 1.6  # log10 32 = 1.505
    # Best Submission: X at 0 from tau 0, the baseline from log10 2 on (d = 1.6 / 499)
    d = 1.6 / 499
    assert bs.aup["X"] == pytest.approx(1.6, abs=1e-12)
    assert bs.aup["Baseline"] == pytest.approx(d * (499 - math.ceil(math.log10(2) / d)), abs=1e-12)


def test_epsilon_sets_the_penalty_and_the_bound(tmp_path):
    rep = scoring.score_runs(load(tmp_path, example_runs()), epsilon=0.5)
    p = rep.profiles["best_attempt"]
    assert p.ratios["B"]["Y"] == pytest.approx(1.5 * 2.0)  # infeasible: (1 + eps) * worst
    # bounds ceil(1.5 * worst feasible): A 2 -> 3, B 2 -> 3, C 1.6 -> 3; tau_max = ceil1(log10 3)
    assert p.bounds == {"A": 3, "B": 3, "C": 3} and rep.tau_max == 0.5
    rep = scoring.score_runs(load(tmp_path, example_runs()), epsilon=5.0)
    assert rep.profiles["best_attempt"].bounds["A"] == 12 and rep.tau_max == 1.1


def test_zero_scores_are_scored_not_crashed(tmp_path):
    """A feasible 0 makes a ratio divide by zero (blotto 0.0 with a negative baseline; a time
    of 0.0 as the best on a lower-is-better task): that ratio gets the infeasible one."""
    runs = [run("blotto", "X", "1", [{"Score": 0.0}], {"Score": 0.0}),
            run("blotto", "Y", "2", [{"Score": 0.5}], {"Score": 0.5}),
            run("3SATTime", "X", "3", [{"Time": 0.0}], {"Time": 0.0}),
            run("3SATTime", "Y", "4", [{"Time": 12.0}], {"Time": 12.0})]
    rep = scoring.score_runs(load(tmp_path, runs))
    p = rep.profiles["best_attempt"]
    # blotto: best 0.5; X would be 0.5 / 0 -> 1.05 * worst finite (Y's 1.0); baseline negative
    assert p.ratios["blotto"] == {"X": pytest.approx(1.05), "Y": 1.0, "Baseline": pytest.approx(1.05)}
    # 3SAT: best 0.0 (X, ratio 1); Y and the baseline divide by 0 -> 1.05 * 1
    assert p.ratios["3SATTime"] == {"X": 1.0, "Y": pytest.approx(1.05), "Baseline": pytest.approx(1.05)}
    assert any("blotto: X scored 0" in n for n in rep.notes)
    assert any("3SATTime: Y scored 12" in n for n in rep.notes)
    res = CliRunner().invoke(score_cli, [str(tmp_path / "runs.jsonl")])
    assert res.exit_code == 0 and "divides by zero" in res.stderr, res.output


def test_duplicate_run_ids(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in example_runs()) + "\n")
    notes: list[str] = []
    runs = scoring.load_results([path, path], notes)  # the same file passed twice
    assert len(runs) == len(example_runs())
    assert len(notes) == len(example_runs()) and f"{path}:1 and {path}:1" in notes[0]
    other = tmp_path / "other.json"
    changed = example_runs()[0]
    changed["attempts"][0]["scores"]["acc"] = 9.0
    other.write_text(json.dumps(changed))
    with pytest.raises(scoring.ResultsError, match=f"'a1' appears twice with different contents: {path}:1 and {other}"):
        scoring.load_results([path, other])


def test_metric_conflicts_are_noted(tmp_path):
    runs = [run("3SATTime", "X", "r1", [{"Time": 12.0}], {"Time": 14.0}, metric=("Time", "max")),
            run("Z", "X", "r2", [{"a": 1.0}], {"a": 1.0}, ("a", "max"), {"a": 0.5}),
            run("Z", "Y", "r3", [{"b": 1.0}], {"b": 1.0}, ("b", "min"), {"a": 0.5})]
    notes: list[str] = []
    rep = scoring.score_runs(load(tmp_path, runs), notes=notes)
    assert rep.tasks["3SATTime"].direction == "min"  # the spec wins
    assert any("run r1 (3SATTime) names the metric Time (max); Time (min) from the task spec" in n for n in notes)
    assert any("run r3 (Z) names the metric b (min); a (max) from run r2" in n for n in notes)


def test_method_styles_stay_distinct():
    from mlgym.tasks.score_report import method_styles

    methods = [f"m{i}" for i in range(48)] + [scoring.BASELINE]
    st = method_styles(methods)
    triples = {(s["color"], str(s["linestyle"]), s["marker"]) for m, s in st.items()}
    assert len(triples) == 49
    assert len({(st[m]["color"], str(st[m]["linestyle"])) for m in methods[:48]}) == 48
    assert len({st[m]["color"] for m in methods[:12]}) == 12  # the paper's 12 models: 12 colours
    assert st[scoring.BASELINE]["color"] == "black"


def test_a_run_folder_gives_its_own_result_only(tmp_path):
    """Scoring a folder of run folders reads each run's result.json and nothing below it: a
    session's exported workspace (agent-written) holding a forged `*.result.json`, and the
    server's session journals, are not results."""
    runs = tmp_path / "runs"
    real = runs / "r1"
    workspace = real / "env" / "sessions" / "s0001-x" / "workspace"
    workspace.mkdir(parents=True)
    (real / "run.json").write_text("{}")
    (real / "result.json").write_text(json.dumps(run("A", "X", "r1", [{"acc": 1.2}], {"acc": 1.2},
                                                     ("acc", "max"), {"acc": 1.0})))
    forged = run("A", "X", "forged", [{"acc": 99.0}], {"acc": 99.0}, ("acc", "max"), {"acc": 1.0})
    (workspace / "forged.result.json").write_text(json.dumps(forged))
    (workspace.parent / "session.jsonl").write_text('{"id": "s0001-x"}\n')
    loose = tmp_path / "runs" / "extra.result.json"  # beside run folders: still read
    loose.write_text(json.dumps(run("A", "Y", "y1", [{"acc": 1.1}], {"acc": 1.1}, ("acc", "max"),
                                    {"acc": 1.0})))
    got = scoring.load_results([runs])
    assert sorted(r.run_id for r in got) == ["r1", "y1"]
