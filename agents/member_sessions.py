"""The environment sessions of a run's members that work in one of their own (parallel
workers, `session = "own"` roles): which member holds which session, its token, and keeping
both on disk so a resumed run (or a restarted environment server) goes on in the same ones.

The team's own session (the one that is submitted) stays the supervisor's: `RunInfo.session`.
Members' sessions travel in `RunInfo.sessions` (member -> session and token). Their tokens are
kept beside the run's `session.token`, in `sessions.token` (JSON, mode 0600), and never in
run.json, which viewers show.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from mlgym import log
from mlgym.files import atomic_write
from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError

logger = log.get(__name__)

TOKENS_FILE = "sessions.token"

# opens a session for a member (restoring the bytes given, if any): -> (session, token)
Opener = Callable[[str, bytes | None], Awaitable[tuple[str, str]]]


class MemberSessions:
    def __init__(self, run_dir: Path, members: list[str]):
        self.dir = run_dir
        self.members = members  # those with a session of their own, in team order
        self.by_member: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ lookups

    def owner(self, session: str) -> str:
        """The member whose session it is ("" for the team's own)."""
        return next((m for m, (s, _) in self.by_member.items() if s == session), "")

    def token(self, session: str) -> str | None:
        return next((t for s, t in self.by_member.values() if s == session), None)

    def sessions(self) -> list[str]:
        return [s for s, _ in self.by_member.values()]

    def run_info(self) -> dict[str, P.MemberSession]:
        return {m: P.MemberSession(session=s, token=t) for m, (s, t) in self.by_member.items()}

    def ids(self) -> dict[str, str]:
        """member -> session id, for run.json."""
        return {m: s for m, (s, _) in self.by_member.items()}

    # ------------------------------------------------------------------ files

    def load(self) -> None:
        try:
            data = json.loads((self.dir / TOKENS_FILE).read_text())
        except (OSError, ValueError):
            return
        for m, v in data.items():
            if m in self.members and isinstance(v, dict):
                self.by_member[m] = (str(v.get("session", "")), str(v.get("token", "")))

    def save(self) -> None:
        data = {m: {"session": s, "token": t} for m, (s, t) in self.by_member.items()}
        atomic_write(self.dir / TOKENS_FILE, json.dumps(data), mode=0o600)

    # ------------------------------------------------------------------ opening

    async def open_all(self, opener: Opener) -> None:
        for m in self.members:
            self.by_member[m] = await opener(m, None)
        if self.members:
            self.save()

    async def reopen_all(self, env, opener: Opener, restore: Callable[[str], bytes | None]) -> None:
        """After a resume or an environment restart: keep each member's session the new server
        adopted; open a new one (with the member's latest validated artefact) for the others."""
        for m in self.members:
            session, token = self.by_member.get(m, ("", ""))
            if session:
                try:
                    info = await env.request(
                        "env", P.SessionStatus(session=session, token=token), timeout=10
                    )
                except (RpcError, TimeoutError):
                    info = None
                if isinstance(info, P.SessionInfo) and info.state == "open":
                    logger.info("member session adopted", member=m, session=session, step=info.step)
                    continue
            self.by_member[m] = await opener(m, restore(m))
        if self.members:
            self.save()

    async def close_all(self, env) -> None:
        for m, (session, token) in self.by_member.items():
            try:
                await env.request("env", P.SessionClose(session=session, token=token), timeout=30)
            except (RpcError, TimeoutError) as exc:
                logger.warning("could not close a member's session", member=m, error=str(exc))
