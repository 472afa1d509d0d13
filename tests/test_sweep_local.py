"""Real sweeps with the local executor: `mlgym sweep run` as a subprocess driving real `mlgym run`
subprocesses (broker, environment server, agents) on the scripted backend, or on local servers
speaking the OpenAI protocol that fail. Skipping what is done, a clean SIGINT and a resume that
repeats no finished run, a killed run retried, a model outage retried and a refused key not,
the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_agents_openai import scripted_openai
from test_llm_fakehttp import FakeServer, Seen
from test_llm_openai import err

MLGYM = [sys.executable, "-m", "mlgym.cli"]


def sweep_file(tmp_path: Path, body: str, name: str = "sweep.toml") -> Path:
    f = tmp_path / name
    f.write_text(f'name = "t"\nout = "{tmp_path / "out"}"\n{body}\n[env]\nMLGYM_OFFLINE = "1"\n')
    return f


def mlgym(*args: str | Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*MLGYM, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})


def journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]


def of(recs: list[dict], run: str, event: str) -> list[dict]:
    return [r for r in recs if r.get("run") == run and r["event"] == event]


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


PD = "prisonersDilemma.single.scripted-auto.s0.r0"
BOS = "battleOfSexes.single.scripted-auto.s0.r0"
BLOTTO = "blotto.single.scripted-auto.s0.r0"


@pytest.mark.timeout(600)
def test_a_local_sweep_runs_its_grid_at_once_reports_and_skips_what_is_done(tmp_path):
    f = sweep_file(tmp_path, 'tasks = ["prisonersDilemma", "battleOfSexes"]\ndesigns = ["single"]\nconcurrency = 2')
    out = tmp_path / "out"
    r = mlgym("sweep", "run", f, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["runs"], summary["done"], summary["failed"], summary["remaining"]) == (2, 2, 0, 0)
    assert summary["report"] == str(out / "report" / "report.md")
    recs = journal(out)
    # both ran at once: the second started before the first ended
    assert [r["event"] for r in recs if r.get("run")] == ["start", "start", "end", "end"]
    for run in (PD, BOS):
        (end,) = of(recs, run, "end")
        assert (end["outcome"], end["reason"], end["kind"]) == ("done", "submitted", "fresh")
        assert f"done  {run} #1 · score {end['score']:.4g}" in r.stderr
        result = json.loads((out / "runs" / run / "result.json").read_text())
        assert result["final_submission"]["scores"]["Score"] == end["score"]
        assert json.loads((out / "runs" / run / "run.json").read_text())["seed"] == 0
    # the report: MLGym-Bench's shape, a column per design x model set, AUP, plots
    md = (out / "report" / "report.md").read_text()
    assert "| task | metric | single/scripted-auto | Baseline |" in md
    assert "## AUP" in md and "## Spread over seeds and repeats" in md
    for p in ("scores_by_task.png", "score/profile_best_attempt.png", "score/scores.csv"):
        assert (out / "report" / p).stat().st_size > 0
    lines = (out / "report" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["sweep_run"] for x in lines) == sorted([PD, BOS])
    scored = mlgym("score", out / "report" / "results.jsonl", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout.strip().splitlines()[-1])["methods"] == ["single/scripted-auto", "Baseline"]

    # again (by the sweep folder this time) runs nothing
    again = mlgym("sweep", "run", out, "--json", "--no-report")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 2
    assert len([x for x in journal(out) if x["event"] == "start"]) == 2

    # a sweep file that now shapes its runs differently is refused, not mixed in
    f.write_text(f.read_text() + "[budget]\nsteps = 20\n")
    changed = mlgym("sweep", "run", f)
    assert changed.returncode == 1
    assert "2 run(s) were made with other settings" in changed.stderr
    assert mlgym("sweep", "run", f, "--force", "--no-report").returncode == 0

    rep = mlgym("sweep", "report", out, "--json")
    assert rep.returncode == 0, rep.stderr
    line = json.loads(rep.stdout.strip().splitlines()[-1])
    assert (line["runs"], line["done"], line["failed"]) == (2, 2, 0)
    assert set(line["aup"]["best_attempt"]) == {"single/scripted-auto", "Baseline"}
    status = mlgym("sweep", "status", out)
    assert status.stdout.strip().splitlines()[-1] == "done 2"


@pytest.mark.timeout(900)
def test_sigint_stops_cleanly_and_the_same_command_resumes_without_repeating_a_finished_run(tmp_path):
    f = sweep_file(tmp_path, 'tasks = ["prisonersDilemma", "battleOfSexes", "blotto"]\ndesigns = ["single"]\n'
                             "concurrency = 2")
    out = tmp_path / "out"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([*MLGYM, "sweep", "run", str(f), "--no-report"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def state(run: str) -> str:
            try:
                return json.loads((out / "runs" / run / "run.json").read_text())["status"]
            except (OSError, ValueError, KeyError):
                return ""

        wait_for(lambda: (out / "journal.jsonl").exists() and any(
            x["event"] == "end" for x in journal(out)), 300, "a run to finish", proc)
        wait_for(lambda: state(BLOTTO) == "running", 120, "the third run to run", proc)
        # one driver per sweep folder
        second = mlgym("sweep", "run", f)
        assert second.returncode == 1 and "another mlgym sweep is running on this folder" in second.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(240) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    first = (tmp_path / "first.log").read_text()
    assert "stopped; go on with: mlgym sweep run" in first
    ends = {x["run"]: x["outcome"] for x in journal(out) if x["event"] == "end"}
    finished = [r for r, o in ends.items() if o == "done"]
    stopped = [r for r, o in ends.items() if o == "interrupted"]
    assert finished and BLOTTO in stopped and sorted(finished + stopped) == sorted([PD, BOS, BLOTTO])
    for run in stopped:
        assert state(run) == "stopped"  # the run saved its state, as after a Ctrl-C

    again = mlgym("sweep", "run", f, "--json", "--no-report", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["skipped"]) == (3, len(finished))
    recs = journal(out)
    for run in finished:
        assert len(of(recs, run, "start")) == 1  # a finished run is not repeated
    for run in stopped:
        starts = of(recs, run, "start")
        assert [(s["attempt"], s["kind"]) for s in starts] == [(1, "fresh"), (2, "resume")]
        assert of(recs, run, "end")[-1]["outcome"] == "done"


@pytest.mark.timeout(600)
def test_a_killed_run_is_an_infrastructure_failure_and_the_next_attempt_resumes_it(tmp_path):
    f = sweep_file(tmp_path, 'tasks = ["battleOfSexes"]\ndesigns = ["default"]\n[retry]\nbackoff_s = 0')
    out = tmp_path / "out"
    run_dir = out / "runs" / "battleOfSexes.default.scripted-auto.s0.r0"
    proc = subprocess.Popen([*MLGYM, "sweep", "run", str(f), "--json", "--no-report"], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "sweep.log", "w"), text=True)
    try:
        def running() -> bool:
            try:
                return json.loads((run_dir / "run.json").read_text())["status"] == "running"
            except (OSError, ValueError, KeyError):
                return False

        wait_for(running, 240, "the run to run", proc)
        time.sleep(2)
        supervisor = json.loads((run_dir / "pids.json").read_text())["supervisor"]
        os.kill(supervisor, signal.SIGKILL)  # the run's own process dies, as on an OOM kill
        stdout, _ = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1])["retries"] == 1
    recs = journal(out)
    ends = [x for x in recs if x["event"] == "end"]
    assert (ends[0]["outcome"], ends[0]["reason"], ends[0]["returncode"]) == ("infra", "killed", -9)
    starts = [x for x in recs if x["event"] == "start"]
    assert [(s["attempt"], s["kind"]) for s in starts] == [(1, "fresh"), (2, "resume")]
    assert ends[-1]["outcome"] == "done"
    assert json.loads((run_dir / "result.json").read_text())["final_submission"]["scores"]["Score"] is not None


@pytest.mark.timeout(600)
def test_a_model_outage_is_retried_and_a_refused_key_is_not(tmp_path):
    calls = {"n": 0}
    play = scripted_openai("battleOfSexes")

    def flaky_answer(seen: Seen):
        calls["n"] += 1
        if calls["n"] == 1:  # the provider's outage: the first attempt's agent gives up on it
            return err(503, "The server is overloaded or not ready yet.")
        return play(seen)

    with FakeServer(default=flaky_answer) as flaky, \
            FakeServer(default=lambda seen: err(401, "Incorrect API key provided", "invalid_request_error")) as bad:
        f = sweep_file(tmp_path, f"""
tasks = ["battleOfSexes"]
designs = ["single"]
models = [{{name = "flaky", "*" = "openai:gpt-4o@{flaky.url}/v1"}},
          {{name = "badkey", "*" = "openai:gpt-4o@{bad.url}/v1"}}]
run_args = ["--max-retries", "0"]
[retry]
max_attempts = 3
backoff_s = 0
""")
        r = mlgym("sweep", "run", f, "--json", timeout=500)
    assert r.returncode == 1, r.stderr[-3000:]  # a run failed
    out = tmp_path / "out"
    recs = journal(out)
    flaky_id, bad_id = "battleOfSexes.single.flaky.s0.r0", "battleOfSexes.single.badkey.s0.r0"
    assert [(e["outcome"], e["reason"]) for e in of(recs, flaky_id, "end")] == [
        ("infra", "model_unreachable"), ("done", "submitted")]
    assert [s["kind"] for s in of(recs, flaky_id, "start")] == ["fresh", "fresh"]
    # the failed attempt's folder is kept, set aside, and counted nowhere in the scores
    assert (out / "attempts" / flaky_id / "1" / "result.json").is_file()
    assert [(e["outcome"], e["reason"]) for e in of(recs, bad_id, "end")] == [("config", "auth_error")]
    assert len(of(recs, bad_id, "start")) == 1  # no retry mends a refused key
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["retries"]) == (1, 1, 1)
    md = (out / "report" / "report.md").read_text()
    assert f"| {bad_id} | failed | 1 | auth_error |" in md
    assert f"1 run(s) finished after infrastructure failures: {flaky_id} (1)." in md
    results = [json.loads(x) for x in (out / "report" / "results.jsonl").read_text().splitlines()]
    assert [x["sweep_run"] for x in results] == [flaky_id]


@pytest.mark.timeout(600)
def test_the_sweep_spend_cap_starts_no_run_once_it_is_spent(tmp_path):
    with FakeServer(default=scripted_openai("battleOfSexes")) as server:
        f = sweep_file(tmp_path, f"""
tasks = ["battleOfSexes"]
designs = ["single"]
models = [{{name = "gpt", "*" = "openai:gpt-4o@{server.url}/v1"}}]
seeds = 2
concurrency = 1
max_dollars = 0.000001
""")
        r = mlgym("sweep", "run", f, "--json", "--no-report", timeout=500)
    assert r.returncode == 1, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["remaining"], summary["budget_reached"]) == (1, 1, True)
    assert summary["spend_usd"] > 0.000001  # gpt-4o's price on the server's reported usage
    assert len([x for x in journal(tmp_path / "out") if x["event"] == "start"]) == 1
    assert "BUDGET REACHED" in r.stderr


@pytest.mark.timeout(600)
def test_a_sweep_folder_that_cannot_be_written_stops_the_sweep_and_loses_no_finished_run(tmp_path):
    f = sweep_file(tmp_path, 'tasks = ["battleOfSexes"]\ndesigns = ["single"]')
    out = tmp_path / "out"
    run_dir = out / "runs" / BOS
    proc = subprocess.Popen([*MLGYM, "sweep", "run", str(f), "--no-report"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (run_dir / "run.json").exists(), 240, "the run to start", proc)
        (out / "journal.jsonl").unlink()
        (out / "journal.jsonl").mkdir()  # every write to the journal now fails, as on a full disk
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "the sweep stopped: cannot write its folder: [Errno 21] Is a directory" in output
    assert "Traceback" not in output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    (out / "journal.jsonl").rmdir()
    again = mlgym("sweep", "run", f, "--json", "--no-report")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 1  # read from its folder
    (end,) = [x for x in journal(out) if x["event"] == "end"]
    assert (end["run"], end["outcome"], end["recovered"]) == (BOS, "done", True)
