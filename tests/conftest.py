"""Shared test set-up.

Tests that need a system service (mosquitto, bubblewrap, a Docker engine, Node.js) call
`require(...)`: on a laptop without it they skip with a printed reason; with
MLGYM_REQUIRE_SERVICES=1 (set by .ci/run) a missing service is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STRICT = os.environ.get("MLGYM_REQUIRE_SERVICES") == "1"


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if STRICT:
        pytest.fail(f"required service missing (MLGYM_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def require_local_sandbox() -> None:
    """The `local` sandbox as agents know it (/home/agent/workspace, isolated): bubblewrap, or
    where it is missing its stand-in, which needs namespaces (sandbox/nobwrap.py)."""
    from mlgym.env_server.sandbox import nobwrap
    from mlgym.env_server.sandbox.local import find_bwrap

    if find_bwrap() is not None:
        return
    chosen = nobwrap.stand_in(nobwrap.not_found(os.environ.get("MLGYM_BWRAP", "bwrap")))
    require(chosen.mode == "namespaces",
            "bubblewrap (bwrap) is not installed and this machine allows no namespaces for its "
            "stand-in")


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under MLGYM_REQUIRE_SERVICES=1: {report.longrepr}"


@contextlib.contextmanager
def external_agent_run(tmp_path: Path, env: dict[str, str], extra: tuple[str, ...] = ()
                       ) -> Iterator[tuple[subprocess.Popen, dict]]:
    """`mlgym run` on battleOfSexes whose one agent ("agent") is left to join from outside:
    yields the supervisor process and its run.json once the run is running; kills it on exit.
    `extra`: more `mlgym run` options (a bus, tcp, keys)."""
    run_dir = tmp_path / "run"
    sup = subprocess.Popen([sys.executable, "-m", "mlgym.cli", "run", "--task", "battleOfSexes", "--team", "single",
                            "--external", "agent", "--run-dir", str(run_dir), "--no-progress",
                            "--json", *extra],
                           stdout=subprocess.PIPE, stderr=open(tmp_path / "sup.log", "wb"), env=env)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "run.json").exists() or json.loads((run_dir / "run.json").read_text())["status"] != "running":
            assert sup.poll() is None and time.monotonic() < deadline, (tmp_path / "sup.log").read_text()[-3000:]
            time.sleep(0.05)
        yield sup, json.loads((run_dir / "run.json").read_text())
    finally:
        if sup.poll() is None:
            sup.kill()


# --------------------------------------------------------------------------- mosquitto
# A real MQTT broker on a free loopback port, for the MQTT bus tests (tests/test_bus_mqtt.py,
# tests/test_run_mqtt.py).


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mosquitto:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_mosquitto(workdir: Path, extra: list[str] | None = None, *,
                    anonymous: bool = True, port: int = 0) -> Mosquitto:
    """Start mosquitto with a generated config and wait until it accepts connections."""
    require(shutil.which("mosquitto") is not None, "mosquitto is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    lines = []
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to user mosquitto and cannot read tmp_path
    lines += [f"listener {port} 127.0.0.1", f"allow_anonymous {'true' if anonymous else 'false'}",
              "persistence false", "set_tcp_nodelay true", *(extra or [])]
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / "mosquitto.log"
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mosquitto did not listen on {port}: {log.read_text()}")
            time.sleep(0.05)
    return Mosquitto(port, proc, log)


def make_certs(d: Path) -> dict[str, Path]:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=mlgym-test-ca")
    ssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return {name: d / f"{name}" for name in ("ca.crt", "server.crt", "server.key")}



class SessionClient:
    """An env-service RPC client that keeps each session's token (from SessionOpened) and
    sends it with every later request naming that session, as real clients do (the agents
    from RunInfo.session_token, the Gymnasium client from its own SessionOpened)."""

    def __init__(self, client) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}

    async def request(self, service: str, body, *args, **kwargs):
        from mlgym.bus import protocol as p

        sid = getattr(body, "session", None)
        if sid in self.tokens and hasattr(body, "token") and not body.token:
            body.token = self.tokens[sid]
        reply = await self.client.request(service, body, *args, **kwargs)
        if isinstance(reply, p.SessionOpened):
            self.tokens[reply.info.session] = reply.token
        return reply

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def assert_beats_baseline(result: dict, baseline: float, metric: str = "Score") -> None:
    """The run's best validated score (the task's public seed, as the baseline was measured)
    beats the baseline, and its final submission, scored with the held-out seed, is that
    artefact's score give or take the seed's noise (games vary by about 0.01 across seeds)."""
    best = max(a["scores"][metric] for a in result["attempts"]
               if a["action"] == "validate" and a.get("scores"))
    assert best > baseline, f"best validated {best} does not beat the baseline {baseline}"
    final = result["final_submission"]["scores"][metric]
    assert abs(final - best) <= 0.05 + 0.02 * abs(best), (final, best)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    """Unmount the session disks (env_server/disk.py) that servers killed on purpose left
    mounted under this run's temporary folders, so pytest can remove them."""
    from mlgym.env_server.disk import unmount_leftovers

    unmount_leftovers(session.config._tmp_path_factory.getbasetemp().parent)
