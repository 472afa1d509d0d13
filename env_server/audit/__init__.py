"""`mlgym audit`: the adversarial suite, run against a backend and a task set as a hostile
agent would — over the wire, from inside the sandbox — with canaries on the host to catch
every leak, host write and forged score (see docs/security.md).

    outcomes = await run_audit("local", ["battleOfSexes"])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mlgym.env_server.audit import access, files, isolation, resources
from mlgym.env_server.audit.harness import AuditError, Harness, Outcome
from mlgym.env_server.audit.registry import ATTACKS, Attack

THEMES = (files, isolation, resources, access)  # importing them registers their attacks
ATTACKS.sort(key=lambda a: [m.__name__ for m in THEMES].index(a.run.__module__))

DEFAULT_TASKS = ["battleOfSexes"]

__all__ = ["ATTACKS", "DEFAULT_TASKS", "Attack", "AuditError", "Harness", "Outcome", "run_audit",
           "run_one"]


async def run_one(h: Harness, a: Attack) -> Outcome:
    """One attack against an open harness; a crash or a hang is a failure, never a pass."""
    t0 = time.monotonic()
    try:
        passed, observed = await asyncio.wait_for(a.run(h), a.timeout_s)
    except TimeoutError:
        passed, observed = False, f"the attack did not finish within {a.timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - an attack that errors is a failed check
        passed, observed = False, f"the attack failed to run: {type(exc).__name__}: {exc}"
    return Outcome(a.name, a.finding, a.expected, observed, passed, round(time.monotonic() - t0, 2))


async def run_audit(backend: str, tasks: list[str] | None = None, only: list[str] | None = None,
                    progress: Callable[[Outcome], None] | None = None, image: str = ""
                    ) -> list[Outcome]:
    """Every attack (or those named in `only`) that applies to `backend`, in order. Raises
    AuditError when the backend cannot be attacked here at all."""
    chosen = [a for a in ATTACKS if backend in a.backends and (not only or a.name in only)]
    unknown = set(only or ()) - {a.name for a in ATTACKS}
    if unknown:
        raise ValueError(f"unknown attacks: {', '.join(sorted(unknown))}")
    outcomes = []
    async with Harness(backend, tasks or DEFAULT_TASKS, image) as h:
        for a in chosen:
            outcome = await run_one(h, a)
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    return outcomes
