"""The environment server with the Docker backend and a warm pool, end to end (real engine,
the offline-built minimal image)."""

from __future__ import annotations

import time

import pytest

from conftest import SessionClient, require
from mlgym.bus import protocol as p
from mlgym.bus.rpc import RpcClient
from mlgym.env_server import image as img
from mlgym.env_server.server import EnvServer

pytestmark = pytest.mark.timeout(600)
TAG = img.MINIMAL_TAG


@pytest.fixture(scope="module")
def task_image() -> str:
    require(img.engine_reachable(), "docker engine not reachable (start dockerd)")
    if not img.image_present(TAG):
        img.build_image(TAG, minimal=True, online=False)
    return TAG


async def test_docker_sessions_from_warm_pool(task_image, tmp_path):
    endpoint = f"ipc://{tmp_path}/env.sock"
    srv = EnvServer(endpoint, tmp_path / "sessions", default_backend="docker", pool_size=1, docker_image=task_image)
    await srv.start()
    client = SessionClient(RpcClient(endpoint))
    try:
        await srv.warm("prisonersDilemma", "docker")
        assert srv._pools[("prisonersDilemma", "docker")].stats()["ready"] == 1
        t0 = time.monotonic()
        opened = await client.request("env", p.SessionOpen(task="prisonersDilemma", backend="docker"), timeout=120)
        took = time.monotonic() - t0
        sid = opened.info.session
        obs = await client.request("env", p.Act(session=sid, command="id -u && ls"), timeout=60)
        assert obs.output.splitlines()[0] != "0" and "strategy.py" in obs.output
        # a file written by the ACI on the host side stays writable for the container user
        await client.request("env", p.Act(session=sid, command="create notes.txt"), timeout=60)
        await client.request("env", p.Act(session=sid, command="edit 1:1\nfirst line\nend_of_edit"), timeout=60)
        obs = await client.request("env", p.Act(session=sid, command="echo second >> notes.txt && cat notes.txt"), timeout=60)
        assert obs.exit_code == 0 and obs.output.split() == ["first", "line", "second"]
        obs = await client.request("env", p.Act(session=sid, command="echo x >> evaluate.py"), timeout=60)
        assert obs.exit_code != 0  # read-only file
        obs = await client.request("env", p.Act(session=sid, command="python -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), 2)'"), timeout=60)
        assert obs.exit_code != 0  # no network
        obs = await client.request("env", p.Act(session=sid, command="validate"), timeout=300)
        assert abs(obs.scores["Score"] - 2.3716) < 0.05, obs.output
        await client.request("env", p.SessionClose(session=sid), timeout=60)
        print(f"open from warm pool: {took * 1000:.0f} ms")
    finally:
        await client.close()
        await srv.stop()
