"""The list of attacks. Each is an async function of the harness returning (passed, what was
observed), registered with the finding it checks (the numbers of issue #16's findings, or a
name for attacks found since) and what a sound set-up does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: the harness imports the attack modules' needs
    from mlgym.env_server.audit.harness import Harness
else:
    Harness = "Harness"

AttackFn = Callable[[Harness], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class Attack:
    name: str
    finding: str
    expected: str
    run: AttackFn
    backends: tuple[str, ...] = ("local", "docker")
    timeout_s: float = 240.0


ATTACKS: list[Attack] = []


def attack(name: str, finding: str, expected: str, *, backends: tuple[str, ...] = ("local", "docker"),
           timeout_s: float = 240.0) -> Callable[[AttackFn], AttackFn]:
    def register(fn: AttackFn) -> AttackFn:
        if any(a.name == name for a in ATTACKS):
            raise ValueError(f"two attacks named {name!r}")
        ATTACKS.append(Attack(name, finding, expected, fn, backends, timeout_s))
        return fn
    return register
