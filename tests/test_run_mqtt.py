"""Whole runs over MQTT (`mlgym run --bus mqtt://...`, docs/mqtt.md): a real mosquitto on
loopback with passwords (and TLS, and an ACL), the real recorder, supervisor, environment
server and agent processes. The layout of docs/mqtt.md on one machine: the broker, the run
(supervisor, recorder, env server, memory) and an agent started on its own, each reaching the
others only through the broker and the run's tcp ports."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from conftest import (
    Mosquitto, assert_beats_baseline, external_agent_run, make_certs, require, start_mosquitto,
)

from mlgym.agents import config as C
from mlgym.agents.events import events, gaps
from mlgym.agents.supervisor import run_team
from mlgym.bus import protocol as P
from mlgym.bus.endpoints import free_tcp_base, split_host

PASSWORD = "s3cret-for-alice"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")
    monkeypatch.delenv("MLGYM_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("MLGYM_MQTT_PASSWORD_FILE", raising=False)


def secured_mosquitto(tmp_path: Path, tls: dict[str, Path] | None = None) -> Mosquitto:
    """mosquitto with logins (alice: the team; eve: another user of the same broker) and an
    ACL that gives alice `mlgym/#` and `lab/#` and eve only `eve/#`; TLS when given certs."""
    require(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd is not installed")
    conf = tmp_path / "mq-conf"
    conf.mkdir()
    passwd = conf / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "alice", PASSWORD], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "eve", "eve-pass"], check=True)
    acl = conf / "acl"
    acl.write_text("user alice\ntopic readwrite mlgym/#\ntopic readwrite lab/#\n\n"
                   "user eve\ntopic readwrite eve/#\n")
    extra = [f"password_file {passwd}", f"acl_file {acl}"]
    if tls:
        extra += [f"cafile {tls['ca.crt']}", f"certfile {tls['server.crt']}",
                  f"keyfile {tls['server.key']}"]
    return start_mosquitto(tmp_path / "mq", extra, anonymous=False)


def test_host_and_port_of_run_host():
    """`mlgym run --host HOST[:PORT]`; free ports in a row for the run's services."""
    assert split_host("10.0.0.5") == ("10.0.0.5", 0)
    assert split_host("runner.lan:5560") == ("runner.lan", 5560)
    assert split_host("[::1]:5560") == ("::1", 5560) and split_host("::1") == ("::1", 0)
    with pytest.raises(ValueError):
        split_host("runner.lan:http")
    base = free_tcp_base("127.0.0.1", 3)
    import socket

    for port in range(base, base + 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def password_file(tmp_path: Path, text: str = PASSWORD) -> Path:
    path = tmp_path / "mqtt.pass"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def attempts(result: dict) -> list[tuple]:
    return [(a["step"], a["action"], a.get("scores"), a.get("seed")) for a in result["attempts"]]


@pytest.mark.timeout(300)
async def test_team_run_over_password_protected_mqtt_scores_as_over_zeromq(tmp_path):
    """The done-when of issue 23: the scripted default team (planner, coder, literature agent)
    on prisonersDilemma over mosquitto with a password ends exactly as over ZeroMQ: the same
    attempts, the same scores, the same final score; the log is whole; no password on any
    command line."""
    mq = secured_mosquitto(tmp_path)
    try:
        url = f"mqtt://alice@127.0.0.1:{mq.port}?password_file={password_file(tmp_path)}"
        team = C.load_team("default")
        over_zmq = await run_team("prisonersDilemma", team, run_dir=tmp_path / "zmq",
                                  progress=False)
        run_dir = tmp_path / "mqtt"
        over_mqtt = await run_team("prisonersDilemma", team, run_dir=run_dir, progress=False,
                                   bus=url)
    finally:
        mq.stop()
    assert over_zmq["exit_status"] == over_mqtt["exit_status"] == "submitted"
    assert over_mqtt["final_submission"]["scores"] == over_zmq["final_submission"]["scores"]
    assert attempts(over_mqtt) == attempts(over_zmq)
    assert over_mqtt["best_attempt"] == over_zmq["best_attempt"]
    assert over_mqtt["baseline"] == over_zmq["baseline"]

    run = json.loads((run_dir / "run.json").read_text())
    prefix = f"mlgym/{run['run_id']}"
    assert run["bus"] == run["mqtt"] and f"prefix={prefix}" in run["mqtt"]
    assert json.loads((run_dir / "mqtt.json").read_text())["prefix"] == prefix
    assert not (run_dir / "bus.json").exists()  # no ZeroMQ broker was started
    assert gaps(run_dir) == []
    kinds = {type(e.body).__name__ for e in events(run_dir, ["team/"])}
    assert {"WorkItem", "WorkResult", "Question", "Answer", "PlanUpdate"} <= kinds
    assert events(run_dir, ["env/"]), "the environment server published over MQTT"
    for name in ("planner", "coder", "literature"):
        assert (run_dir / "trajectories" / f"{name}.traj").is_file()
    # every child's command line is at the top of its log: none holds the password
    logs = [run_dir / "recorder.log", run_dir / "env.log", *(run_dir / "logs").glob("*.log")]
    assert len(logs) == 5
    for path in logs:
        text = path.read_text()
        assert "--- start 1:" in text and PASSWORD not in text, path


async def _wait_for_turns(run_dir: Path, n: int, timeout: float = 120) -> None:
    def turns() -> int:
        try:
            return sum(isinstance(e.body, P.AgentStep) for e in events(run_dir, ["agents/"]))
        except Exception:  # the log is not there yet
            return 0

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await asyncio.to_thread(turns) < n:
        assert loop.time() < deadline, f"fewer than {n} turns in {timeout} s"
        await asyncio.sleep(0.2)


async def _eavesdrop(port: int, ca: Path, heard: list[str]) -> None:
    """Another user of the broker (eve) listening to everything she is allowed to ask for."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiomqtt.Client("127.0.0.1", port, username="eve", password="eve-pass",
                              tls_context=ctx, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("lab/#", qos=1)
        await client.subscribe("#", qos=1)
        async for msg in client.messages:
            heard.append(str(msg.topic))


@pytest.mark.timeout(300)
async def test_recorder_restart_mid_run_over_tls_fenced_by_an_acl(tmp_path, monkeypatch):
    """The recorder is frozen for 5 s mid-run (acked publishes and history requests go
    unanswered, the broker queues what is published) then killed; the supervisor starts it
    again (the next epoch, on the same log) and the run ends as usual: every turn logged once,
    no gap. The run's topics (a prefix of its own under the ACL) reach no other user."""
    certs = make_certs(tmp_path / "certs")
    mq = secured_mosquitto(tmp_path, tls=certs)
    monkeypatch.setenv("MLGYM_MQTT_PASSWORD", PASSWORD)
    heard: list[str] = []
    eve = asyncio.create_task(_eavesdrop(mq.port, certs["ca.crt"], heard))
    run_dir = tmp_path / "run"
    url = f"mqtts://alice@127.0.0.1:{mq.port}?ca={certs['ca.crt']}&prefix=lab/restart"
    try:
        run = asyncio.create_task(run_team("battleOfSexes", C.load_team("single"),
                                           run_dir=run_dir, progress=False, bus=url))
        await _wait_for_turns(run_dir, 2)
        recorder = json.loads((run_dir / "pids.json").read_text())["broker"]
        os.kill(recorder, signal.SIGSTOP)
        await asyncio.sleep(5)
        os.kill(recorder, signal.SIGKILL)
        result = await asyncio.wait_for(run, 240)
    finally:
        eve.cancel()
        mq.stop()
    assert result["exit_status"] == "submitted" and result["broker_restarts"] == 1
    assert_beats_baseline(result, 1.0227)
    logged = events(run_dir, [""])
    assert gaps(run_dir) == [] and {e.epoch for e in logged} == {1, 2}
    assert len({e.id for e in logged}) == len(logged), "a message was logged twice"
    steps = [e.body.step for e in logged if isinstance(e.body, P.AgentStep)]
    assert steps == list(range(1, len(steps) + 1))
    assert "recorder started" in (run_dir / "recorder.log").read_text().split("--- start 2:")[1]
    assert json.loads((run_dir / "mqtt.json").read_text())["epoch"] == 2
    assert heard == [], "another user of the broker read the run's topics"


@pytest.mark.timeout(240)
def test_an_agent_started_elsewhere_joins_over_mqtt_with_curve_keys(tmp_path):
    """The three-machine layout on loopback: mosquitto; `mlgym run --bus ... --host --keys`
    (supervisor, recorder, env server, memory service); `mlgym agent --bus ... --run ID --keys`
    started on its own with the password in its environment. `mlgym bus tail --run-dir` reads
    the run's bus from mqtt.json."""
    from mlgym.bus.security import init_keys

    mq = secured_mosquitto(tmp_path)
    keys = tmp_path / "keys"
    init_keys(keys)
    env = {**os.environ, "MLGYM_OFFLINE": "1", "MLGYM_MQTT_PASSWORD": PASSWORD}
    url = f"mqtt://alice@127.0.0.1:{mq.port}"
    run_dir = tmp_path / "run"
    cli = [sys.executable, "-m", "mlgym.cli"]
    port = free_tcp_base("127.0.0.1", 2)
    try:
        with external_agent_run(tmp_path, env, ("--bus", url, "--host", f"127.0.0.1:{port}",
                                                "--keys", str(keys))) as (sup, run_info):
            run_id = run_info["run_id"]
            assert run_info["env"] == f"tcp://127.0.0.1:{port}"
            assert run_info["memory"] == f"tcp://127.0.0.1:{port + 1}"
            tail = subprocess.run([*cli, "bus", "tail", "--run-dir", str(run_dir),
                                   "--from-seq", "1", "--count", "1", "run/info"],
                                  capture_output=True, text=True, env=env, timeout=60)
            assert tail.returncode == 0, tail.stderr
            assert "run/info [run_info] supervisor" in tail.stdout
            agent = subprocess.run([*cli, "agent", "--role", "single", "--name", "agent",
                                    "--run", run_id, "--bus", url, "--keys", str(keys),
                                    "--model", "scripted:auto"],
                                   capture_output=True, text=True, env=env, timeout=180)
            assert agent.returncode == 0, agent.stderr[-3000:]
            assert json.loads(agent.stdout.strip().splitlines()[-1]) == {
                "agent": "agent", "exit_status": "submitted"}
            out, _ = sup.communicate(timeout=60)
    finally:
        mq.stop()
    sup_log = (tmp_path / "sup.log").read_text()
    assert sup.returncode == 0, sup_log[-3000:]
    # what the run prints for the agents started elsewhere: the URL with the run's prefix
    assert f"--bus 'mqtt://alice@127.0.0.1:{mq.port}?prefix=mlgym/{run_id}'" in sup_log
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["exit_status"] == "submitted"
    assert_beats_baseline(result, 1.0227)


@pytest.mark.timeout(180)
def test_a_wrong_password_is_one_line_in_every_command(tmp_path):
    mq = secured_mosquitto(tmp_path)
    env = {**os.environ, "MLGYM_OFFLINE": "1", "MLGYM_MQTT_PASSWORD": "not-the-password"}
    url = f"mqtt://alice@127.0.0.1:{mq.port}"
    commands = {
        "run": ["run", "--task", "battleOfSexes", "--team", "single", "--bus", url,
                "--run-dir", str(tmp_path / "run"), "--no-progress"],
        "agent": ["agent", "--role", "single", "--run", "r1", "--bus", url,
                  "--model", "scripted:auto"],
        "bus tail": ["bus", "tail", "--url", url],
        "bus record": ["bus", "record", "--mqtt", url, "--run-dir", str(tmp_path / "rec")],
        "env serve": ["env", "serve", "--bus", url, "--root", str(tmp_path / "env")],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs = {name: subprocess.Popen([sys.executable, "-m", "mlgym.cli", *argv], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, argv in commands.items()}
        outcomes = {name: (proc.communicate(timeout=150), proc.returncode)
                    for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        mq.stop()
    for name, ((_, err), code) in outcomes.items():
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1, (name, err[-3000:])
        assert lines[0].startswith("Error: MQTT broker mqtt://alice@127.0.0.1:"), (name, lines)
        assert "refused the login: not authorized (user 'alice'" in lines[0], (name, lines)
        assert "not-the-password" not in err
