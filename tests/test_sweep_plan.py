"""The sweep file and its plan (ids, suites, designs, model sets, cost), the outcome of a run as
the sweep reads it (merits vs infrastructure vs set-up), the journal, and packed run folders.
No runs here: tests/test_sweep_local.py and test_sweep_ray.py run real ones."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mlgym.sweep import spec
from mlgym.sweep.attempt import AttemptExit, pack, unpack
from mlgym.sweep.folder import Folder, records, run_state
from mlgym.sweep.outcome import classify, from_result
from mlgym.sweep.spec import SweepError


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_grid_expands_with_ids_from_the_grid_point(tmp_path):
    f = write(tmp_path, """
name = "g"
tasks = ["prisonersDilemma", "blotto"]
designs = ["default", "single"]
models = ["scripted:auto", {name = "mixed", "*" = "scripted:auto", coder = "replay:/nowhere"}]
seeds = [3, 7]
repeats = 2
""")
    p = spec.plan(f, tmp_path / "out")
    assert len(p.runs) == 2 * 2 * 2 * 2 * 2
    ids = [r.id for r in p.runs]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "prisonersDilemma.default.scripted-auto.s3.r0"
    assert "blotto.single.mixed.s7.r1" in ids
    # the same file plans the same ids and fingerprints (a second run finds its runs)
    again = spec.plan(f, tmp_path / "out")
    assert [(r.id, r.fingerprint) for r in again.runs] == [(r.id, r.fingerprint) for r in p.runs]
    mixed = p.point("blotto.default.mixed.s3.r0")
    assert mixed.model_args == ["scripted:auto", "coder=replay:/nowhere"]
    assert p.run_args(mixed)[:2] == ["--model=scripted:auto", "--model=coder=replay:/nowhere"]
    # the seed is part of what shapes a run; the repeat is not
    r0, r1 = p.point("blotto.default.mixed.s3.r0"), p.point("blotto.default.mixed.s3.r1")
    assert r0.fingerprint == r1.fingerprint != p.point("blotto.default.mixed.s7.r0").fingerprint
    assert p.out == str((tmp_path / "out").resolve())
    # seed-major: the first runs fill every cell of the table once; --limit keeps the ids
    first = [r.id for r in spec.plan(f, tmp_path / "out", limit=8).runs]
    assert first == ids[:8] and {r.rsplit(".s", 1)[1] for r in first} == {"3.r0"}
    assert len({(r.task, r.design, r.models) for r in p.runs[:8]}) == 8


def test_suites_expand_and_exclusions_apply(tmp_path):
    from mlgym.tasks import registry

    lite = [t.id for t in registry.list_tasks("lite")]
    f = write(tmp_path, f'name = "x"\ntasks = ["lite", "prisonersDilemma"]\nexclude_tasks = ["{lite[0]}"]\n')
    tasks = [r.task for r in spec.plan(f).runs]
    assert tasks == lite[1:]  # the suite's order, prisonersDilemma (already in it) once, lite[0] out


def test_a_design_by_path_is_read_relative_to_the_sweep_file_and_shipped(tmp_path):
    (tmp_path / "teams").mkdir()
    text = (Path(spec.C.TEAMS_DIR) / "single.toml").read_text().replace('name = "single"', 'name = "solo"')
    (tmp_path / "teams" / "solo.toml").write_text(text)
    f = write(tmp_path, 'name = "x"\ntasks = ["blotto"]\ndesigns = ["teams/solo.toml", '
                        '{name = "named", team = "teams/solo.toml"}]\n')
    p = spec.plan(f)
    assert [r.design for r in p.runs] == ["solo", "named"]
    assert p.runs[0].team == str((tmp_path / "teams" / "solo.toml").resolve())
    assert p.runs[0].team_toml == text  # a worker without the file runs the same team


def test_a_changed_team_file_changes_the_fingerprint(tmp_path):
    team = tmp_path / "t.toml"
    base = (Path(spec.C.TEAMS_DIR) / "single.toml").read_text()
    team.write_text(base)
    f = write(tmp_path, 'name = "x"\ntasks = ["blotto"]\ndesigns = ["t.toml"]\n')
    before = spec.plan(f).runs[0].fingerprint
    team.write_text(base.replace("steps = 50", "steps = 20"))
    assert spec.plan(f).runs[0].fingerprint != before


@pytest.mark.parametrize(("text", "message"), [
    ('name = "x"\ntasks = ["noSuchTask"]\n', "unknown task 'noSuchTask'"),
    ('name = "x"\ntasks = ["blotto"]\nseed = 3\n', "unknown field `seed`"),
    ('name = "x"\ntasks = ["blotto"]\ndesigns = ["nosuchteam"]\n', "no team 'nosuchteam'"),
    ('name = "x"\ntasks = ["blotto"]\nmodels = ["gpt-4o"]\n', "bad model spec 'gpt-4o'"),
    ('name = "x"\ntasks = ["blotto"]\nmodels = [{name = "m", reviewer = "scripted:auto"}]\n',
     "['reviewer'] is no agent or role of any design"),
    ('name = "x"\ntasks = ["blotto"]\nmodels = ["scripted:auto", "scripted:auto"]\n',
     "the same model set ['scripted-auto']"),
    ('name = "x"\ntasks = ["blotto"]\nexclude_tasks = ["prisonersDilemma"]\n', "does not have"),
    ('name = "x"\ntasks = ["blotto"]\nseeds = 0\n', "seeds"),
    ('name = "x"\ntasks = ["blotto"]\nconcurrency = 0\n', ">= 1"),
    ('name = "x"\ntasks = ["blotto"\n', "not valid TOML"),
])
def test_a_bad_sweep_file_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(SweepError, match=None) as exc:
        spec.plan(write(tmp_path, text))
    assert message in str(exc.value) and str(tmp_path / "s.toml") in str(exc.value)


def test_cost_estimate_where_prices_are_known(tmp_path):
    f = write(tmp_path, """
name = "c"
tasks = ["blotto"]
designs = ["single"]
models = ["scripted:auto", "openai:gpt-4o", "openai:no-such-model-xyz"]
[budget]
steps = 10
dollars = 0.5
[estimate]
prompt_tokens_per_step = 10000
completion_tokens_per_step = 1000
""")
    runs = {r.models: r for r in spec.plan(f).runs}
    assert runs["scripted-auto"].est_usd == 0.0
    # gpt-4o: $2.50 / 1M in, $10 / 1M out -> 10 steps x (0.025 + 0.01) = 0.35, under the $0.5 cap
    assert runs["openai-gpt-4o"].est_usd == pytest.approx(0.35)
    assert runs["openai-no-such-model-xyz"].est_usd is None
    assert runs["openai-gpt-4o"].dollars_cap == 0.5
    out = subprocess.run([sys.executable, "-m", "mlgym.cli", "sweep", "plan", str(f), "--json"],
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["totals"] == {"runs": 3, "est_usd": 0.35, "unpriced_runs": 1, "cap_usd": 1.0, "tasks": 1,
                             "designs": 1, "models": 3}
    assert [r["id"] for r in doc["runs"]][0] == "blotto.single.scripted-auto.s0.r0"
    text = subprocess.run([sys.executable, "-m", "mlgym.cli", "sweep", "plan", str(f)],
                          capture_output=True, text=True, check=True).stdout
    assert "estimated cost $0.350 + 1 run(s) with models of unknown price; at most $1.000" in text


def test_resources_come_from_the_task_spec_unless_the_file_says(tmp_path):
    from mlgym.tasks import registry

    lim = registry.load_task("blotto").spec.limits
    plain = spec.plan(write(tmp_path, 'name = "x"\ntasks = ["blotto"]\n')).runs[0]
    assert plain.resources == {"cpus": lim.cpus, "memory_mb": lim.memory_mb, "gpus": lim.gpus}
    ray = spec.plan(write(tmp_path, 'name = "x"\ntasks = ["blotto"]\n[ray]\nnum_cpus = 0.5\nmemory_mb = 0\n',
                          "r.toml")).runs[0]
    assert ray.resources == {"cpus": 0.5, "memory_mb": 0, "gpus": lim.gpus}


# ---------------------------------------------------------------------------------- outcomes


def result(**over):
    base = {"task": "blotto", "method": "m", "run_id": "r", "metric": {"name": "Score", "direction": "max"},
            "final_submission": {"scores": {"Score": 0.5}}, "best_attempt": 0.6, "exit_status": "submitted",
            "end_reason": "submitted", "cost_usd": 0.25, "seconds": 12.0,
            "agents": {"agent": {"role": "single", "exit": "submitted"}}}
    return {**base, **over}


def test_a_run_that_ends_on_its_merits_is_done_whatever_its_score():
    out = from_result(result())
    assert (out.kind, out.score, out.best, out.cost_usd, out.seconds) == ("done", 0.5, 0.6, 0.25, 12.0)
    bad = from_result(result(final_submission=None, best_attempt=None, exit_status="no_submission (budget:steps)",
                             end_reason="budget:steps"))
    assert (bad.kind, bad.score, bad.reason) == ("done", None, "budget:steps")
    fmt = from_result(result(agents={"agent": {"role": "single", "exit": "format_error"}}))
    assert fmt.kind == "done"  # the model's own fault: a score is a score


@pytest.mark.parametrize(("exit", "kind"), [("model_unreachable", "infra"), ("rate_limited", "infra"),
                                            ("auth_error", "config"), ("bad_request", "config"),
                                            ("context_overflow", "done")])
def test_agents_typed_exits_say_whose_fault_it_was(exit, kind):
    out = from_result(result(agents={"coder": {"role": "coder", "exit": "stopped"},
                                     "lit": {"role": "literature", "exit": exit, "exit_detail": "why"}}))
    assert out.kind == kind
    if kind != "done":
        assert (out.reason, out.detail) == (exit, "lit: why")


def test_an_environment_that_kept_crashing_is_infrastructure():
    out = from_result(result(exit_status="env_failed", end_reason="env_failed", final_submission=None))
    assert (out.kind, out.reason) == ("infra", "env_failed")


def test_a_process_end_is_read_from_the_run_folder_first(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ex = AttemptExit(run="r", attempt=1, returncode=-9, child_start=1.0, child_end=3.5,
                     log_tail="...\nError: the broker did not start within 30 s\n")
    assert (classify(run, ex).kind, classify(run, ex).reason) == ("infra", "start_failed")
    assert classify(run, ex).detail == "Error: the broker did not start within 30 s"
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    assert classify(run, ex).reason == "killed" and "signal 9" in classify(run, ex).detail
    stopped = AttemptExit(run="r", attempt=1, returncode=1, interrupted=True)
    (run / "run.json").write_text(json.dumps({"status": "stopped"}))
    assert classify(run, stopped).kind == "interrupted"
    lost = AttemptExit(run="r", attempt=1, lost="NodeDiedError: the node is dead")
    assert (classify(None, lost).kind, classify(None, lost).reason) == ("infra", "node_lost")
    # finished is finished, however the process that ran it ended
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    (run / "result.json").write_text(json.dumps(result()))
    assert classify(run, lost).kind == "done"


# ---------------------------------------------------------------------------------- folder


def test_the_journal_survives_a_torn_last_line_and_counts_attempts(tmp_path):
    f = Folder(tmp_path)
    f.log("start", run="a", attempt=1, fingerprint="x")
    f.log("end", run="a", attempt=1, outcome="infra", reason="killed")
    f.log("start", run="a", attempt=2, fingerprint="x")
    f.log("end", run="a", attempt=2, outcome="infra", reason="node_lost")
    f.log("start", run="b", attempt=1, fingerprint="y")
    with open(f.journal_path, "a") as fh:
        fh.write('{"t": 1, "event": "end", "run": "b", "att')  # the sweep died mid-write
    recs = records(f.journal())
    assert (recs["a"].attempts, recs["a"].infra_failures, recs["a"].open_attempt) == (2, 2, None)
    assert (recs["b"].attempts, recs["b"].open_attempt) == (1, 1)
    assert run_state(recs["a"], max_attempts=3) == "pending"
    assert run_state(recs["a"], max_attempts=2) == "failed"


def test_a_packed_run_folder_round_trips_and_a_hostile_one_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    (src / "run.json").write_text("{}")
    (src / "logs" / "a.log").write_bytes(b"x" * 1000)
    dst = tmp_path / "dst"
    unpack(pack(src), dst)
    assert (dst / "logs" / "a.log").read_bytes() == b"x" * 1000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        unpack(buf.getvalue(), tmp_path / "dst2")
    assert not (tmp_path / "escaped.txt").exists()
    # a sparse member pointing outside is refused the same way
    sparse_out = io.BytesIO()
    with tarfile.open(fileobj=sparse_out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        data = b'{"size": 5, "extents": [[0, 5]]}\nowned'
        info = tarfile.TarInfo("../escaped-sparse.img")
        info.size, info.pax_headers = len(data), {"MLGYM.sparse": "1"}
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        unpack(sparse_out.getvalue(), tmp_path / "dst3")
    assert not (tmp_path / "escaped-sparse.img").exists()


def test_a_stopped_runs_sparse_disk_image_is_packed_by_what_it_holds(tmp_path):
    """A stopped run's session disk (env_server/disk.py) is a sparse image of 50 GB that holds
    a few MB: packed as its extents, it round-trips byte for byte and stays sparse."""
    src = tmp_path / "src" / "env" / "sessions" / "s1"
    src.mkdir(parents=True)
    image = src / "disk.img"
    with open(image, "wb") as fh:
        fh.truncate(50 << 30)
        fh.seek(1 << 20)
        fh.write(b"superblock" * 100)
        fh.seek(7 << 30)
        fh.write(b"tail")
    packed = pack(tmp_path / "src")
    assert len(packed) < 1 << 20
    dst = tmp_path / "dst"
    unpack(packed, dst)
    out = dst / "env" / "sessions" / "s1" / "disk.img"
    st = out.stat()
    assert st.st_size == 50 << 30 and st.st_blocks * 512 < 1 << 20
    with open(out, "rb") as fh:
        fh.seek(1 << 20)
        assert fh.read(1000) == b"superblock" * 100
        fh.seek(7 << 30)
        assert fh.read(4) == b"tail"
        fh.seek(5 << 30)
        assert fh.read(8) == bytes(8)


def test_the_saved_plan_names_the_environment_but_keeps_no_value(tmp_path):
    f = write(tmp_path, 'name = "x"\ntasks = ["blotto"]\n[env]\nSOME_TOKEN = "s3cret-value"\n')
    p = spec.plan(f, tmp_path / "out")
    Folder(p.out).save_plan(p)
    text = (Path(p.out) / "plan.json").read_text()
    assert "SOME_TOKEN" in text and "s3cret-value" not in text
    assert Folder(p.out).load_plan().runs == p.runs
    assert (Path(p.out) / "sweep.toml").read_text() == f.read_text()  # the copy, for the record


def test_a_run_folder_that_comes_back_broken_leaves_the_local_copy(tmp_path):
    from mlgym.sweep.executors import LocalExecutor
    from mlgym.sweep.runner import Sweep

    p = spec.plan(write(tmp_path, 'name = "x"\ntasks = ["blotto"]\n'), tmp_path / "out")
    s = Sweep(p, LocalExecutor(1))
    run_dir = s.folder.run_dir(p.runs[0].id)
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "stopped"}')
    ex = AttemptExit(run=p.runs[0].id, attempt=2, payload=b"not a tar.gz")
    assert s._receive(run_dir, ex) is None
    assert "cannot be unpacked" in ex.lost and (run_dir / "run.json").read_text() == '{"status": "stopped"}'
    good = tmp_path / "good"
    good.mkdir()
    (good / "result.json").write_text("{}")
    ex = AttemptExit(run=p.runs[0].id, attempt=2, payload=pack(good))
    assert s._receive(run_dir, ex) == run_dir and sorted(x.name for x in run_dir.iterdir()) == ["result.json"]
    s.executor.close()


def test_without_ray_the_ray_executor_says_how_to_get_it(tmp_path):
    f = write(tmp_path, f'name = "x"\ntasks = ["blotto"]\nout = "{tmp_path / "out"}"\n')
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['mlgym', 'sweep', 'run', sys.argv[1], '--ray', "
            "'auto']; from mlgym.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "the Ray executor needs ray: pip install 'mlgym-bus[ray]'" in r.stderr
    assert not (tmp_path / "out" / "journal.jsonl").exists()  # nothing ran


@pytest.mark.parametrize(("name", "runs", "designs"), [
    ("lite.toml", 24, {"default", "single"}),
    ("designs.toml", 36, {"single", "default", "reviewer", "parallel-3", "debate", "flat"}),
])
def test_the_shipped_example_sweeps_plan(tmp_path, name, runs, designs):
    """The sweep files docs/sweeps.md and docs/teams.md run: the grid they say, every run a
    shipped design on a quick lite task."""
    example = Path(__file__).resolve().parent.parent / "examples" / "sweeps" / name
    p = spec.plan(example, tmp_path / "out")
    assert len(p.runs) == runs
    assert {r.design for r in p.runs} == designs
    assert not {r.task for r in p.runs} & {"rlBreakoutMinAtarLite", "languageModelingCharLite"}
