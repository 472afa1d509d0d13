"""A run's configuration and files: run.json (what was asked and where the run stands), copies of
validated artefacts, the run id, and the pre-flight check of the models."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgym.agents import config as C
from mlgym.files import atomic_write
from mlgym.bus import protocol as P

RUN_FILE = "run.json"
TOKEN_FILE = "session.token"  # the env session's owner token (0600), for `mlgym resume`
PIDS_FILE = "pids.json"
MEMORY_FILE = "memory.sqlite"


class RunError(RuntimeError):
    """A run that cannot start or go on; the message says why and what to do."""


@dataclass
class RunConfig:
    task: str
    team: C.TeamConfig
    run_id: str
    run_dir: Path
    backend: str = "local"
    host: str | None = None  # serve bus/env/memory on tcp at this host (remote agents); None: ipc
    keys: str | None = None  # CURVE key folder (`mlgym keys init`): encrypt and authenticate the tcp sockets
    progress: bool = True
    grace_s: float = 5.0
    seed: int = 0
    method: str = ""
    memory: str | None = None  # the memory store's SQLite file; None: RUN_DIR/memory.sqlite, this run's own
    # the MQTT bus (URL with the run's prefix, never the password); None: a ZeroMQ broker of its own
    mqtt: str | None = None

    def memory_db(self) -> Path:
        return Path(self.memory) if self.memory else self.run_dir / MEMORY_FILE

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "team": json.loads(C.team_json(self.team)), "run_id": self.run_id,
                "backend": self.backend, "host": self.host, "keys": self.keys, "grace_s": self.grace_s, "seed": self.seed,
                "method": self.method, "memory_db": self.memory, "mqtt": self.mqtt}

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
        data = json.loads((run_dir / RUN_FILE).read_text())
        team = C.team_from_json(json.dumps(data["team"]).encode())
        cfg = cls(task=data["task"], team=team, run_id=data["run_id"], run_dir=run_dir,
                  backend=data.get("backend", "local"), host=data.get("host"), keys=data.get("keys"), grace_s=data.get("grace_s", 5.0),
                  seed=data.get("seed", 0), method=data.get("method", ""),
                  memory=data.get("memory_db"), mqtt=data.get("mqtt"))
        return cfg, data


def default_method(team: C.TeamConfig, declared: dict[str, str] | None = None) -> str:
    """`<team>/<model>+<model>...`: each member's model as it declared it on the bus
    (`agent_status.model`), else the team file's for the members the run started itself; an
    external member that declared nothing counts as `undeclared`."""
    declared = declared or {}
    models = sorted({declared.get(a.name) or ("undeclared" if a.external else a.model)
                     for a in team.agents})
    return f"{team.name}/{'+'.join(models)}"


@dataclass
class Artefacts:
    """Copies of validated submission artefacts: the best so far and the latest."""

    root: Path
    name: str
    best: bytes | None = None
    latest: bytes | None = None  # the team's session's latest
    latest_of: dict[str, bytes] = field(default_factory=dict)  # a member's own session's latest
    saved: list[str] = field(default_factory=list)

    def load(self) -> None:
        for attr in ("best", "latest"):
            p = self.root / attr / self.name
            if p.is_file():
                setattr(self, attr, p.read_bytes())
        for p in self.root.glob(f"latest-*/{self.name}"):
            self.latest_of[p.parent.name.removeprefix("latest-")] = p.read_bytes()

    def save(self, label: str, data: bytes, *, best: bool, member: str = "") -> None:
        """`member`: the artefact was validated in that member's own session (its latest is
        kept as latest-<member>/, the team session's as latest/)."""
        latest = f"latest-{member}" if member else "latest"
        targets = [label, latest] + (["best"] if best else [])
        for t in targets:
            d = self.root / t
            d.mkdir(parents=True, exist_ok=True)
            atomic_write(d / self.name, data)
        if member:
            self.latest_of[member] = data
        else:
            self.latest = data
        if best:
            self.best = data
        self.saved.append(label)


async def preflight(team: C.TeamConfig) -> None:
    """Create each agent's model once before anything starts, so a missing API key or a bad
    spec is one clear error instead of agents crashing in a loop."""
    from mlgym.agents.llm import ModelError, create

    for a in team.agents:
        if a.external:
            continue
        prefix = a.model.partition(":")[0]
        if prefix == "scripted":
            kw: dict[str, Any] = {"role": a.role, "policy": team.role(a.role).scripted_policy}
        elif prefix == "replay":
            kw = {"agent": a.name}
        else:
            kw = {}
        try:
            model = create(a.model, **kw)
        except ModelError as exc:
            raise RunError(f"agent {a.name}: {exc}") from None
        await model.aclose()


def new_run_id(task: str, team: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{task}-{team}-{stamp}-{P.new_id()[-4:].lower()}"


