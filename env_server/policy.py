"""What an environment server allows: the maxima a client's `SessionOpen.limits` must stay
within, who may touch which session, and the defaults for what a client leaves unsaid.

A client's limits are a request, never an order: a value above the server's maximum (or
`network` on a server started without `--allow-network`) is refused with a typed `Error`
(`limit_refused`) naming the limit, the value and the maximum; nothing asked for is silently
granted or silently lowered. 0 in a request means "the task's default" (a task default above a
maximum is held to the maximum: the server's administrator decided that).

Sessions belong to whoever opened them: `SessionOpened.token` is a random secret that every
later request for that session must carry. A server may be given an admin token, which opens
every session (and lists them all).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mlgym.bus import protocol as p
from mlgym.tasks.spec import TaskSpec

DEFAULT_DISK_MB = 16_384  # at least this much disk per session (see disk_for)
DEFAULT_MAX_PROCESSES = 512


def _host_memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return 65_536


class LimitRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Effective:
    """The limits a session gets, after defaults and the maxima were applied."""

    max_steps: int
    command_timeout_s: float
    memory_mb: int
    cpu_seconds: int
    max_processes: int
    network: bool
    disk_mb: int
    window: int


@dataclass
class ServerPolicy:
    max_memory_mb: int = field(default_factory=_host_memory_mb)
    max_processes: int = 4096
    max_cpu_seconds: int = 0  # 0: no maximum
    max_disk_mb: int = 262_144
    max_command_timeout_s: float = 86_400.0
    max_steps: int = 100_000
    allow_network: bool = False
    admin_token: str = ""  # opens every session; "" = none

    def effective(self, asked: p.Limits, spec: TaskSpec, template_mb: int = 0) -> Effective:
        """The limits a session of `spec` gets for the request `asked`, or LimitRefused."""
        def check(name: str, value: float, most: float, unit: str = "") -> None:
            if most and value > most:
                raise LimitRefused(f"limits.{name}={value:g}{unit} is above this server's "
                                   f"maximum of {most:g}{unit}")

        for name in ("max_steps", "memory_mb", "cpu_seconds", "max_processes", "disk_mb",
                     "window"):
            if getattr(asked, name, 0) < 0:
                raise LimitRefused(f"limits.{name} must be >= 0")
        if asked.command_timeout_s < 0:
            raise LimitRefused("limits.command_timeout_s must be >= 0")
        if asked.network and not self.allow_network:
            raise LimitRefused("limits.network=true: this server gives sandboxes no network "
                               "(start it with --allow-network to permit it)")
        check("max_steps", asked.max_steps, self.max_steps)
        check("command_timeout_s", asked.command_timeout_s, self.max_command_timeout_s, " s")
        check("memory_mb", asked.memory_mb, self.max_memory_mb, " MB")
        check("cpu_seconds", asked.cpu_seconds, self.max_cpu_seconds, " s")
        check("max_processes", asked.max_processes, self.max_processes)
        check("disk_mb", asked.disk_mb, self.max_disk_mb, " MB")
        memory = asked.memory_mb or spec.limits.memory_mb
        return Effective(
            max_steps=asked.max_steps or spec.limits.max_steps,
            command_timeout_s=(asked.command_timeout_s or spec.limits.training_timeout_s
                               or 1800.0),
            memory_mb=min(memory, self.max_memory_mb) if not asked.memory_mb else memory,
            cpu_seconds=asked.cpu_seconds or self.max_cpu_seconds,
            max_processes=asked.max_processes or min(DEFAULT_MAX_PROCESSES, self.max_processes),
            network=asked.network,
            disk_mb=asked.disk_mb or min(disk_for(template_mb), self.max_disk_mb),
            window=asked.window or 1000,
        )

    def allows(self, session_token: str, presented: str) -> bool:
        """Whether a request carrying `presented` may act on a session holding
        `session_token` (the admin token opens every session)."""
        if not presented:
            return False
        if self.admin_token and hmac.compare_digest(presented, self.admin_token):
            return True
        return hmac.compare_digest(presented, session_token)

    def is_admin(self, presented: str) -> bool:
        return bool(self.admin_token and presented
                    and hmac.compare_digest(presented, self.admin_token))


def heldout_key(path: Path | None = None) -> bytes:
    """This machine's secret for held-out seeds (made on first use, mode 600): never in a
    sandbox, so an agent cannot compute the seed its final submission will be scored with."""
    from mlgym import paths

    path = path or paths.home() / "heldout.key"
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    try:
        os.link(tmp, path)  # the first writer wins; everyone then reads the same key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def final_seed(key: bytes, task: str, seed: int) -> int:
    """The held-out seed of a final evaluation: the same for the same task and session seed on
    this machine (runs and replays reproduce), unknowable inside the sandbox."""
    digest = hmac.new(key, f"{task}\0{seed}".encode(), "sha256").digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1


def disk_for(template_mb: int) -> int:
    """A quota that holds the task's starter files and data twice over plus room to work."""
    return max(DEFAULT_DISK_MB, 2 * template_mb + 8_192)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def read_admin_token(path: Path) -> str:
    """The admin token from a file that only its owner can read (refused otherwise)."""
    st = path.stat()
    if st.st_mode & 0o077:
        raise LimitRefused(f"{path} is readable by others (chmod 600 it)")
    token = path.read_text().strip()
    if len(token) < 16:
        raise LimitRefused(f"{path}: an admin token needs at least 16 characters")
    return token
