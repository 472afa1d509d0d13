"""Budget checks, in one place: the supervisor calls them every tick against what the ledger
has seen on the bus (environment steps from the environment server's events, tokens and
dollars from the agents' reports), so no agent enforces its own budget."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import msgspec

from mlgym.agents.ledger import Ledger

if TYPE_CHECKING:
    from mlgym.agents.config import AgentConfig


class Budget(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """Limits; 0 means none. `steps` counts environment steps (ACI commands, validate and
    submit included) for the run, or for one agent's own actions in an agent's budget."""

    steps: int = 0
    tokens: int = 0
    dollars: float = 0.0
    wall_clock_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"steps": self.steps, "tokens": self.tokens, "dollars": self.dollars,
                "wall_clock_s": self.wall_clock_s}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Budget:
        return cls(steps=int(d.get("steps", 0)), tokens=int(d.get("tokens", 0)),
                   dollars=float(d.get("dollars", 0.0)),
                   wall_clock_s=float(d.get("wall_clock_s", 0.0)))

    def over(self, fallback: Budget) -> Budget:
        """Field by field: this budget's limit where it sets one, else `fallback`'s."""
        return Budget(steps=self.steps or fallback.steps, tokens=self.tokens or fallback.tokens,
                      dollars=self.dollars or fallback.dollars,
                      wall_clock_s=self.wall_clock_s or fallback.wall_clock_s)


def run_exhausted(b: Budget, ledger: Ledger, elapsed_s: float) -> str:
    """The run budget that is spent ("steps", "tokens", "dollars", "wall_clock"), or ""."""
    if b.steps and ledger.steps >= b.steps:
        return "steps"
    if b.tokens and ledger.tokens >= b.tokens:
        return "tokens"
    if b.dollars and ledger.cost >= b.dollars:
        return "dollars"
    if b.wall_clock_s and elapsed_s >= b.wall_clock_s:
        return "wall_clock"
    return ""


def agents_exhausted(agents: Iterable[AgentConfig], ledger: Ledger, now: float,
                     skip: set[str]) -> Iterator[tuple[AgentConfig, str]]:
    """(agent, budget) for each agent (not in `skip`) whose own budget is spent."""
    for a in agents:
        if a.name in skip:
            continue
        u = ledger.agent(a.name)
        ab = a.budget
        if ab.steps and u.env_steps >= ab.steps:
            yield a, "steps"
        elif ab.tokens and u.tokens >= ab.tokens:
            yield a, "tokens"
        elif ab.dollars and u.cost_usd >= ab.dollars:
            yield a, "dollars"
        elif ab.wall_clock_s and now - u.started >= ab.wall_clock_s:
            yield a, "wall_clock"
