"""Child processes of a run (broker, environment server, agents): started with asyncio, logged to
files, stopped politely (SIGTERM) then firmly (SIGKILL). Each child runs in a session (and so a
process group) of its own: Ctrl-C in a terminal signals the terminal's foreground group, which
is the supervisor alone, and the supervisor stops its children in order (agents, then the
environment server, then the broker) instead of losing the broker first. On Linux each child
also gets PR_SET_PDEATHSIG, so a supervisor killed outright does not leave orphans behind (a
later `mlgym resume` starts them afresh)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from mlgym import log

logger = log.get(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def mlgym_argv(*args: str) -> list[str]:
    """`mlgym ARGS...` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "mlgym.cli", *args]


class Child:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n--- start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            logf.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=asyncio.subprocess.STDOUT,
                env=env, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                start_new_session=True,
            )
        self.starts += 1
        logger.debug("child started", child=self.name, pid=self.proc.pid)

    async def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if not self.alive:
            return self.returncode
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        if await self.wait(grace) is None:
            logger.warning("child ignored SIGTERM; killing it", child=self.name, pid=self.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.wait(5)
        return self.returncode

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
