"""A run's life through crashes and interruptions, end to end with real processes.

- Issue #16 (findings 8, 9): one `mlgym run` whose broker, environment server and one agent
  are each SIGKILLed: every one is restarted, the event log has no gap, the run ends with a
  result.json, and its final score equals the undisturbed run's.
- Issue #18 (items 1, 4, 6): a run stopped by SIGINT, SIGTERM, Ctrl-C (SIGINT to the whole
  process group), SIGKILL of the supervisor, or a "reboot" (every process killed at once) is
  continued by `mlgym resume`: the agent takes more steps and the run ends with its own score,
  not the starter file's (the old `stop` is not obeyed again). A clean stop leaves run.json
  `stopped`, a partial result.json and the trajectories so far. A 30-step run interrupted
  twice with Ctrl-C and resumed twice ends `submitted` with all its steps in one trajectory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlgym.agents import config as C
from mlgym.agents.events import events, gaps
from mlgym.agents.parsing import format_reply
from mlgym.agents.supervisor import resume_run, run_team
from mlgym.bus import protocol as P
from test_agents_crash import agent_steps, alive, env_commands

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")


# ----------------------------------------------------------------------------- helpers


class Cli:
    """`mlgym run` / `mlgym resume` in a process group of its own, as a terminal would start it
    (Ctrl-C there signals the whole group)."""

    def __init__(self, tmp_path: Path, name: str, *args: str):
        self.err_path = tmp_path / f"{name}.err"
        self.out_path = tmp_path / f"{name}.out"
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mlgym.cli", *args], stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def result(self) -> dict:
        lines = self.out_path.read_text().strip().splitlines()
        return json.loads(lines[-1])

    async def wait(self, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"running after {timeout} s:\n{self.err[-3000:]}"
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            with_group = os.getpgid(self.proc.pid) == self.proc.pid
            (os.killpg if with_group else os.kill)(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def wait_commands(run_dir: Path, n: int, cli: Cli | None = None,
                        timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while env_commands(run_dir) < n:
        assert cli is None or cli.proc.poll() is None, f"the run ended early:\n{cli.err[-3000:]}"
        assert time.monotonic() < deadline, f"fewer than {n} commands after {timeout} s"
        await asyncio.sleep(0.05)


def pids(run_dir: Path) -> dict:
    return json.loads((run_dir / "pids.json").read_text())


def children(run_dir: Path) -> list[int]:
    p = pids(run_dir)
    return [p["broker"], p["env"], *p["agents"].values()]


async def all_gone(pid_list: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pid_list):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pid_list if alive(p)]}"
        await asyncio.sleep(0.05)


def session_step(run_dir: Path) -> int:
    """The latest step the environment counted (its session's counter)."""
    return max((c.step for c in commands(run_dir)), default=0)


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


async def resume_to_end(tmp_path: Path, run_dir: Path) -> dict:
    """`mlgym resume RUN_DIR` until the run is over; its result."""
    resumed = Cli(tmp_path, "resume", "resume", str(run_dir), "--no-progress", "--json")
    try:
        assert await resumed.wait(180) == 0, resumed.err[-3000:]
    finally:
        resumed.kill()
    return resumed.result()


def final_score(result: dict) -> float:
    return result["final_submission"]["scores"]["Score"]


def own_score(result: dict) -> bool:
    """battleOfSexes: the agent's own best candidate (always 0: 1.444) was submitted, not the
    starter file (1.023) or the first candidate (1.081)."""
    return final_score(result) > result["baseline"]["Score"] + 0.3


def check_complete_trajectory(run_dir: Path, agent: str) -> list[P.AgentStep]:
    """Every turn once, in order, in the log and in the one .traj of the agent."""
    by_step: dict[int, P.AgentStep] = {}
    for s in agent_steps(run_dir, agent):
        by_step[s.step] = s
    assert sorted(by_step) == list(range(1, len(by_step) + 1))
    traj = json.loads((run_dir / "trajectories" / f"{agent}.traj").read_text())
    assert [t["action"] for t in traj["trajectory"]] == [by_step[k].action for k in sorted(by_step)]
    return [by_step[k] for k in sorted(by_step)]


# ----------------------------------------------------------------------------- issue #16


def commands(run_dir: Path) -> list[P.CommandEvent]:
    try:
        return [e.body for e in events(run_dir, ["env/"]) if isinstance(e.body, P.CommandEvent)]
    except FileNotFoundError:
        return []


async def _kill_each_once(run_dir: Path) -> list[tuple[str, int]]:
    """SIGKILL the broker as the first `validate` starts (its score event is published while no
    broker is there: finding 8), then the coder at its next command, then the environment
    server as the next `validate` starts (the coder sends it again to the adopted session).
    Returns (who, the step at which it was killed)."""
    killed: list[tuple[str, int]] = []
    for who, validate in (("broker", True), ("coder", False), ("env", True)):
        after = killed[-1][1] if killed else 0
        while True:
            hit = [c for c in commands(run_dir)
                   if c.step > after and (c.command == "validate" or not validate)]
            if hit:
                break
            await asyncio.sleep(0.02)
        p = pids(run_dir)
        os.kill(p["agents"]["coder"] if who == "coder" else p[who], signal.SIGKILL)
        killed.append((who, hit[0].step))
    return killed


@pytest.mark.timeout(300)
async def test_broker_env_server_and_agent_each_killed_once_in_one_run(tmp_path):
    team = C.load_team("default")
    calm = await run_team("prisonersDilemma", team, run_dir=tmp_path / "calm", progress=False)
    assert calm["exit_status"] == "submitted"

    run_dir = tmp_path / "run"
    killer = asyncio.create_task(_kill_each_once(run_dir))
    result = await run_team("prisonersDilemma", team, run_dir=run_dir, progress=False)
    assert killer.done(), "the run ended before the kills"
    assert [who for who, _ in killer.result()] == ["broker", "coder", "env"]

    assert gaps(run_dir) == []
    assert json.loads((run_dir / "result.json").read_text()) == result
    coder = result["agents"]["coder"]
    assert (result["broker_restarts"], result["env_restarts"], coder["restarts"]) == (1, 1, 1)
    assert result["exit_status"] == "submitted"
    assert final_score(result) == final_score(calm)
    assert result["best_attempt"] == calm["best_attempt"]
    # every validation's score was logged (acked before the agent saw it), none twice: the one
    # running while the broker was down too
    scored = [e.body.step for e in events(run_dir, ["env/"]) if isinstance(e.body, P.ScoreEvent)]
    assert len(scored) == len(set(scored)) and killer.result()[0][1] in scored
    validates = [c.step for c in commands(run_dir) if c.command == "validate"]
    assert set(validates) - {killer.result()[2][1]} <= set(scored)  # but the one the env kill cut
    assert len({e.epoch for e in events(run_dir)}) == 2  # one broker restart: a second epoch
    infos = [e.body for e in events(run_dir, ["run/info"])]
    assert len({i.session for i in infos}) == 1  # the session was taken over, not replaced


@pytest.mark.timeout(180)
async def test_a_killed_tcp_broker_comes_back_on_its_ports(tmp_path):
    """On tcp (agents on other machines) the restarted broker must listen where the first one
    did: every client's URL stays valid."""
    run_dir = tmp_path / "run"

    async def kill_broker() -> int:
        await wait_commands(run_dir, 2)
        pid = pids(run_dir)["broker"]
        os.kill(pid, signal.SIGKILL)
        return pid

    killer = asyncio.create_task(kill_broker())
    result = await run_team("battleOfSexes", C.load_team("single"), run_dir=run_dir,
                            host="127.0.0.1", progress=False)
    assert killer.done() and result["broker_restarts"] == 1
    assert result["exit_status"] == "submitted" and own_score(result)
    assert gaps(run_dir) == [] and run_json(run_dir)["bus"].startswith("tcp://127.0.0.1:")
    assert json.loads((run_dir / "bus.json").read_text())["url"] == run_json(run_dir)["bus"]


@pytest.mark.timeout(180)
async def test_resume_of_a_run_that_ended_before_its_outputs_were_written(tmp_path):
    """The supervisor died (or the machine went down) after the run's `RunEnd` was logged but
    before result.json: `mlgym resume` writes the outputs from the log and runs nothing."""
    run_dir = tmp_path / "run"
    done = await run_team("battleOfSexes", C.load_team("single"), run_dir=run_dir, progress=False)
    state = run_json(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**state, "status": "running"}))
    (run_dir / "result.json").unlink()
    for traj in (run_dir / "trajectories").iterdir():
        traj.unlink()
    head = max(e.seq for e in events(run_dir))
    result = await resume_run(run_dir, progress=False)
    assert result["exit_status"] == done["exit_status"] == "submitted"
    assert result["final_submission"] == done["final_submission"]
    assert result["steps"] == done["steps"] and run_json(run_dir)["status"] == "finished"
    assert (run_dir / "trajectories" / "agent.traj").is_file()
    later = [e.body for e in events(run_dir, from_seq=head + 1)]
    assert not any(isinstance(b, (P.CommandEvent, P.AgentStep, P.RunInfo)) for b in later)


# ----------------------------------------------------------------------------- issue #18


def _interrupt(cli: Cli, run_dir: Path, how: str) -> list[int]:
    """Stop the supervisor `how`; returns the processes that must be gone afterwards."""
    kids = children(run_dir)
    if how == "sigint":
        os.kill(cli.proc.pid, signal.SIGINT)
    elif how == "sigterm":
        os.kill(cli.proc.pid, signal.SIGTERM)
    elif how == "ctrl-c":  # a terminal's Ctrl-C: SIGINT to the whole foreground process group
        os.killpg(cli.proc.pid, signal.SIGINT)
    elif how == "sigkill":
        os.kill(cli.proc.pid, signal.SIGKILL)
    elif how == "reboot":  # every process of the run gone at once, nothing cleaned up
        for pid in [cli.proc.pid, *kids]:
            os.kill(pid, signal.SIGKILL)
    return kids


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["sigint", "sigterm", "ctrl-c", "sigkill", "reboot"])
async def test_a_stopped_run_resumes_where_it_stopped(tmp_path, how):
    run_dir = tmp_path / "run"
    run = Cli(tmp_path, "run", "run", "--task", "battleOfSexes", "--team", "single",
              "--run-dir", str(run_dir), "--no-progress")
    try:
        await wait_commands(run_dir, 2, run)  # `ls` and `open`: nothing validated yet
        kids = _interrupt(run, run_dir, how)
        rc = await run.wait(90)
        await all_gone(kids)
    finally:
        run.kill()
    before = agent_steps(run_dir, "agent")
    state = run_json(run_dir)
    if how in ("sigkill", "reboot"):
        assert rc == -signal.SIGKILL and state["status"] == "running"
    else:  # a clean stop: resumable, with what it did so far written out
        assert rc == 1 and "mlgym resume" in run.err and "Traceback" not in run.err, run.err[-3000:]
        assert state["status"] == "stopped"
        partial = json.loads((run_dir / "result.json").read_text())
        assert partial["partial"] is True and partial["exit_status"] == "stopped"
        assert partial["final_submission"] is None and partial["steps"] >= 2
        traj = json.loads((run_dir / "trajectories" / "agent.traj").read_text())
        assert len(traj["trajectory"]) == len(before) >= 1
    spent, steps_before = state["elapsed_s"], session_step(run_dir)

    result = await resume_to_end(tmp_path, run_dir)
    after = check_complete_trajectory(run_dir, "agent")
    assert result["exit_status"] == "submitted" and "partial" not in result
    assert len(after) > len(before) and after[: len(before)] == before
    # its own best candidate, not the starter file that an agent obeying the old stop left
    # to the supervisor's auto-submission
    assert own_score(result)
    assert not result["final_submission"]["auto"]
    assert gaps(run_dir) == []
    # the budgets go on from where they were: the session's step counter and the wall clock
    assert result["steps"] == session_step(run_dir) > steps_before and result["seconds"] > spent
    assert len({i.session for i in (e.body for e in events(run_dir, ["run/info"]))}) == 1
    stops = [e.body for e in events(run_dir, ["run/control"])]
    if how not in ("sigkill", "reboot"):
        assert stops[0].action == "stop" and stops[0].generation == 1  # the old order, ignored


@pytest.mark.timeout(240)
async def test_ctrl_c_while_the_run_starts_is_a_clean_stop(tmp_path):
    run_dir = tmp_path / "run"
    run = Cli(tmp_path, "run", "run", "--task", "battleOfSexes", "--team", "single",
              "--run-dir", str(run_dir), "--no-progress")
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "pids.json").exists():  # the broker is up: the start is under way
            assert run.proc.poll() is None and time.monotonic() < deadline, run.err[-3000:]
            await asyncio.sleep(0.01)
        assert run_json(run_dir)["status"] == "starting"
        os.killpg(run.proc.pid, signal.SIGINT)
        assert await run.wait(90) == 1 and "Traceback" not in run.err, run.err[-3000:]
    finally:
        run.kill()
    assert run_json(run_dir)["status"] == "stopped"
    result = await resume_to_end(tmp_path, run_dir)
    assert result["exit_status"] == "submitted" and own_score(result)
    assert gaps(run_dir) == []


def _thirty_step_recording(path: Path) -> Path:
    """A `.traj` of 30 replies for battleOfSexes (`replay:` answers the n-th call with the
    n-th): a look around, 24 slow steps, the always-0 strategy written and validated, submit."""
    starter = (ROOT / "tasks" / "battleOfSexes" / "workspace" / "strategy.py").read_text()
    zero = "def row_strategy(history):\n    return 0\n"
    replies = [("I look at the files.", "ls -la"), ("I read the strategy.", 'open "strategy.py"')]
    replies += [(f"Thinking step {i}.", f"sleep 0.25 && echo turn {i}") for i in range(3, 27)]
    replies += [("Always 0 suits the column player's bias.",
                 f"edit 1:{len(starter.splitlines())}\n{zero}end_of_edit"),
                ("Validate it.", "validate"), ("Check the file.", "cat strategy.py"),
                ("Submit it.", "submit")]
    assert len(replies) == 30
    steps = [{"response": format_reply(thought, command)} for thought, command in replies]
    path.write_text(json.dumps({"trajectory": steps}))
    return path


@pytest.mark.timeout(420)
async def test_thirty_step_run_interrupted_twice_by_ctrl_c_ends_submitted(tmp_path):
    recording = _thirty_step_recording(tmp_path / "thirty.traj")
    run_dir = tmp_path / "run"
    common = ["--no-progress"]
    cli = Cli(tmp_path, "run", "run", "--task", "battleOfSexes", "--team", "single", "--model",
              f"replay:{recording}", "--run-dir", str(run_dir), *common)
    for i, at in enumerate((8, 18)):
        try:
            await wait_commands(run_dir, at, cli)
            kids = children(run_dir)
            os.killpg(cli.proc.pid, signal.SIGINT)  # Ctrl-C
            assert await cli.wait(90) == 1 and "Traceback" not in cli.err, cli.err[-3000:]
            await all_gone(kids)
        finally:
            cli.kill()
        assert run_json(run_dir)["status"] == "stopped"
        cli = Cli(tmp_path, f"resume{i + 1}", "resume", str(run_dir), *common, "--json")
    try:
        assert await cli.wait(240) == 0, cli.err[-3000:]
    finally:
        cli.kill()
    result = cli.result()
    assert result["exit_status"] == "submitted" and run_json(run_dir)["status"] == "finished"
    steps = check_complete_trajectory(run_dir, "agent")
    assert len(steps) == 30 and steps[-1].action == "submit" and steps[-1].done
    assert own_score(result)
    assert gaps(run_dir) == [] and len({e.epoch for e in events(run_dir)}) == 3
