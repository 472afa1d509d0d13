"""`mlgym bench tasks` on one fast task, for real: a local session runs the baseline, the
artefact is evaluated again alone, and the report says whether the published score was
reproduced, with the machine's load beside the timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import require


@pytest.mark.timeout(300)
def test_bench_tasks_reports_a_reproduced_baseline():
    import shutil

    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (local sandbox)")
    argv = [sys.executable, "-m", "mlgym.cli", "bench", "tasks", "--only", "battleOfSexes"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    task = report["tasks"]["battleOfSexes"]
    assert task["reproduced"] is True and "error" not in task and "evaluate_error" not in task
    assert task["scores"] == task["evaluate_scores"]  # the same artefact scores the same alone
    assert len(task["load"]) == 2 and task["baseline_s"] > 0
    assert report["targets_met"]["reproduced"] is True
    assert "reproduced 1 of 1; not reproduced: none" in proc.stdout
