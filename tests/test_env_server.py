"""The environment server end to end: real ZeroMQ RPC, real bubblewrap sandboxes, real task
evaluators. Uses the prisoner's dilemma task (fast evaluator, no data files)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.env_server.sandbox import WORKSPACE
from mlgym.env_server.server import EnvServer
from conftest import SessionClient, require_local_sandbox
from mlgym.tools.aci.core import mlgym_view

TASK = "prisonersDilemma"
ALWAYS_DEFECT = "def row_strategy(history):\n    return 1\n"


@pytest.fixture
async def server(tmp_path):
    require_local_sandbox()
    endpoint = f"ipc://{tmp_path}/env.sock"
    srv = EnvServer(endpoint, tmp_path / "sessions")
    await srv.start()
    client = SessionClient(RpcClient(endpoint))
    try:
        yield srv, client
    finally:
        await client.close()
        await srv.stop()


async def open_session(client: RpcClient, **limits) -> p.SessionOpened:
    reply = await client.request("env", p.SessionOpen(task=TASK, limits=p.Limits(**limits)), timeout=120)
    assert isinstance(reply, p.SessionOpened)
    return reply


async def act(client: RpcClient, sid: str, command: str, timeout: float = 120) -> p.Observation:
    reply = await client.request("env", p.Act(session=sid, command=command), timeout=timeout)
    assert isinstance(reply, p.Observation)
    return reply


async def test_open_act_aci_and_state(server):
    _, client = server
    opened = await open_session(client)
    sid = opened.info.session
    assert "row_strategy" in opened.observation
    assert "(Current Step: 0, Remaining Steps: 50)" in opened.observation
    assert "edit" in opened.tools_help and "validate" in opened.tools_help

    obs = await act(client, sid, "ls")
    assert "strategy.py" in obs.output and obs.exit_code == 0 and obs.step == 1
    obs = await act(client, sid, "open strategy.py")
    assert obs.output.startswith("[File: /home/agent/workspace/strategy.py (")
    assert obs.info["open_file"] == "/home/agent/workspace/strategy.py"
    obs = await act(client, sid, "cd /tmp && pwd")
    assert obs.output.strip() == "/tmp" and obs.info["cwd"] == "/tmp"
    obs = await act(client, sid, "vim strategy.py")
    assert obs.exit_code != 0 and "interactive" in obs.output.lower()
    status = await client.request("env", p.SessionStatus(session=sid))
    assert isinstance(status, p.SessionInfo) and status.step == 4 and status.state == "open"
    listed = await client.request("env", p.SessionList(token=opened.token))
    assert [s.session for s in listed.sessions] == [sid]
    assert (await client.request("env", p.SessionList())).sessions == []  # no token, nothing


async def test_validate_submit_scores_structured(server):
    _, client = server
    sid = (await open_session(client)).info.session
    obs = await act(client, sid, "validate", timeout=300)
    assert obs.info["action"] == "validate" and not obs.done
    assert abs(obs.scores["Score"] - 2.3716) < 0.05  # the starter strategy is the baseline
    assert obs.baseline["Score"] == pytest.approx(2.3716301918029785)
    # MLGym's wording, line by line
    assert obs.output == ("Your code produced a valid submission artefact at "
                          "/home/agent/workspace/strategy.py.\n"
                          f"Baseline Score: {{'Score': {obs.baseline['Score']!r}}}\n"
                          f"Evaluation Score: {obs.scores!r}")
    await client.request("env", p.WriteFile(session=sid, path="strategy.py", data=ALWAYS_DEFECT.encode()))
    obs = await act(client, sid, "submit", timeout=300)
    assert obs.done and not obs.truncated and obs.info["exit_status"] == "submitted"
    assert obs.scores["Score"] > 0 and obs.output == "Exited (submit)"
    with pytest.raises(RpcError) as err:
        await act(client, sid, "ls")
    assert err.value.code == "episode_over"


async def test_read_artefact_returns_the_bytes_that_were_scored(server):
    # the supervisor snapshots validated artefacts; reading the workspace instead raced with the
    # agent's next edit (it once copied a half-written, empty file as the "best" artefact)
    _, client = server
    sid = (await open_session(client)).info.session
    await client.request("env", p.WriteFile(session=sid, path="strategy.py", data=ALWAYS_DEFECT.encode()))
    obs = await act(client, sid, "validate", timeout=300)
    assert obs.scores and obs.step == 1
    await client.request("env", p.WriteFile(session=sid, path="strategy.py", data=b""))
    kept = await client.request("env", p.ReadArtefact(session=sid, step=obs.step))
    assert isinstance(kept, p.FileContent)
    assert kept.data == ALWAYS_DEFECT.encode() and kept.path == "strategy.py" and kept.size == len(kept.data)
    with pytest.raises(RpcError) as err:
        await client.request("env", p.ReadArtefact(session=sid, step=obs.step + 5))
    assert err.value.code == "not_found" and f"kept: {obs.step}" in err.value.message


async def test_bad_submission_is_a_clear_error(server):
    _, client = server
    sid = (await open_session(client)).info.session
    await client.request("env", p.WriteFile(session=sid, path="strategy.py", data=b"def row_strategy(h):\n    return 7\n"))
    obs = await act(client, sid, "validate", timeout=300)
    assert obs.scores == {} and obs.exit_code != 0
    code = obs.info["error"]["code"]
    assert obs.output.startswith("Failed to decode metrics from evaluation script. Output:\n---\n"
                                 f"{code}: ")
    assert obs.output.endswith("\n---\nPlease make sure the evaluation script prints the metrics "
                               "in json format.")
    await act(client, sid, "rm strategy.py")
    obs = await act(client, sid, "validate", timeout=300)
    assert obs.info["error"]["code"] == "submission_not_found"
    assert obs.output == ("Submission artefact not found. You have to produce a valid submission "
                          "artefact as described in the task description to validate your results.")


async def test_step_budget_truncates_with_autosubmission(server):
    _, client = server
    sid = (await open_session(client, max_steps=2)).info.session
    obs = await act(client, sid, "ls")
    assert not obs.done and obs.remaining_steps == 1
    obs = await act(client, sid, "echo last", timeout=300)
    assert obs.done and obs.truncated and obs.info["exit_status"] == "autosubmission"
    # the step's output is its own; the auto-submission is MLGym's next observation
    assert "Score" in obs.scores and obs.output.strip() == "last"
    assert obs.info["autosubmission"] == "Exited (max_steps)"


async def test_integrity_secret_invisible_readonly_and_paths(server, tmp_path):
    _, client = server
    sid = (await open_session(client)).info.session
    from mlgym.tasks import registry

    secret = registry.load_task(TASK).dir / "secret" / "opponent.py"
    obs = await act(client, sid, f"cat {secret}; ls {registry.TASKS_ROOT}")
    assert obs.exit_code != 0 and "No such file" in obs.output
    obs = await act(client, sid, "ls /root /home; ls ..")
    assert "workspace" in obs.output and "s0" not in obs.output  # no other session dirs
    obs = await act(client, sid, "echo x >> evaluate.py")
    assert obs.exit_code != 0  # read-only file
    for bad in ("../../etc/passwd", "/etc/passwd", "data/../../x"):
        with pytest.raises(RpcError) as err:
            await client.request("env", p.ReadFile(session=sid, path=bad))
        assert err.value.code == "path_refused"
    await act(client, sid, "ln -s /etc/hostname link")
    with pytest.raises(RpcError) as err:
        await client.request("env", p.ReadFile(session=sid, path="link"))
    assert err.value.code == "path_refused"
    content = await client.request("env", p.ReadFile(session=sid, path="strategy.py"))
    assert b"def row_strategy" in content.data


async def test_read_only_files_have_one_truth(server):
    """A read-only task file (mounted pristine over its workspace copy) is refused by the
    editor and by WriteFile: what `open` shows is what the shell and the evaluator see."""
    _, client = server
    sid = (await open_session(client)).info.session
    before = (await act(client, sid, "cat evaluate.py")).output
    await act(client, sid, "open evaluate.py")
    for cmd in ("edit 1:1\n# changed\nend_of_edit", "insert 0\n# changed\nend_of_insert"):
        obs = await act(client, sid, cmd)
        assert obs.output == ("Error: You cannot edit read-only file "
                              "/home/agent/workspace/evaluate.py")
    obs = await client.request("env", p.ToolCall(session=sid, tool="edit", args={
        "start_line": 1, "end_line": 1, "replacement_text": "# changed\n"}))
    assert obs.output.startswith("Error: You cannot edit read-only file")
    for path in ("evaluate.py", "/home/agent/workspace/evaluate.py", "./evaluate.py"):
        with pytest.raises(RpcError) as err:
            await client.request("env", p.WriteFile(session=sid, path=path, data=b"x = 1\n"))
        assert err.value.code == "read_only" and "read-only" in err.value.message
    obs = await act(client, sid, "create evaluate.py")
    assert obs.output.startswith("Error: File 'evaluate.py' already exists.")
    shown = (await act(client, sid, "search_file changed evaluate.py")).output
    assert shown.startswith("No matches found")
    assert (await act(client, sid, "cat evaluate.py")).output == before
    got = await client.request("env", p.ReadFile(session=sid, path="evaluate.py"))
    assert mlgym_view(got.data.decode()) == before  # (observations drop empty lines, as MLGym's)
    # the writable files stay writable, and `ls` is MLGym's `ls -F`
    await client.request("env", p.WriteFile(session=sid, path="strategy.py",
                                            data=ALWAYS_DEFECT.encode()))
    await act(client, sid, "mkdir -p runs")
    assert "runs/" in (await act(client, sid, "ls")).output.split()


async def test_errors_are_typed(server):
    _, client = server
    with pytest.raises(RpcError) as err:
        await client.request("env", p.SessionOpen(task="noSuchTask"))
    assert err.value.code == "unknown_task"
    with pytest.raises(RpcError) as err:
        await client.request("env", p.Act(session="nope", command="ls"))
    assert err.value.code == "no_session"
    with pytest.raises(RpcError) as err:
        await client.request("env", p.Note(text="hello"))
    assert err.value.code == "unsupported"


async def test_tool_call_structured(server):
    _, client = server
    sid = (await open_session(client)).info.session
    reply = await client.request("env", p.ToolCall(session=sid, tool="open", args={"path": "strategy.py"}))
    assert isinstance(reply, p.Observation) and "[File: /home/agent/workspace/strategy.py" in reply.output
    reply = await client.request("env", p.ToolCall(session=sid, tool="search_file", args={"search_term": "row_strategy"}))
    assert "row_strategy" in reply.output


async def test_timeout_and_shell_survives(server):
    _, client = server
    sid = (await open_session(client)).info.session
    t0 = time.monotonic()
    obs = await client.request("env", p.Act(session=sid, command="export KEEP=1; sleep 1000", timeout_s=1.0), timeout=60)
    assert time.monotonic() - t0 < 30
    assert obs.exit_code != 0
    obs = await act(client, sid, "echo $KEEP")
    assert obs.output.strip() == "1"


async def test_concurrent_sessions(server):
    _, client = server
    opened = await asyncio.gather(*(open_session(client) for _ in range(4)))
    sids = [o.info.session for o in opened]
    assert len(set(sids)) == 4
    outs = await asyncio.gather(*(act(client, sid, f"echo {sid} > me.txt && cat me.txt") for sid in sids))
    assert [o.output.strip() for o in outs] == sids


async def test_client_disconnect_mid_command(server, tmp_path):
    srv, client = server
    sid = (await open_session(client)).info.session
    other = SessionClient(RpcClient(srv.rpc.bound[0]))
    other.tokens = client.tokens  # a second connection of the session's owner
    pending = asyncio.create_task(other.request("env", p.Act(session=sid, command="sleep 2; echo done > done.txt"), timeout=30))
    await asyncio.sleep(0.5)
    await other.close()  # the client goes away mid-command
    with pytest.raises((asyncio.CancelledError, Exception)):
        await pending
    obs = await act(client, sid, "cat done.txt", timeout=60)  # the server and session carry on
    assert obs.output.strip() == "done"


async def test_events_published_on_bus(tmp_path):
    require_local_sandbox()
    from mlgym.bus import connect
    from mlgym.bus.broker import Broker

    broker = Broker(run_dir=tmp_path / "run")
    await broker.start()
    try:
        bus = connect(broker.endpoints.url, sender="env")
        await bus.connect()
        listener = connect(broker.endpoints.url, sender="test")
        await listener.connect()
        sub = listener.subscribe("env/")
        srv = EnvServer(f"ipc://{tmp_path}/env.sock", tmp_path / "sessions", bus=bus)
        await srv.start()
        client = SessionClient(RpcClient(f"ipc://{tmp_path}/env.sock"))
        sid = (await open_session(client)).info.session
        await act(client, sid, "echo hello-bus")
        await act(client, sid, "validate", timeout=300)
        kinds = []
        deadline = time.monotonic() + 30
        while "score_event" not in kinds and time.monotonic() < deadline:
            env = await sub.get(timeout=30)
            kinds.append(env.kind)
            assert env.topic.startswith(f"env/{sid}/")
        assert "command_event" in kinds and "observation_event" in kinds and "score_event" in kinds
        await client.close()
        await srv.stop()
        await sub.close()
        await bus.close()
        await listener.close()
    finally:
        await broker.stop()


async def test_curve_on_tcp_refuses_unknown_keys(tmp_path):
    """The env service over TCP with CURVE: an allowed client works, an unknown key is refused."""
    require_local_sandbox()
    import socket

    import zmq.auth

    from mlgym.bus.security import ClientCurve, client_curve, init_keys, server_curve

    keys = tmp_path / "keys"
    init_keys(keys, clients=("agent",))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    srv = EnvServer(endpoint, tmp_path / "sessions", curve=server_curve(keys))
    await srv.start()
    good = RpcClient(endpoint, curve=client_curve(keys, "agent"))
    _, stranger_secret = zmq.auth.create_certificates(tmp_path, "stranger")
    bad = RpcClient(endpoint, curve=ClientCurve(Path(stranger_secret), keys / "server.key"))
    try:
        pong = await good.request("env", p.Ping(payload=b"x"), timeout=10)
        assert isinstance(pong, p.Pong) and pong.service == "env"
        with pytest.raises((RpcError, asyncio.TimeoutError)) as err:
            await bad.request("env", p.Ping(), timeout=3)
        if isinstance(err.value, RpcError):
            assert err.value.code == "unauthorized"
    finally:
        await good.close()
        await bad.close()
        await srv.stop()


SAME_EPISODE = ["ls", "open strategy.py", "search_file row_strategy", "find_file strategy.py",
                "create defect.py", f"edit 1:1\n{ALWAYS_DEFECT}end_of_edit", "cat defect.py",
                "mkdir -p sub && cd sub && pwd", "open ../defect.py",
                "cd .. && cp defect.py strategy.py", "python -c 'import os; print(os.getcwd())'",
                "validate", "submit"]


async def run_episode(tmp_path: Path, name: str) -> tuple[p.SessionOpened, list[p.Observation]]:
    endpoint = f"ipc://{tmp_path}/{name}.sock"
    srv = EnvServer(endpoint, tmp_path / name)
    await srv.start()
    client = RpcClient(endpoint)
    try:
        opened = await open_session(client)
        return opened, [await act(client, opened.info.session, c, timeout=300) for c in SAME_EPISODE]
    finally:
        await client.close()
        await srv.stop()


async def test_without_namespaces_only_the_workspace_path_differs(tmp_path, monkeypatch):
    """The plain fallback (no bubblewrap, no namespaces) against the real sandbox: the same
    episode gives the same observations, states and scores, except that the workspace is named
    by its host path, consistently."""
    require_local_sandbox()
    opened, sandboxed = await run_episode(tmp_path, "sandboxed")
    assert opened.info.workspace == WORKSPACE
    monkeypatch.setenv("MLGYM_BWRAP", str(tmp_path / "no-bwrap"))
    monkeypatch.setenv("MLGYM_NO_BWRAP", "plain")
    plain_opened, plain = await run_episode(tmp_path, "plain")
    host = plain_opened.info.workspace
    assert host == str((tmp_path / "plain" / plain_opened.info.session / "workspace").resolve())
    assert "WITHOUT ISOLATION" in plain_opened.info.warning

    def same(text: str) -> str:
        return text.replace(host, WORKSPACE)

    assert host in plain_opened.observation and sum(host in o.output for o in plain) >= 5
    assert same(plain_opened.observation) == opened.observation
    assert len(plain) == len(sandboxed) == len(SAME_EPISODE)
    for cmd, a, b in zip(SAME_EPISODE, sandboxed, plain, strict=True):
        assert (same(b.output), b.exit_code, b.scores) == (a.output, a.exit_code, a.scores), cmd
        assert {k: same(str(v)) for k, v in b.info.items()} == {k: str(v) for k, v in a.info.items()}
    assert plain[-2].scores["Score"] > 2.3716 and plain[-1].done  # defecting beats the baseline
