"""A killed environment server comes back with every open session as the agent last left it
(issue #16, finding 9: the restarted run used to hold the last *validated* file, not the
agent's latest edit): `mlgym env serve --adopt` takes over the sessions a dead server left
on disk, with their workspaces, step counts, scores, kept artefacts and viewer state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SessionClient, require
from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.env_server import image as img

TASK = "prisonersDilemma"
ALWAYS_DEFECT = "def row_strategy(history):\n    return 1\n"
TIT_FOR_TAT = "def row_strategy(history):\n    return history[-1][1] if history else 0\n"


class Server:
    """`mlgym env serve` in its own process, so it can be killed outright."""

    def __init__(self, root: Path, backend: str, *, adopt: bool):
        self.root = root
        self.endpoint = f"ipc://{root}/env.sock"
        argv = [sys.executable, "-m", "mlgym.cli", "env", "serve", "--root", str(root),
                "--endpoint", self.endpoint, "--backend", backend]
        self.log = open(root.parent / "env.log", "ab")
        env = {**os.environ, "MLGYM_DOCKER_IMAGE": img.MINIMAL_TAG}
        self.proc = subprocess.Popen(argv + (["--adopt"] if adopt else []), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

    async def ready(self, client: RpcClient) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (self.root.parent / "env.log").read_text()[-3000:]
            try:
                await client.request("env", p.Ping(), timeout=0.5)
                return
            except (TimeoutError, RpcError):
                assert time.monotonic() < deadline, "the server did not answer within 60 s"

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _act(client: RpcClient, sid: str, command: str) -> p.Observation:
    obs = await client.request("env", p.Act(session=sid, command=command, agent="t"), timeout=120)
    assert isinstance(obs, p.Observation)
    return obs


@pytest.fixture(params=["local", "docker"])
def backend(request) -> str:
    if request.param == "local":
        require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")
    else:
        require(img.engine_reachable(), "docker engine not reachable (start dockerd)")
        if not img.image_present(img.MINIMAL_TAG):
            img.build_image(img.MINIMAL_TAG, minimal=True, online=False)
    return request.param


def _containers_of(pid: int) -> list[dict[str, str]]:
    """The mlgym containers a server process started (their owner label is host:pid:start)."""
    from mlgym.env_server.sandbox import docker as docker_sandbox

    return [c for c in docker_sandbox.managed_containers()
            if c["owner"].split(":")[1:2] == [str(pid)]]


@pytest.mark.timeout(600)
async def test_a_killed_server_is_adopted_with_the_workspace_as_left(tmp_path, backend):
    root = tmp_path / "env"
    root.mkdir()
    server = Server(root, backend, adopt=False)
    client = SessionClient(RpcClient(f"ipc://{root}/env.sock"))
    try:
        await server.ready(client)
        opened = await client.request("env", p.SessionOpen(task=TASK, backend=backend), timeout=300)
        assert isinstance(opened, p.SessionOpened)
        sid = opened.info.session
        closed = await client.request("env", p.SessionOpen(task=TASK, backend=backend), timeout=300)
        await client.request("env", p.SessionClose(session=closed.info.session), timeout=30)

        write = p.WriteFile(session=sid, path="strategy.py", data=TIT_FOR_TAT.encode())
        await client.request("env", write, timeout=30)
        validated = await _act(client, sid, "validate")
        assert validated.scores["Score"] > 2.0
        # the agent's latest edit, after its last validation: what finding 9 lost
        lines = len(TIT_FOR_TAT.splitlines())
        await _act(client, sid, "open strategy.py")
        edited = await _act(client, sid, f"edit 1:{lines}\n{ALWAYS_DEFECT}end_of_edit")
        assert edited.exit_code == 0, edited.output
        await _act(client, sid, "mkdir -p notes && echo draft > notes/idea.txt")
        await _act(client, sid, "goto 1")
        before = await client.request("env", p.SessionStatus(session=sid), timeout=10)
        assert isinstance(before, p.SessionInfo) and before.step == 5

        dead = server.proc.pid
        server.kill()
        journal_path = root / "sessions" / sid / "session.jsonl"
        with open(journal_path, "ab") as journal:  # a write torn by a crash
            journal.write(b'{"id": "' + sid.encode())
        server = Server(root, backend, adopt=True)
        await server.ready(client)
        if backend == "docker":  # the dead server's containers are gone, the new one's serve
            assert _containers_of(dead) == [] and len(_containers_of(server.proc.pid)) == 1

        listed = await client.request("env", p.SessionList(token=opened.token), timeout=10)
        assert [s.session for s in listed.sessions] == [sid]  # its owner's token still opens it
        gone = await client.request("env", p.SessionList(token=closed.token), timeout=10)
        assert gone.sessions == []  # the closed one stays closed
        after = await client.request("env", p.SessionStatus(session=sid), timeout=10)
        assert isinstance(after, p.SessionInfo)
        assert (after.step, after.max_steps, after.state) == (before.step, before.max_steps, "open")
        assert after.best_scores == before.best_scores and after.open_file.endswith("strategy.py")
        data = await client.request("env", p.ReadFile(session=sid, path="strategy.py"), timeout=10)
        assert data.data.decode() == ALWAYS_DEFECT  # the latest edit, not the validated file
        kept = await client.request("env", p.ReadArtefact(session=sid, step=validated.step),
                                    timeout=10)
        assert kept.data.decode() == TIT_FOR_TAT  # the scored copy survives too

        obs = await _act(client, sid, "cat notes/idea.txt")  # files beside the artefact too
        assert "draft" in obs.output and obs.step == before.step + 1
        assert obs.info["open_file"] == "/home/agent/workspace/strategy.py"
        obs = await _act(client, sid, "submit")
        assert obs.done and obs.scores["Score"] != validated.scores["Score"]  # always-defect

        server.kill()  # a finished session is not adopted again
        server = Server(root, backend, adopt=True)
        await server.ready(client)
        listed = await client.request("env", p.SessionList(token=opened.token), timeout=10)
        assert listed.sessions == []
    finally:
        await client.close()
        server.stop()
