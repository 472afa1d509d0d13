"""Team designs as data (docs/teams.md): roles and topologies from TOML, the four original roles
unchanged, every shipped design run end to end with the scripted model (real broker,
environment server, sandboxes and evaluations), channels enforced, parallel workers in
workspaces of their own, artefacts copied between sessions, and --budget-match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from conftest import assert_beats_baseline, require

from mlgym.agents import config as C
from mlgym.agents import prompts
from mlgym.agents import roles as R
from mlgym.agents import topology as T
from mlgym.agents.events import events
from mlgym.agents.supervisor import run_team
from mlgym.agents.tools import role_tools
from mlgym.bus import protocol as P
from mlgym.tools.aci import openai_tools

DATA = Path(__file__).resolve().parent / "data"
BASELINES = {"prisonersDilemma": 2.3716301918029785, "blotto": -0.24797001481056213}
DESIGNS = ("single", "default", "reviewer", "parallel-3", "debate", "flat")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")


def _bwrap() -> None:
    require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")


# ------------------------------------------------------------------ roles and teams as data


def test_the_four_original_roles_render_the_prompts_they_always_did():
    """The shipped roles are data now; their prompts (both reply modes) and tool schemas are
    byte for byte what the code-defined roles gave (recorded before the change)."""
    golden = json.loads((DATA / "role_prompts.json").read_text())
    team = {"planner": "planner", "coder": "coder", "literature": "literature"}
    for role in ("single", "coder", "planner", "literature"):
        for mode in ("text", "tools"):
            assert (
                prompts.system_prompt(role, role_tools(role), mode=mode)
                == golden[f"system/{role}/{mode}"]
            )
        inst = prompts.instance_prompt(
            role,
            "  Do the task.\nWell.  ",
            step=0,
            remaining=47,
            team=team if role != "single" else None,
        )
        assert inst == golden[f"instance/{role}"]
        assert openai_tools(role_tools(role)) == golden[f"tools/{role}"]
    assert (
        prompts.observation_prompt(
            "hello\n", step=3, remaining=4, open_file="a.py", cwd="/w", notes=["n1", "n2"]
        )
        == golden["obs/1"]
    )
    assert (
        prompts.observation_prompt("  \n", step=3, remaining=4, open_file="", cwd="/w")
        == golden["obs/2"]
    )


def test_old_team_files_load_unchanged():
    """Team files written before roles and topologies were data load to the same team."""
    for name in ("default", "single"):
        old = C.load_team(DATA / f"team_{name}_v1.toml")
        new = C.load_team(name)
        assert old == new
        assert old.topology.kind == "full" and old.merge == "" and old.approval == []
    d = C.load_team(DATA / "team_default_v1.toml")
    assert {a.name: (a.role, a.history, a.model) for a in d.agents} == {
        "planner": ("planner", "full", "scripted:auto"),
        "coder": ("coder", "stable:5", "scripted:auto"),
        "literature": ("literature", "stable:5", "scripted:auto"),
    }
    assert d.agent("planner").budget == C.Budget(steps=10)
    assert d.agent("coder").max_item_steps == 15
    # a loaded team carries its roles (a resumed run needs no role file) and round-trips
    back = C.team_from_json(C.team_json(d))
    assert back == d and set(back.roles) == {"planner", "coder", "literature"}
    assert back.role("coder") == R.load("coder")


def test_every_shipped_design_loads():
    assert set(DESIGNS) <= set(C.shipped_teams())
    shapes = {}
    for name in DESIGNS:
        team = C.load_team(name)
        shapes[name] = (sorted(team.members()), team.own_sessions(), team.merge, team.approvers())
    assert shapes["parallel-3"][:2] == (
        ["coder-1", "coder-2", "coder-3", "planner"],
        ["coder-1", "coder-2", "coder-3"],
    )
    assert shapes["flat"] == (["peer-1", "peer-2"], ["peer-1", "peer-2"], "best", [])
    assert shapes["reviewer"][3] == ["reviewer"]
    assert shapes["debate"][1] == ["proposer-1", "proposer-2"]


def test_a_design_without_python(tmp_path):
    """A researcher's own role and topology, in TOML only: a role extending a shipped one,
    parallel workers, a pipeline, extra channels, member defaults from the role."""
    team = tmp_path / "mine.toml"
    team.write_text("""
name = "mine"
[topology]
kind = "pipeline"
order = ["planner", "explorer"]
[[topology.channels]]
from = "explorer"
to = ["explorer"]
kinds = ["message"]
[roles.explorer]
extends = "coder"
session = "own"
history = "stable:3"
commands = ["open", "edit", "validate", "bash", "message", "done"]
instance_template = "Explore: {description}\\nTeam: {members}. You may send {channels}.\\n{state}"
[roles.explorer.budget]
steps = 12
[[agents]]
name = "planner"
role = "planner"
[[agents]]
name = "explorer"
role = "explorer"
count = 2
""")
    t = C.load_team(team)
    assert t.members() == {"planner": "planner", "explorer-1": "explorer", "explorer-2": "explorer"}
    assert [a.history for a in t.agents] == ["last:5", "stable:3", "stable:3"]
    assert t.agent("explorer-2").budget.steps == 12 and t.agent("explorer-2").group == "explorer"
    ch = t.channels()
    assert T.allowed(ch, "planner", "explorer-1", "work") and not T.allowed(
        ch, "planner", "explorer-1", "result"
    )
    assert T.allowed(ch, "explorer-1", "planner", "result") and not T.allowed(
        ch, "explorer-1", "planner", "work"
    )
    assert T.allowed(ch, "explorer-1", "explorer-2", "message")
    assert not T.allowed(ch, "explorer-1", "explorer-2", "work")
    r = t.role("explorer")
    assert r.extends == "coder" and r.wakes_on == ["work"] and r.session == "own"
    assert "Team: planner, explorer-1, explorer-2" in prompts.instance_prompt(
        r, "x", step=0, remaining=1, team=t.members()
    )


def test_role_and_topology_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    cases = {
        '[roles.x]\nextends = "coder"\ncommands = ["open", "fly"]\n': "unknown commands",
        '[roles.x]\nextends = "coder"\nsystem_template = "{WINDOW} {nope}"\n': "{nope}",
        '[roles.x]\nextends = "coder"\nsession = "own"\ncommands = ["submit"]\n': "cannot `submit`",
        '[roles.x]\nextends = "nobody"\n': "extends unknown role",
        '[topology]\nkind = "star"\nhub = "ghost"\n': "neither a member nor a role",
    }
    for extra, why in cases.items():
        bad.write_text(
            'name = "b"\n' + extra + '[[agents]]\nname = "p"\nrole = "planner"\n'
            '[[agents]]\nname = "c"\nrole = "x"\n'
            if "roles.x" in extra
            else 'name = "b"\n' + extra + '[[agents]]\nname = "p"\nrole = "planner"\n'
            '[[agents]]\nname = "c"\nrole = "coder"\n'
        )
        with pytest.raises(C.ConfigError, match=R"(?s).*" + __import__("re").escape(why)):
            C.load_team(bad)
    # a worker nobody may send work to
    bad.write_text(
        'name = "b"\n[topology]\nkind = "none"\n[[agents]]\nname = "p"\nrole = "planner"\n'
        '[[agents]]\nname = "c"\nrole = "coder"\n'
    )
    with pytest.raises(C.ConfigError, match="no member may send it one"):
        C.load_team(bad)
    bad.write_text('name = "b"\n[[agents]]\nname = "a"\nrole = "peer"\n')
    with pytest.raises(C.ConfigError, match="nobody can submit"):
        C.load_team(bad)


def test_budget_match_gives_a_design_the_reference_budget(tmp_path):
    team = C.budget_match(C.load_team("parallel-3"), "single")
    assert team.budget == C.load_team("single").budget
    assert team.budget_match["reference"] == "single"
    # a run folder as the reference: what its runs used (median), as the budget
    runs = tmp_path / "runs"
    for i, (steps, tokens) in enumerate(((10, 1000), (14, 3000), (30, 2000))):
        d = runs / f"r{i}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(
            json.dumps(
                {
                    "steps": steps,
                    "tokens": tokens,
                    "cost_usd": 0.5,
                    "seconds": 20.0,
                    "task": "t",
                    "method": "m",
                    "run_id": f"r{i}",
                }
            )
        )
    team = C.budget_match(C.load_team("default"), str(runs))
    assert (team.budget.steps, team.budget.tokens, team.budget.dollars) == (14, 2000, 0.5)
    assert team.budget_match["runs"] == 3
    with pytest.raises(C.ConfigError, match="no team"):
        C.budget_match(C.load_team("default"), "no-such-design")


# ------------------------------------------------------------------ whole runs


@pytest.mark.timeout(900)
@pytest.mark.parametrize("task", sorted(BASELINES))
async def test_every_shipped_design_beats_the_baseline(task, tmp_path):
    """Each shipped design, offline with the scripted model, on a game task: it submits, and
    its best validated artefact beats the baseline (what it submitted scores about as much)."""
    _bwrap()
    for name in DESIGNS:
        run_dir = tmp_path / name
        result = await run_team(task, C.load_team(name), run_dir=run_dir, progress=False)
        assert result["exit_status"] in ("submitted", "submitted (merge: best)"), (
            name,
            result["exit_status"],
        )
        assert result["final_submission"] and not result["final_submission"]["auto"], name
        assert_beats_baseline(result, BASELINES[task])
        kinds = {type(e.body).__name__ for e in events(run_dir, ["team/"])}
        expected = {
            "default": {"WorkItem", "WorkResult", "Question", "Answer", "PlanUpdate"},
            "reviewer": {"WorkItem", "WorkResult", "ReviewRequest", "Review"},
            "parallel-3": {"WorkItem", "WorkResult", "ArtefactCopy"},
            "debate": {"WorkItem", "WorkResult", "TeamMessage", "ArtefactCopy"},
            "flat": {"TeamMessage", "ArtefactCopy"},
            "single": set(),
        }[name]
        assert expected <= kinds, (name, kinds)
        # every team message names its receivers (a plan may have none: no member of these
        # designs takes plan updates, so it is only recorded)
        for e in events(run_dir, ["team/"]):
            if not isinstance(e.body, (P.ArtefactCopy, P.PlanUpdate)):
                assert e.body.to, (name, e.body)
            if isinstance(e.body, P.PlanUpdate):
                assert e.body.to == [], (name, e.body)


@pytest.mark.timeout(240)
async def test_channels_refuse_a_message_outside_them(tmp_path):
    """bob may not write to alice: his `message` is refused with an observation naming the
    channels, nothing is published; alice's message to bob goes through and names him."""
    _bwrap()
    replies = {
        "alice": ["message bob\nhello from alice\nend_of_message", "finish said hello"],
        "bob": ["message alice\nhello from bob\nend_of_message", "finish tried"],
    }
    team_file = _replay_team(
        tmp_path,
        replies,
        """
[topology]
kind = "none"
[[topology.channels]]
from = "alice"
to = ["bob"]
kinds = ["message"]
""",
    )
    run_dir = tmp_path / "run"
    result = await run_team(
        "prisonersDilemma", C.load_team(team_file), run_dir=run_dir, progress=False
    )
    assert result["exit_status"].startswith("submitted")
    msgs = [
        (e.sender, e.body) for e in events(run_dir, ["team/"]) if isinstance(e.body, P.TeamMessage)
    ]
    assert [(s, b.to, b.text) for s, b in msgs] == [("alice", ["bob"], "hello from alice")]
    bob = [e.body for e in events(run_dir, ["agents/bob/step"]) if isinstance(e.body, P.AgentStep)]
    assert bob[0].exit_code == 1
    assert bob[0].observation == (
        "Error: the team's channels do not let you (bob) send message messages "
        "to alice. You may send: nothing to anyone."
    )
    alice = [
        e.body for e in events(run_dir, ["agents/alice/step"]) if isinstance(e.body, P.AgentStep)
    ]
    assert alice[0].exit_code == 0 and alice[0].observation == "Message sent to bob."
    # the analysis counts the refusal and draws the one edge
    from mlgym.agents.analyze import analyse, read

    a = analyse(read(run_dir))
    assert (a.members["bob"].refused, a.members["alice"].refused) == (1, 0)
    assert list(a.edges) == [("alice", "bob")] and a.members["bob"].messages_received == 1


@pytest.mark.timeout(240)
async def test_parallel_workers_have_workspaces_of_their_own(tmp_path):
    """Two workers, each in its own session: a file one writes is not in the other's
    workspace, each sees its own, and their commands went to different sessions."""
    _bwrap()
    replies = {
        "alice": [
            "echo secret-of-alice > note_a.txt",
            "cat note_a.txt",
            "message bob\nnote_a.txt is written\nend_of_message",
            "finish wrote note_a.txt",
        ],
        "bob": [
            "wait",
            "ls; cat note_a.txt",
            "echo mine > note_b.txt && cat note_b.txt",
            "finish looked",
        ],
    }
    team_file = _replay_team(tmp_path, replies, '[topology]\nkind = "full"\n', wait=True)
    run_dir = tmp_path / "run"
    await run_team("prisonersDilemma", C.load_team(team_file), run_dir=run_dir, progress=False)
    steps = {
        n: [
            e.body for e in events(run_dir, [f"agents/{n}/step"]) if isinstance(e.body, P.AgentStep)
        ]
        for n in ("alice", "bob")
    }
    assert "secret-of-alice" in steps["alice"][1].observation
    assert (
        "note_a.txt is written" in steps["bob"][0].observation
    )  # bob looked only after alice wrote
    assert "No such file or directory" in steps["bob"][1].observation
    assert "strategy.py" in steps["bob"][1].observation  # its own workspace, with the task's files
    assert steps["bob"][2].observation.strip().startswith("mine")
    info = [e.body for e in events(run_dir, ["run/info"]) if isinstance(e.body, P.RunInfo)][-1]
    own = {m: s.session for m, s in info.sessions.items()}
    assert set(own) == {"alice", "bob"} and len({*own.values(), info.session}) == 3
    by_session = {}
    for e in events(run_dir, ["env/"]):
        if isinstance(e.body, P.CommandEvent):
            by_session.setdefault(e.body.agent, set()).add(e.body.session)
    assert by_session["alice"] == {own["alice"]} and by_session["bob"] == {own["bob"]}


def _replay_team(
    tmp_path: Path, replies: dict[str, list[str]], topology: str, wait: bool = False
) -> Path:
    """A two-member team of peers (own sessions, merge best) answering with recorded replies."""
    members = ""
    for name, commands in replies.items():
        traj = tmp_path / f"{name}.traj"
        traj.write_text(
            json.dumps(
                {
                    "trajectory": [
                        {"response": f"DISCUSSION\nstep {i}\n\n```\n{c}\n```\n"}
                        for i, c in enumerate(commands)
                    ]
                }
            )
        )
        members += (
            f'[[agents]]\nname = "{name}"\nrole = "{"waiter" if wait else "peer"}"\n'
            f'model = "replay:{traj}"\nwait_timeout_s = 60\n'
        )
    role = (
        '[roles.waiter]\nextends = "peer"\ncommands = ["bash", "message", "wait", "finish"]\n'
        if wait
        else ""
    )
    path = tmp_path / "team.toml"
    path.write_text(
        f'name = "pair"\nmerge = "best"\n[budget]\nsteps = 20\n{topology}\n{role}{members}'
    )
    return path


# ------------------------------------------------------------------ artefacts between sessions


async def test_a_folder_artefact_is_copied_between_sessions(tmp_path):
    """`pick` and the merge copy a folder artefact file by file over the wire: every file,
    byte for byte, into the other session's workspace; the listing is one recorded step."""
    _bwrap()
    from mlgym.agents import artefacts
    from mlgym.bus.rpc import RpcClient
    from mlgym.env_server.server import EnvServer

    endpoint = f"ipc://{tmp_path}/env.sock"
    srv = EnvServer(endpoint, tmp_path / "sessions")
    await srv.start()
    client = RpcClient(endpoint)
    try:
        opened = []
        for _ in range(2):
            o = await client.request("env", P.SessionOpen(task="prisonersDilemma"), timeout=120)
            opened.append((o.info.session, o.token))
        (a, ta), (b, tb) = opened
        blob = bytes(range(256)) * 40_000  # 10 MB: more than one ReadFile reply
        files = {"model/w.bin": blob, "model/sub/config.json": b'{"x": 1}'}
        for path, data in files.items():
            await client.request(
                "env", P.WriteFile(session=a, path=path, data=data, token=ta), timeout=60
            )
        copy = await artefacts.copy(
            client, src=(a, ta), dst=(b, tb), step=0, path="model", kind="dir", agent="planner"
        )
        assert (copy.files, copy.size, copy.artefact_kind) == (2, len(blob) + 8, "dir")
        for path, data in files.items():
            assert await artefacts._read_whole(client, (b, tb), path) == data
        with pytest.raises(artefacts.CopyError, match="cannot list nothing/"):
            await artefacts.copy(
                client,
                src=(a, ta),
                dst=(b, tb),
                step=0,
                path="nothing",
                kind="dir",
                agent="planner",
            )
    finally:
        await client.close()
        await srv.stop()


def test_channel_expansion_and_refusal_text():
    members = {"p": "planner", "c1": "coder", "c2": "coder", "r": "reviewer"}
    ch = T.expand(T.Topology(kind="star", hub="planner"), members)
    assert T.allowed(ch, "p", "c2", "work") and T.allowed(ch, "c1", "p", "result")
    assert not T.allowed(ch, "c1", "c2", "message")
    assert T.reachable(ch, "p", "review", members) == ["c1", "c2", "r"]
    assert T.describe(ch, "c1") == "* to p"
    pairs = T.expand(T.Topology(kind="pairs", pairs=[["c1", "c2"]], kinds=["message"]), members)
    assert msgspec.to_builtins(pairs) == [
        {"sender": "c1", "receivers": ["c2"], "kinds": ["message"]},
        {"sender": "c2", "receivers": ["c1"], "kinds": ["message"]},
    ]
    assert T.allowed([], "x", "y", "work")  # runs from before topologies: anything goes


# ------------------------------------------------------------------ resume, restarts


@pytest.mark.timeout(420)
@pytest.mark.parametrize("how", ["sigint", "reboot"])
async def test_a_parallel_run_resumes_in_the_same_sessions(tmp_path, how):
    """parallel-3 stopped cleanly (SIGINT) or with every process killed at once: `mlgym
    resume` goes on in the team's session and in each coder's own session (adopted, tokens
    from sessions.token), and the run ends submitted with the best candidate."""
    _bwrap()
    from test_run_lifecycle import Cli, _interrupt, all_gone, resume_to_end, run_json, wait_commands

    run_dir = tmp_path / "run"
    run = Cli(
        tmp_path,
        "run",
        "run",
        "--task",
        "battleOfSexes",
        "--team",
        "parallel-3",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    )
    try:
        await wait_commands(run_dir, 3, run)
        kids = _interrupt(run, run_dir, how)
        await run.wait(90)
        await all_gone(kids)
    finally:
        run.kill()
    state = run_json(run_dir)
    assert set(state["member_sessions"]) == {"coder-1", "coder-2", "coder-3"}
    assert "token" not in json.dumps(state["member_sessions"])  # tokens stay out of run.json
    tokens = json.loads((run_dir / "sessions.token").read_text())
    assert {m: v["session"] for m, v in tokens.items()} == state["member_sessions"]
    assert (run_dir / "sessions.token").stat().st_mode & 0o077 == 0
    result = await resume_to_end(tmp_path, run_dir)
    assert result["exit_status"] == "submitted"
    assert result["final_submission"]["scores"]["Score"] > 1.3  # always_zero, picked from a coder
    infos = [e.body for e in events(run_dir, ["run/info"]) if isinstance(e.body, P.RunInfo)]
    assert len(infos) >= 2 and len({i.session for i in infos}) == 1
    for m, s in state["member_sessions"].items():
        assert {i.sessions[m].session for i in infos} == {s}, m  # adopted, not replaced


@pytest.mark.timeout(300)
async def test_a_killed_environment_server_keeps_every_members_session(tmp_path):
    """The environment server SIGKILLed while three coders work in their own sessions: the new
    server adopts all four sessions, the agents go on, the run ends submitted."""
    _bwrap()
    import asyncio
    import os
    import signal

    from test_agents_crash import env_commands
    from test_run_lifecycle import pids

    run_dir = tmp_path / "run"

    async def kill_env() -> int:
        while env_commands(run_dir) < 4:
            await asyncio.sleep(0.02)
        pid = pids(run_dir)["env"]
        os.kill(pid, signal.SIGKILL)
        return pid

    killer = asyncio.create_task(kill_env())
    result = await run_team(
        "prisonersDilemma", C.load_team("parallel-3"), run_dir=run_dir, progress=False
    )
    assert killer.done()
    assert result["env_restarts"] == 1 and result["exit_status"] == "submitted"
    assert_beats_baseline(result, BASELINES["prisonersDilemma"])
    infos = [e.body for e in events(run_dir, ["run/info"]) if isinstance(e.body, P.RunInfo)]
    assert [i.generation for i in infos] == [1, 2]
    assert infos[0].session == infos[1].session and infos[0].sessions == infos[1].sessions
