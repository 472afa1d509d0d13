"""The Ray executor against a real Ray cluster on this machine: a head node and a worker node
(`ray start --head`, `ray start --address`, each its own process group), started here. Runs go
to both nodes; a SIGINT stops them cleanly through Ray's cancel and the same command resumes
them (a shared sweep folder); the worker node killed outright mid-sweep loses no run (run
folders come back through Ray). Both connections: the cluster's address and Ray Client."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import time

import pytest
from conftest import require
from test_sweep_local import MLGYM, journal, mlgym, of, sweep_file, wait_for

HAVE_RAY = importlib.util.find_spec("ray") is not None

RAY_FILE = "\n[ray]\nnum_cpus = 1\nmemory_mb = 0\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(HAVE_RAY, "ray is not installed (pip install 'mlgym-bus[ray]')")
    from mlgym.sweep.ray_cluster import LocalCluster

    tmp = tmp_path_factory.mktemp("ray")
    c = LocalCluster(head_cpus=1, worker_cpus=[1], env={"TMPDIR": str(tmp)}, log_dir=tmp)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def run_json(out, run: str) -> dict:
    try:
        return json.loads((out / "runs" / run / "run.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.timeout(900)
def test_runs_spread_over_the_nodes_stop_on_sigint_and_resume(cluster, tmp_path):
    f = sweep_file(tmp_path, 'tasks = ["prisonersDilemma", "battleOfSexes"]\ndesigns = ["single"]'
                   + RAY_FILE + 'storage = "shared"\n')
    out = tmp_path / "out"
    runs = ["prisonersDilemma.single.scripted-auto.s0.r0", "battleOfSexes.single.scripted-auto.s0.r0"]
    proc = subprocess.Popen([*MLGYM, "sweep", "run", str(f), "--ray", cluster.address, "--no-report"],
                            stdout=open(tmp_path / "first.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: all(run_json(out, r).get("status") == "running" for r in runs), 300,
                 "both runs to run on the cluster", proc)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)  # the driver cancels its Ray tasks: each stops its run
        assert proc.wait(300) == 130, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    for r in runs:
        assert run_json(out, r)["status"] == "stopped"
        assert [e["outcome"] for e in of(journal(out), r, "end")] == ["interrupted"]

    # the same command, through Ray Client (ray://), as from a machine outside the cluster
    again = mlgym("sweep", "run", f, "--ray", cluster.client_address, "--json", "--no-report", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["done"] == 2
    recs = journal(out)
    for r in runs:
        assert [s["kind"] for s in of(recs, r, "start")] == ["fresh", "resume"]
        assert of(recs, r, "end")[-1]["outcome"] == "done"
        assert (out / "runs" / r / "result.json").is_file()
    # one CPU per node and one per run: two runs at once means one on each node
    nodes = {e["node"] for e in recs if e["event"] == "end"}
    assert len(nodes) == 2, nodes


@pytest.mark.timeout(900)
def test_a_worker_node_killed_mid_sweep_loses_no_run(cluster, tmp_path):
    # a model that thinks 1 s a turn: each run takes 10 s or more, so the kill lands mid-run
    f = sweep_file(tmp_path, 'tasks = ["prisonersDilemma", "battleOfSexes"]\ndesigns = ["single"]\nseeds = 2\n'
                   'models = ["scripted:auto?latency_s=1"]\n'
                   "[retry]\nbackoff_s = 1\n" + RAY_FILE)  # storage "copy": folders come back through Ray
    out = tmp_path / "out"
    proc = subprocess.Popen([*MLGYM, "sweep", "run", str(f), "--ray", cluster.address, "--json"],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "sweep.log", "w"), text=True)
    try:
        def running() -> int:  # attempts started and not ended
            if not (out / "journal.jsonl").exists():
                return 0
            recs = journal(out)
            ended = {(e["run"], e["attempt"]) for e in recs if e["event"] == "end"}
            return len([e for e in recs if e["event"] == "start"
                        and (e["run"], e["attempt"]) not in ended])

        wait_for(lambda: running() >= 2, 300, "two attempts running", proc)
        time.sleep(3)  # both are under way: one on each node
        assert running() == 2
        cluster.kill_node(1)  # every process of the worker node, SIGKILL: a machine lost
        stdout, _ = proc.communicate(timeout=780)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["runs"], summary["done"], summary["failed"]) == (4, 4, 0)
    recs = journal(out)
    lost = [e for e in recs if e["event"] == "end" and e["outcome"] == "infra"]
    assert lost and all(e["reason"] == "node_lost" for e in lost), lost
    for e in lost:  # retried elsewhere and finished
        assert of(recs, e["run"], "end")[-1]["outcome"] == "done"
    for run in {e["run"] for e in recs if e["event"] == "end"}:
        result = json.loads((out / "runs" / run / "result.json").read_text())
        assert result["final_submission"]["scores"]["Score"] is not None
    assert "node_lost" in log and (out / "report" / "report.md").is_file()
