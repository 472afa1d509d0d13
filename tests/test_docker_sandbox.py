"""The docker sandbox backend end to end, against a real engine and the minimal task image.

The session fixture builds `mlgym/task:minimal` offline when it is missing or stale (a cold
build debootstraps Debian: a minute or two; cached rebuilds take about a second)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require

docker = pytest.importorskip("docker")

from mlgym.env_server import image as img  # noqa: E402
from mlgym.env_server.pool import SandboxPool  # noqa: E402
from mlgym.env_server.sandbox.base import (  # noqa: E402
    Mount,
    SandboxConfig,
    SandboxPathError,
    create,
)

pytestmark = pytest.mark.timeout(600)  # the first test may wait for a cold image build

TAG = img.MINIMAL_TAG


@pytest.fixture(scope="session")
def task_image() -> str:
    require(img.engine_reachable(), "docker engine not reachable (start dockerd)")
    try:
        img.build_image(TAG, minimal=True, online=False)
    except img.ImageBuildError as exc:
        require(img.image_present(TAG), f"cannot build {TAG}: {exc}")
    return TAG


def _labelled(session: str) -> list:
    cli = docker.from_env()
    try:
        return cli.containers.list(all=True, filters={"label": f"mlgym.session={session}"})
    finally:
        cli.close()


def config(tmp_path: Path, **kw) -> SandboxConfig:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    return SandboxConfig(workspace=ws, image=TAG, **kw)


@pytest.fixture
async def sandbox(task_image, tmp_path, request):
    sb = create("docker", config(tmp_path, memory_mb=256, max_processes=64),
                session=f"t-{request.node.name[:40]}", cpus=1.0)
    await sb.start()
    yield sb
    await sb.stop()


async def test_shell_persists_cwd_env_and_exit_codes(sandbox):
    r = await sandbox.exec("mkdir -p sub/deeper && cd sub && export FOO=bar && pwd")
    assert r.exit_code == 0 and r.output.strip() == "/home/agent/workspace/sub"
    r = await sandbox.exec("echo $FOO; pwd")
    assert r.output.split() == ["bar", "/home/agent/workspace/sub"]
    assert r.cwd == "/home/agent/workspace/sub"
    r = await sandbox.exec("ls /no/such/place")
    assert r.exit_code == 2 and "No such file" in r.output
    r = await sandbox.exec("bash -c 'echo to-stderr >&2; exit 7'")
    assert r.exit_code == 7 and "to-stderr" in r.output
    r = await sandbox.exec("python -c 'import numpy, sys; print(numpy.__name__, sys.prefix)'")
    assert r.output.split() == ["numpy", "/opt/taskenv"]
    r = await sandbox.exec("echo $OMP_WAIT_POLICY")  # idle torch threads sleep, not spin
    assert r.output.strip() == "PASSIVE"


async def test_timeout_kills_command_and_shell_survives(sandbox):
    await sandbox.exec("cd /tmp && export KEEP=1")
    r = await sandbox.exec("sleep 300 & sleep 300; echo never", timeout=1)
    assert r.timed_out and "never" not in r.output
    r = await sandbox.exec("echo $KEEP $PWD; pgrep -f 'sleep 300' | wc -l")
    assert r.exit_code == 0 and r.output.split() == ["1", "/tmp", "0"]


async def test_lost_shell_and_stopped_container_are_replaced(sandbox):
    job = await sandbox.start_background("sleep 300")
    await sandbox.exec("cd /tmp && export GONE=1")
    r = await sandbox.exec("kill -9 $$")  # the agent kills its own shell
    assert r.shell_restarted and r.exit_code == -1
    r = await sandbox.exec("echo \"[$GONE]\"; pwd")
    assert r.output.split() == ["[]", "/tmp"] and not r.shell_restarted
    assert (await sandbox.job_status(job))["running"]  # jobs live in the container, not the shell
    r = await sandbox.exec("kill 1; sleep 0.5; echo keeper-ignores-term")
    assert r.output.strip() == "keeper-ignores-term"
    r = await sandbox.exec("pkill -KILL -x sleep; sleep 30", timeout=60)  # the container stops
    assert r.shell_restarted and "background jobs" in r.output
    r = await sandbox.exec("echo back")
    assert r.output.strip() == "back" and await sandbox.alive()
    status = await sandbox.job_status(job)
    assert status["lost"] and not status["running"]


async def test_a_fork_bomb_that_kills_the_shell_is_purged_from_the_host(sandbox):
    """bash exits when a fork fails for good, and the shell's own purge dies with it: the
    host must clear the bomb before the next shell, or that shell starves (`fork: retry`)."""
    job = await sandbox.start_background("sleep 300")
    r = await sandbox.exec("(b(){ b|b& }; b) >/dev/null 2>&1 & sleep 3; kill -9 $$", timeout=60)
    assert r.shell_restarted and "a fork bomb" in r.output, r.output
    r = await sandbox.exec("echo alive; ps -e --no-headers | wc -l", timeout=30)
    assert r.output.split()[0] == "alive" and "fork: retry" not in r.output, r.output
    assert int(r.output.split()[-1]) < 10, r.output
    assert (await sandbox.job_status(job))["lost"]  # the purge took the jobs too, and says so


async def test_non_root_readonly_root_no_caps(sandbox):
    r = await sandbox.exec("id -u; id -g; grep CapEff /proc/self/status")
    uid, gid, _, caps = r.output.split()
    assert (int(uid), int(gid)) == (sandbox.uid, sandbox.gid) and int(uid) != 0
    assert int(caps, 16) == 0
    r = await sandbox.exec("touch /etc/owned")
    assert r.exit_code != 0 and "Read-only file system" in r.output
    r = await sandbox.exec("touch /tmp/ok ~/ok && echo writable")
    assert r.output.strip() == "writable"


async def test_no_network(sandbox):
    r = await sandbox.exec("command ls /sys/class/net")  # no `ls -F` alias
    assert r.output.split() == ["lo"]
    r = await sandbox.exec(
        "python -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"")
    assert r.exit_code != 0 and "unreachable" in r.output.lower()


async def test_memory_limit_kills_the_hog_not_the_shell(sandbox):
    r = await sandbox.exec("python -c 'b = bytearray(1024 * 2**20); print(len(b))'", timeout=60)
    assert r.exit_code == 137, r.output  # SIGKILL from the cgroup OOM killer
    r = await sandbox.exec("echo still-here")
    assert r.output.strip() == "still-here" and not r.shell_restarted


async def test_pids_limit(sandbox):
    script = (
        "import threading, time\n"
        "ev = threading.Event(); n = 0\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        threading.Thread(target=ev.wait, daemon=True).start(); n += 1\n"
        "except RuntimeError:\n"
        "    print('refused after', n)\n"
        "ev.set()\n"
    )
    await sandbox.write_file("threads.py", script.encode())
    r = await sandbox.exec("python threads.py", timeout=60)
    refused = re.search(r"refused after (\d+)", r.output)
    assert refused and int(refused.group(1)) < 64, r.output
    assert "hit its process limit while this command ran" in r.output  # told, from pids.events


async def test_files_through_the_workspace(sandbox):
    await sandbox.write_file("data/new/input.txt", b"from host\n")
    r = await sandbox.exec("cat data/new/input.txt && echo agent-line >> data/new/input.txt"
                           " && echo made > data/new/out.txt")
    assert r.exit_code == 0, r.output
    assert await sandbox.read_file("data/new/input.txt") == b"from host\nagent-line\n"
    assert await sandbox.read_file("/home/agent/workspace/data/new/out.txt") == b"made\n"
    host = sandbox.config.workspace / "data/new/out.txt"
    assert host.read_bytes() == b"made\n" and host.stat().st_uid == sandbox.uid
    for bad in ("../escape.txt", "/etc/passwd", "data/../../x"):
        with pytest.raises(SandboxPathError):
            await sandbox.write_file(bad, b"x")
    await sandbox.exec("ln -s /etc/passwd leak && ln -s / root")
    with pytest.raises(SandboxPathError):
        await sandbox.read_file("leak")
    with pytest.raises(SandboxPathError):
        await sandbox.read_file("root/etc/shadow")


async def test_background_job_streams_and_can_be_killed(sandbox):
    seen: list[str] = []
    job = await sandbox.start_background("for i in 1 2 3; do echo tick $i; sleep 0.1; done",
                                         on_output=seen.append)
    for _ in range(100):
        if not (await sandbox.job_status(job))["running"]:
            break
        await asyncio.sleep(0.1)
    status = await sandbox.job_status(job)
    assert status["exit_code"] == 0
    assert (await sandbox.job_output(job)).split() == ["tick", "1", "tick", "2", "tick", "3"]
    long = await sandbox.start_background("sleep 600")
    assert (await sandbox.job_status(long))["running"]
    await sandbox.kill_job(long)
    status = await sandbox.job_status(long)
    assert not status["running"] and status["exit_code"] == 137
    r = await sandbox.exec("pgrep -f 'sleep 600' | wc -l")
    assert r.output.strip() == "0"
    for _ in range(50):
        if "tick 3" in "".join(seen):
            break
        await asyncio.sleep(0.1)
    assert "".join(seen).split() == ["tick", "1", "tick", "2", "tick", "3"]


async def test_run_isolated_fresh_container(sandbox, tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    (task / "evaluate.py").write_text(
        "import json, os, socket\n"
        "open('/out/scores.json', 'w').write(json.dumps({\n"
        "  'seen': sorted(os.listdir('/task')),\n"
        "  'workspace_visible': os.path.exists('/home/agent/workspace/agent.txt'),\n"
        "  'nets': sorted(os.listdir('/sys/class/net'))}))\n"
        "try:\n"
        "    open('/task/tamper', 'w')\n"
        "except OSError as e:\n"
        "    print('readonly', e.errno)\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    await sandbox.write_file("agent.txt", b"agent was here")
    r = await sandbox.run_isolated(
        ["python", "/task/evaluate.py"], timeout=60,
        mounts=[Mount(task, "/task"), Mount(out, "/out", writable=True)], cwd="/task")
    assert r.exit_code == 0, r.output
    assert "readonly 30" in r.output  # EROFS
    scores = json.loads((out / "scores.json").read_text())
    assert scores == {"seen": ["evaluate.py"], "workspace_visible": False, "nets": ["lo"]}
    r = await sandbox.run_isolated(["sleep", "120"], timeout=1)
    assert r.timed_out and r.exit_code == 137
    assert [c for c in _labelled(sandbox.session) if c.labels["mlgym.role"] == "isolated"] == []


async def test_stop_removes_container(task_image, tmp_path):
    sb = create("docker", config(tmp_path), session="t-stop-removes")
    await sb.start()
    assert len(_labelled("t-stop-removes")) == 1
    await sb.stop()
    await sb.stop()  # idempotent
    assert _labelled("t-stop-removes") == []


async def test_pool_hands_out_started_sandboxes(task_image, tmp_path):
    template = SandboxConfig(workspace=tmp_path / "unused", image=TAG, memory_mb=256)
    pool = SandboxPool("docker", template, tmp_path / "pool", size=2, session="t-pool")
    await pool.start(wait=True)
    assert pool.stats()["ready"] == 2

    def starter(ws: Path) -> None:
        (ws / "starter.py").write_text("print('baseline')\n")

    t0 = time.monotonic()
    sb = await pool.acquire(prepare=starter)
    acquire_s = time.monotonic() - t0
    print(f"pool acquire took {acquire_s * 1000:.1f} ms")
    try:
        r = await sb.exec("python starter.py && echo '# tuned' >> starter.py && pwd")
        assert r.exit_code == 0, r.output
        assert r.output.split() == ["baseline", "/home/agent/workspace"]
        assert (sb.config.workspace / "starter.py").read_text().endswith("# tuned\n")
        others = [await pool.acquire() for _ in range(2)]  # drains the pool; refills behind
        workspaces = {s.config.workspace for s in [sb, *others]}
        assert len(workspaces) == 3
        for s in others:
            await s.stop()
        for _ in range(200):
            if pool.stats()["ready"] == 2:
                break
            await asyncio.sleep(0.05)
        assert pool.stats()["ready"] == 2
    finally:
        await sb.stop()
        await pool.close()
    assert _labelled("t-pool") == []


async def test_cleanup_removes_containers_of_a_dead_server(task_image, tmp_path):
    from mlgym.env_server.sandbox import docker as dsb

    script = tmp_path / "server.py"
    script.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from mlgym.env_server.sandbox.base import SandboxConfig\n"
        "from mlgym.env_server.sandbox.docker import DockerSandbox\n"
        "async def main():\n"
        f"    sb = DockerSandbox(SandboxConfig(workspace=Path(sys.argv[1]), image={TAG!r}),\n"
        "                       session='t-crashed')\n"
        "    await sb.start()\n"
        "    print('started', flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ws")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        assert len(_labelled("t-crashed")) == 1
        removed = await asyncio.to_thread(dsb.cleanup)  # owner alive: kept
        assert not any("t-crashed" in name for name in removed)
        proc.kill()  # the "server" crashes without stopping its sandbox
        proc.wait()
        assert len(_labelled("t-crashed")) == 1
        removed = await asyncio.to_thread(dsb.cleanup)
        assert any("t-crashed" in name for name in removed)
        assert _labelled("t-crashed") == []
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_no_mlgym_containers_left(task_image):
    """Runs last in this file: everything the tests started is gone."""
    cli = docker.from_env()
    try:
        left = [c.name for c in cli.containers.list(all=True, filters={"label": "mlgym.managed=1"})
                if c.labels.get("mlgym.session", "").startswith("t-")
                and c.labels.get("mlgym.owner", "").split(":")[1:2] == [str(os.getpid())]]
    finally:
        cli.close()
    assert left == []
