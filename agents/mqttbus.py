"""A run's bus over MQTT (`mlgym run --bus mqtt://...`): the run's URL, its password, its
recorder.

- The run's topics live under the URL's `prefix=`, by default `mlgym/<run id>` (so runs that
  share a broker never share topics, and a broker ACL can fence a run in).
- The password (from the URL, its `password_file=`, $MLGYM_MQTT_PASSWORD or
  $MLGYM_MQTT_PASSWORD_FILE) reaches the run's processes in their environment, never on a
  command line; run.json keeps the URL without it.
- The login is tried before anything starts, so a refused one is one line.
- The recorder (`mlgym bus record`) is the run's child, in the run directory: it keeps the
  event log and serves history, as the ZeroMQ broker does; the supervisor restarts it when it
  dies (the next epoch, on the same log; the MQTT broker queues what is published meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from mlgym.agents.procs import Child, mlgym_argv
from mlgym.agents.rundir import RunError
from mlgym.bus import MQTT_DESCRIPTOR, connect
from mlgym.bus.base import BusClientBase
from mlgym.bus.mqtt_link import PASSWORD_ENV, MqttSettings, for_run

RECORDER_LOG = "recorder.log"


def run_bus(url: str, run_id: str) -> tuple[str, str | None]:
    """The URL a run keeps and hands out (its prefix, `for_run`; no password) and the password.
    A bad URL or an unreadable password file is a RunError."""
    try:
        settings = MqttSettings.from_url(for_run(url, run_id))
    except ValueError as exc:
        raise RunError(str(exc)) from None
    return settings.public_url(), settings.password


class MqttBus:
    """The MQTT side of one supervisor: `url` (the run's, no password) and its processes'
    environment."""

    def __init__(self, url: str, *, password: str | None = None):
        try:
            self.settings = MqttSettings.from_url(url, password=password)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        self.url = self.settings.public_url()

    def child_env(self) -> dict[str, str]:
        """The environment of the run's processes: the password, not on their command line."""
        return {PASSWORD_ENV: self.settings.password} if self.settings.password else {}

    async def login(self, run: str, sender: str) -> BusClientBase:
        """The supervisor's bus client, connected: a refused login or an unreachable broker is
        a RunError (one line) before anything is started."""
        bus = connect(self.url, run=run, sender=sender, password=self.settings.password)
        try:
            await bus.connect()
        except ConnectionError as exc:
            await bus.close()
            raise RunError(str(exc)) from None
        return bus

    def recorder(self, run_dir: Path) -> Child:
        argv = mlgym_argv("bus", "record", "--mqtt", self.url, "--run-dir", str(run_dir))
        return Child("recorder", argv, run_dir / RECORDER_LOG, env=self.child_env())

    async def start_recorder(self, child: Child, run_dir: Path, timeout: float = 30.0) -> None:
        """Start (or restart) the recorder and wait until it serves (its mqtt.json names it)."""
        await child.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive:
                raise RunError(f"the bus recorder exited ({child.returncode}):\n{child.tail()}")
            try:
                info = json.loads((run_dir / MQTT_DESCRIPTOR).read_text())
            except (FileNotFoundError, ValueError):
                info = {}
            if info.get("pid") == child.pid:
                return
            await asyncio.sleep(0.02)
        raise RunError(f"the bus recorder did not start within {timeout:.0f} s "
                       f"(see {run_dir / RECORDER_LOG})")
