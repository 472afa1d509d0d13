"""The live table and the final summary of `mlgym run`: each agent's state from its
AgentStatus (calling, retrying, its typed exit), within 80 columns, names never cut, scores
rounded."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.text import Text

from mlgym.agents.config import Budget
from mlgym.agents.ledger import Ledger
from mlgym.agents.progress import agent_state, header, summary_lines, table
from mlgym.bus import protocol as P


def fed_ledger(now: float) -> Ledger:
    L = Ledger("Score", "max")

    def status(**kw) -> None:
        L.feed(P.Envelope(body=P.AgentStatus(**kw)))

    status(agent="planner", role="planner", state="calling", step=3, tokens=41_511, cost_usd=0.045,
           since=now - 42, detail="model openai:qwen")
    status(agent="coder", role="coder", state="retrying", step=7, tokens=120_000,
           cached_tokens=90_000, retry=2, max_retries=5, error="timeout",
           detail="no complete reply within 300 s")
    status(agent="literature", role="literature", state="stopped", step=1, tokens=900,
           cost_usd=0.001,
           exit="model_unreachable", detail="cannot reach http://127.0.0.1:9/v1 (after 5 retries)")
    status(agent="research-assistant-2", role="literature", state="working", step=2,
           detail="python -c 'import numpy; print(numpy.__version__)' && ls -la data/ && cat x")
    sup = L.agent("supervisor")
    sup.role, sup.state, sup.exit = "supervisor", "stopped", "auto-submitted"
    L.feed(P.Envelope(body=P.ScoreEvent(session="s", step=4, action="validate",
                                        scores={"Score": 2.61})))
    return L


def rendered(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text().rstrip("\n").splitlines()


def test_table_shows_each_agents_state_within_80_columns():
    now = time.time()
    L = fed_ledger(now)
    budget = Budget(steps=50, dollars=4.0, wall_clock_s=3600)
    lines = header("prisonersDilemma", "default", L, budget, 125.4, "Score", 2.3716000000000004)
    out = rendered(Group(*(Text(x) for x in lines), table(L, now)))
    text = "\n".join(out)
    assert max(len(line) for line in out) <= 80, text
    for name in ("planner", "coder", "literature", "research-assistant-2", "supervisor"):
        assert f" {name} " in f" {text} ".replace("\n", " "), f"{name} cut:\n{text}"
    assert "calling model 42 s" in text
    assert "retrying 2/5: timeout" in text
    assert "ended: model_unreachable" in text
    assert "ended: auto-submitted" in text and "starting" not in text
    assert "working: python -c" in text  # the command, cut to fit
    assert "best Score 2.61 (baseline 2.372)" in text and "2.3716000" not in text
    assert "41.5k" in text and "120.0k" in text and "(90.0k cached)" in text
    assert "steps 0/50" in text and "$0.046/4.000" in text and "125 s/3600" in text


def test_narrow_terminals_give_way_in_the_state_column_not_the_names():
    L = fed_ledger(time.time())
    out = rendered(table(L, width=60), width=60)
    assert max(len(line) for line in out) <= 60
    assert any(line.lstrip().startswith("research-assistant-2 ") for line in out)


def test_agent_state_words():
    L = fed_ledger(1000.0)
    assert agent_state(L.agents["planner"], now=1000.0) == "calling model 42 s"
    assert agent_state(L.agents["coder"]) == "retrying 2/5: timeout"
    assert agent_state(L.agents["literature"]) == "ended: model_unreachable"
    assert L.agents["literature"].exit_detail.startswith("cannot reach")
    assert L.agents["coder"].cached_tokens == 90_000


def test_summary_states_every_agents_exit_and_rounds_scores():
    result = {
        "run_id": "r1", "exit_status": "autosubmission (agents_stopped)",
        "metric": {"name": "Score", "direction": "max"}, "baseline": {"Score": 2.3716000000000004},
        "final_submission": {"scores": {"Score": 2.614999999}}, "best_attempt": 2.614999999,
        "steps": 12, "tokens": 41511, "cost_usd": 0.045208, "seconds": 81.23, "run_dir": "runs/r1",
        "agents": {
            "planner": {"exit": "model_unreachable", "exit_detail": "cannot reach http://x/v1"},
            "coder": {"exit": "stopped", "exit_detail": "submit: the run is ending",
                      "cached_tokens": 1200},
            "supervisor": {"exit": "auto-submitted"},
        },
    }
    lines = summary_lines(result)
    assert lines[0] == "run r1: autosubmission (agents_stopped)"
    assert lines[1] == "  Score: submitted 2.615, best attempt 2.615, baseline 2.372"
    assert "tokens 41511 (1200 cached), $0.0452" in lines[2]
    assert lines[3:] == ["  planner: model_unreachable: cannot reach http://x/v1",
                         "  coder: stopped: submit: the run is ending",
                         "  supervisor: auto-submitted"]
