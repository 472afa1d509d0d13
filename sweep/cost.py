"""What a run may cost before it runs: an estimate from the price table (agents/llm/prices.py)
and the sweep file's tokens-per-step assumption, never above the run's dollar budget, which
the supervisor enforces."""

from __future__ import annotations

from mlgym.agents import config as C
from mlgym.agents.llm import ModelError, default_table, parse_spec

FREE = ("scripted", "replay")  # the offline backends cost nothing


def estimate_run(team: C.TeamConfig, est) -> float | None:
    """USD for one run: every environment step of the budget is taken as one turn of an agent
    of the team (the mean of their prices) with `est`'s prompt and completion tokens; capped
    by the dollar budget. None when a model has no known price."""
    table = default_table()
    per_turn = []
    for a in team.agents:
        try:
            prefix, model, _ = parse_spec(a.model)
        except ModelError:
            return None
        if prefix in FREE:
            per_turn.append(0.0)
            continue
        price = table.lookup(model)
        if price is None:
            return None
        per_turn.append(price.cost(est.prompt_tokens_per_step, est.completion_tokens_per_step))
    steps = team.budget.steps or 50  # no step limit: MLGym-Bench's 50
    usd = steps * sum(per_turn) / len(per_turn)
    return min(usd, team.budget.dollars) if team.budget.dollars else usd
