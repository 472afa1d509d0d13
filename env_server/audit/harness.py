"""The audit's test bench: a real broker (its own process), a real environment server on the
chosen backend publishing to it, a listener that keeps every message the bus carries, and
canaries to catch a leak or a host write.

Canaries: a folder of host files outside every sandbox (a plain file, a secret file, a
folder to write into), a secret environment variable in the server's own environment, and
the real secret files of the audited tasks (held-out answers, hidden opponents). An attack
passes only if no canary is read, changed or seen in any reply or bus message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from mlgym.bus import connect
from mlgym.bus import protocol as p
from mlgym.bus.broker import spawn
from mlgym.bus.rpc import RpcClient
from mlgym.env_server import taskinfo
from mlgym.env_server.policy import ServerPolicy
from mlgym.env_server.server import EnvServer

CANARY_ENV = "MLGYM_AUDIT_CANARY"


@dataclass
class Outcome:
    attack: str
    finding: str
    expected: str
    observed: str
    passed: bool
    seconds: float


class Session:
    """One session opened by the audit, acting as an agent would: over the wire only."""

    def __init__(self, harness: Harness, opened: p.SessionOpened) -> None:
        self.h = harness
        self.id = opened.info.session
        self.token = opened.token
        self.info = opened.info
        self.workdir = Path(opened.info.workdir)  # host path, for the audit's own checks

    async def act(self, command: str, timeout: float = 120, background: bool = False
                  ) -> p.Observation:
        obs = await self.h.request(p.Act(session=self.id, command=command, token=self.token,
                                         background=background, timeout_s=timeout),
                                   timeout=timeout + 60)
        assert isinstance(obs, p.Observation)
        self.h.seen.append(obs.output)
        return obs

    async def request(self, body: Any, timeout: float = 60) -> Any:
        body.session, body.token = self.id, self.token
        reply = await self.h.request(body, timeout=timeout)
        self.h.seen.append(repr(reply)[:2_000_000])
        return reply

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.h.request(p.SessionClose(session=self.id, token=self.token), timeout=120)


class Harness:
    """`async with Harness("local", ["battleOfSexes"]) as h:` — see the module docstring."""

    def __init__(self, backend: str, tasks: list[str], image: str = "") -> None:
        self.backend = backend
        self.image = image  # docker only: the task image ("" = the server's default)
        self.tasks = tasks
        self.task = tasks[0]
        self.root = Path(tempfile.mkdtemp(prefix="mlgym-audit-"))
        os.chmod(self.root, 0o700)
        self.host = self.root / "host"  # host files no sandbox may read or change
        self.canary = secrets.token_hex(16)
        self.secret_text = f"AUDIT-SECRET-{secrets.token_hex(16)}"
        self.env_secret = f"AUDIT-ENV-{secrets.token_hex(16)}"
        self.seen: list[str] = []  # every reply the audit got
        self.bus_seen: list[bytes] = []  # every message the bus carried
        self.markers: dict[str, str] = {}  # text that must never be seen -> what it is
        self.task_secrets: list[Path] = []  # host paths of the tasks' real secret files
        self._listen: asyncio.Task | None = None
        self.submission = ""  # the first task's submission artefact
        self.eval_seed = 0  # the first task's public evaluation seed
        self._old_env: str | None = None

    # -- set-up ------------------------------------------------------------------------------
    async def __aenter__(self) -> Harness:
        if self.backend == "docker":
            await asyncio.to_thread(_check_docker, self.image)
        self.host.mkdir()
        (self.host / "canary.txt").write_text(f"host canary {self.canary}\n")
        secret = self.host / "secret.txt"
        secret.write_text(f"{self.secret_text}\n")
        secret.chmod(0o600)
        (self.host / "dropbox").mkdir()
        self.markers[self.secret_text] = "the host canary secret file"
        self.markers[self.env_secret] = f"the server's ${CANARY_ENV}"
        self._old_env = os.environ.get(CANARY_ENV)
        os.environ[CANARY_ENV] = self.env_secret
        for task in self.tasks:
            handle = await asyncio.to_thread(taskinfo.load, task)
            if task == self.task:
                self.submission = handle.spec.files.submission
                self.eval_seed = handle.spec.evaluation.seed
            public = await asyncio.to_thread(_lines_of, [handle.task.dir / "workspace",
                                                          handle.prepared.public_dir])
            for path in sorted(handle.prepared.secret_dir.rglob("*")):
                if path.is_file():
                    self.task_secrets.append(path)
                    for line in _distinctive_lines(path, public):
                        self.markers[line] = f"{task}'s secret {path.name}"
        self.broker = await asyncio.to_thread(spawn, self.root / "bus")
        self.bus = connect(self.broker.url, sender="env", run="audit")
        await self.bus.connect()
        self.listener = connect(self.broker.url, sender="audit", run="audit")
        await self.listener.connect()
        self._sub = self.listener.subscribe("")
        self._listen = asyncio.create_task(self._collect())
        self.server = EnvServer(f"ipc://{self.root}/env.sock", self.root / "sessions",
                                bus=self.bus, default_backend=self.backend,
                                policy=ServerPolicy(), keep_workspaces=False,
                                docker_image=self.image)
        await self.server.start()
        self.client = RpcClient(f"ipc://{self.root}/env.sock")
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        with contextlib.suppress(Exception):
            await self.server.stop()
        if self._listen is not None:
            self._listen.cancel()
            with contextlib.suppress(BaseException):
                await self._listen
        for c in (self.bus, self.listener):
            with contextlib.suppress(Exception):
                await c.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.broker.stop)
        if self._old_env is None:
            os.environ.pop(CANARY_ENV, None)
        else:
            os.environ[CANARY_ENV] = self._old_env
        await asyncio.to_thread(shutil.rmtree, self.root, True)

    async def _collect(self) -> None:
        while True:
            env = await self._sub.get()
            self.bus_seen.append(msgspec.json.encode(env))

    # -- acting --------------------------------------------------------------------------
    async def request(self, body: Any, timeout: float = 60) -> Any:
        return await self.client.request("env", body, timeout=timeout)

    async def open(self, task: str | None = None, **limits: Any) -> Session:
        opened = await self.request(p.SessionOpen(task=task or self.task, backend=self.backend,
                                                  limits=p.Limits(**limits)), timeout=600)
        assert isinstance(opened, p.SessionOpened), opened
        return Session(self, opened)

    # -- checks --------------------------------------------------------------------------
    def leaks(self) -> list[str]:
        """What of the canaries shows in any reply or bus message so far."""
        found = []
        replies = "\n".join(self.seen)
        bus = b"\n".join(self.bus_seen)
        for marker, what in self.markers.items():
            if marker in replies or marker.encode() in bus or \
                    msgspec.json.encode(marker)[1:-1] in bus:
                found.append(what)
        return sorted(set(found))

    def host_state(self) -> dict[str, tuple[int, int, int, int]]:
        """(size, mode, uid, mtime_ns) of every host canary, and the names in the dropbox."""
        out = {}
        for path in sorted(self.host.rglob("*")):
            st = os.lstat(path)
            out[str(path.relative_to(self.host))] = (st.st_size, st.st_mode, st.st_uid,
                                                       st.st_mtime_ns)
        return out

    async def settle(self, seconds: float = 1.0) -> None:
        """Give the bus time to deliver what was published."""
        await asyncio.sleep(seconds)

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


class AuditError(Exception):
    """The audit cannot run here (no engine, no image): nothing was attacked."""


def _check_docker(image: str) -> None:
    from mlgym.env_server import image as img
    from mlgym.env_server.sandbox.docker import DEFAULT_IMAGE

    if not img.engine_reachable():
        raise AuditError("the docker engine is not reachable (start dockerd)")
    tag = image or os.environ.get("MLGYM_DOCKER_IMAGE") or DEFAULT_IMAGE
    if not img.image_present(tag):
        raise AuditError(f"the docker image {tag} is missing: build it with `mlgym image build`"
                         " (or pass --image mlgym/task:minimal after `mlgym image build "
                         "--minimal`)")


def _lines_of(folders: list[Path]) -> set[str]:
    """Every line of the text files under `folders` (what the agent is given anyway)."""
    out: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else []:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if path.is_file() and path.stat().st_size < 4 * 2**20:
                    out.update(ln.strip() for ln in path.read_text().splitlines())
    return out


def _distinctive_lines(path: Path, public: set[str], most: int = 6) -> list[str]:
    """A few long lines of a secret file, none of which the agent is given anyway, that would
    betray it if they showed anywhere."""
    try:
        if path.stat().st_size > 64 * 2**20:
            return []
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError):
        return []
    lines = {ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 24} - public
    return sorted(lines, key=len, reverse=True)[:most]


async def timed(coro: Any, seconds: float) -> tuple[Any, float, BaseException | None]:
    """(result, seconds taken, exception or None) of a request that must not hang."""
    t0 = time.monotonic()
    try:
        return await asyncio.wait_for(coro, seconds), time.monotonic() - t0, None
    except Exception as exc:  # noqa: BLE001 - reported by the attack (cancellation is not)
        return None, time.monotonic() - t0, exc
