"""Budgets are enforced by the supervisor, not by the agents: when one runs out the team is
stopped and the BEST validated artefact (not the current one) is written back and submitted."""

from __future__ import annotations

import msgspec
import pytest

from mlgym.agents import config as C
from mlgym.agents.events import events, gaps
from mlgym.agents.scripted.games import GAMES
from mlgym.agents.supervisor import run_team
from mlgym.bus import protocol as P


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")


def _with_budget(team: C.TeamConfig, **kw) -> C.TeamConfig:
    return msgspec.structs.replace(team, budget=msgspec.structs.replace(team.budget, **kw))


@pytest.mark.timeout(120)
async def test_step_budget_auto_submits_the_best_artefact(tmp_path):
    # blotto, single agent: steps 1-5 validate `four_fronts` (the better one), step 6 writes
    # `even_spread` over it; at 6 steps the supervisor stops the agent and submits the best.
    team = _with_budget(C.load_team("single"), steps=6)
    run_dir = tmp_path / "run"
    result = await run_team("blotto", team, run_dir=run_dir, progress=False)
    assert result["exit_status"] == "autosubmission (steps)"
    final = result["final_submission"]
    assert final["auto"] is True
    first = [a for a in result["attempts"] if a["action"] == "validate"][0]["scores"]["Score"]
    # four_fronts, not even_spread (scored again with the held-out final seed: close, not equal)
    assert final["scores"]["Score"] == pytest.approx(first, abs=0.05)
    assert final["scores"]["Score"] > -0.248
    best = (run_dir / "artefacts" / "best" / "strategy.py").read_text()
    assert best == GAMES["blotto"].candidates[0].code
    # the agent was told to stop, and said so on the bus
    controls = [e.body for e in events(run_dir, ["run/control"])]
    assert controls and controls[0].action == "submit" and "budget:steps" in controls[0].reason
    status = [e.body for e in events(run_dir, ["status/agent"]) if isinstance(e.body, P.AgentStatus)]
    assert status[-1].state == "stopped"
    assert result["agents"]["agent"]["env_steps"] <= 7  # at most one action raced the stop
    assert gaps(run_dir) == []


@pytest.mark.timeout(120)
async def test_token_budget_of_the_team_stops_it(tmp_path):
    team = _with_budget(C.load_team("default"), tokens=15_000)
    run_dir = tmp_path / "run"
    result = await run_team("prisonersDilemma", team, run_dir=run_dir, progress=False)
    assert result["end_reason"] == "budget:tokens"
    assert result["exit_status"].startswith("autosubmission (tokens)")
    assert result["final_submission"]["auto"] is True
    assert result["tokens"] >= 15_000
    ends = [e.body for e in events(run_dir, ["run/end"])]
    assert len(ends) == 1 and ends[0].exit_status == result["exit_status"]
    assert gaps(run_dir) == []


@pytest.mark.timeout(120)
async def test_an_agents_own_dollar_budget_stops_only_that_agent(tmp_path):
    # the literature agent's model costs $0.5 per 1,000 tokens (about $0.6 a turn) and may
    # spend $1: it is stopped after its second turn; the planner and coder go on and submit
    team = _with_budget(C.load_team("default"), dollars=0.0)
    agents = [msgspec.structs.replace(a, model="scripted:auto?usd_per_mtok=500",
                                      budget=C.Budget(dollars=1.0)) if a.role == "literature" else a
              for a in team.agents]
    team = msgspec.structs.replace(team, agents=agents)
    run_dir = tmp_path / "run"
    result = await run_team("prisonersDilemma", team, run_dir=run_dir, progress=False)
    assert result["exit_status"] == "submitted"
    lit = result["agents"]["literature"]
    assert lit["cost_usd"] >= 1.0
    assert lit["exit"] == "stopped" and "dollars budget" in lit["exit_detail"]
    controls = [e.body for e in events(run_dir, ["run/control"])]
    assert controls[0].action == "stop" and controls[0].target == "literature"
    assert result["cost_usd"] == pytest.approx(lit["cost_usd"])
