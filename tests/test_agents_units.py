"""Agent runtime pieces without processes: reply parsing, history policy, team configs, the
scripted policies, team message wording, the ledger, repeated-failure notes."""

from __future__ import annotations

import pytest

from mlgym.agents import config as C
from mlgym.agents import team as T
from mlgym.agents.history import Entry, HistoryPolicy
from mlgym.agents.ledger import Ledger
from mlgym.agents.llm import Message, create
from mlgym.agents.parsing import FormatError, format_reply, split_reply
from mlgym.agents.runtime import Agent, Options
from mlgym.agents.scripted import policy
from mlgym.agents.scripted.games import GAMES
from mlgym.agents.scripted.transcript import read, scores_in
from mlgym.agents.tools import ENV_TOOLS, LOCAL_TOOLS, ROLE_TOOLS, call_to_text, role_tools
from mlgym.bus import protocol as P
from mlgym.tools.aci import Call, parse

# ------------------------------------------------------------------ parsing


def test_split_reply_takes_the_last_fenced_block_and_drops_the_language_tag():
    text = "DISCUSSION\nI quote `x` and\n```python\nprint(1)\n```\nthen run:\n```bash\nls -la\n```\n"
    thought, command = split_reply(text)
    assert command == "ls -la"
    assert thought.startswith("I quote")


def test_split_reply_keeps_multiline_edit_bodies():
    body = "edit 1:2\ndef f():\n    return 1\nend_of_edit"
    thought, command = split_reply(format_reply("Fix it.", body))
    assert (thought, command) == ("Fix it.", body)


@pytest.mark.parametrize("text", ["no command here", "DISCUSSION\nx\n```\n\n```\n", ""])
def test_split_reply_refuses_replies_without_a_command(text):
    with pytest.raises(FormatError, match="exactly ONE command"):
        split_reply(text)


# ------------------------------------------------------------------ history


def _conv(n: int) -> list[Entry]:
    out = [Entry(Message.system("s")), Entry(Message.user("task"))]
    for i in range(n):
        out.append(Entry(Message.assistant(f"a{i}")))
        out.append(Entry(Message.user(f"obs {i}\nline2"), observation=True))
    return out


def test_last_n_history_shortens_older_observations_only():
    view = HistoryPolicy("last:2").view(_conv(4))
    obs = [m.content for m in view if m.role == "user"][1:]
    assert obs[:2] == ["Old environment output: (2 lines omitted)"] * 2
    assert obs[2:] == ["obs 2\nline2", "obs 3\nline2"]
    assert [m.content for m in view if m.role == "assistant"] == ["a0", "a1", "a2", "a3"]
    assert len(HistoryPolicy("full").view(_conv(4))) == 10


# ------------------------------------------------------------------ team configs


def test_shipped_teams_load():
    default = C.load_team("default")
    assert sorted(default.members().values()) == ["coder", "literature", "planner"]
    single = C.load_team("single")
    assert [a.role for a in single.agents] == ["single"]
    assert single.agents[0].history == "last:5"
    assert default.budget.steps == 50 and default.budget.dollars == 4.0


def test_team_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[agents]]\nname = "a"\nrole = "coder"\nmodle = "x"\n')
    with pytest.raises(C.ConfigError, match="modle"):
        C.load_team(bad)
    bad.write_text('name = "x"\n[[agents]]\nname = "c"\nrole = "coder"\n')
    with pytest.raises(C.ConfigError, match="exactly one planner"):
        C.load_team(bad)
    with pytest.raises(C.ConfigError, match="no team"):
        C.load_team("nonexistent-team")


def test_model_overrides_by_name_and_role():
    team = C.override_models(C.load_team("default"), "openai:gpt-4o", {"literature": "gemini:gemini-2.0-flash"})
    models = {a.name: a.model for a in team.agents}
    assert models == {"planner": "openai:gpt-4o", "coder": "openai:gpt-4o", "literature": "gemini:gemini-2.0-flash"}


# ------------------------------------------------------------------ tools


def test_role_tools_and_their_text_forms_parse():
    assert "submit" not in ROLE_TOOLS["coder"] and "submit" in ROLE_TOOLS["planner"]
    planner = {t.name: t for t in role_tools("planner")}
    call = parse("assign Try TFT\nImplement it.\nThen validate.\nend_of_assign", planner)
    assert isinstance(call, Call) and call.args == {"title": "Try TFT", "instructions": "Implement it.\nThen validate.\n"}
    lit = {t.name: t for t in role_tools("literature")}
    call = parse('literature_search "colonel blotto" 3', lit)
    assert isinstance(call, Call) and call.args == {"query": "colonel blotto", "num_results": 3}


def test_call_to_text_round_trips():
    tools = {**ENV_TOOLS, **LOCAL_TOOLS}
    for text in ['literature_search "a b c" 4', "edit 1:3\nx = 1\nend_of_edit", "memory_write some words here",
                 "validate", "open strategy.py 5"]:
        call = parse(text, tools)
        assert isinstance(call, Call)
        again = parse(call_to_text(call.tool, call.tool.name, call.args), tools)
        assert isinstance(again, Call) and again.args == call.args


# ------------------------------------------------------------------ scripted policies


def _transcript(turns: list[tuple[str, str]], messages: dict[int, str] | None = None) -> list[Message]:
    msgs = [Message.system("sys"), Message.user("task")]
    for i, (command, obs) in enumerate(turns):
        msgs.append(Message.assistant(format_reply("thinking", command)))
        msgs.append(Message.user(obs))
        if messages and i in messages:
            msgs.append(Message.user(messages[i]))
    return msgs


def test_single_policy_tries_every_candidate_then_keeps_the_best():
    ctx = policy.Context(role="single", task="blotto")
    game = GAMES["blotto"]
    obs = {"open": "[File: /home/agent/workspace/strategy.py (36 lines total)]", "validate0": "Evaluation Score: {'Score': 0.24}",
           "validate1": "Evaluation Score: {'Score': 0.0}"}
    turns: list[tuple[str, str]] = []
    commands = []
    replies = {0: "x", 1: obs["open"], 2: "File updated", 3: "ok", 4: obs["validate0"], 5: "File updated", 6: obs["validate1"]}
    for i in range(9):
        thought, command = policy.single(read(_transcript(turns), {}), ctx)
        commands.append(command)
        turns.append((command, replies.get(i, "File updated")))
    assert commands[0] == "ls -la" and commands[1] == 'open "strategy.py"'
    assert commands[2].startswith("edit 1:36\n") and game.candidates[0].code in commands[2]
    assert commands[4] == "validate" and commands[6] == "validate"
    # the second candidate scored worse: the first is put back, then submitted
    assert commands[7].startswith(f"edit 1:{game.candidates[1].lines}\n") and game.candidates[0].code in commands[7]
    assert commands[8] == "submit"


def test_single_policy_uses_restated_scores_when_old_observations_are_shortened():
    ctx = policy.Context(role="single", task="prisonersDilemma")
    c0, c1 = GAMES["prisonersDilemma"].candidates
    msgs = _transcript([("ls -la", "x"), ('open "strategy.py"', "(27 lines total)"), ("edit 1:27\n...\nend_of_edit", "ok"),
                        ("python evaluate.py", "ok"), ("validate", "Old environment output: (3 lines omitted)")])
    msgs.append(Message.assistant(format_reply(f"Candidate `{c0.key}` scored 2.9. Next.", f"edit 1:{c0.lines}\n...\nend_of_edit")))
    msgs.append(Message.user("ok"))
    msgs.append(Message.assistant(format_reply("Now I validate.", "validate")))
    msgs.append(Message.user("Evaluation Score: {'Score': 2.6}"))
    thought, command = policy.single(read(msgs, {}), ctx)
    assert f"`{c0.key}` 2.9" in thought and f"`{c1.key}` 2.6" in thought
    assert command.startswith("edit ") and c0.code in command  # 2.9 beats 2.6: restore the first


def test_coder_policy_follows_the_work_item():
    ctx = policy.Context(role="coder", task="prisonersDilemma")
    item = T.work_item_text("planner", P.WorkItem(item="w1", title="Candidate best_response",
                                                 instructions="Put candidate `best_response` in place."))
    msgs = [Message.system("s"), Message.user("task"), Message.user(item)]
    t = read(msgs, {})
    assert t.leading == [item]
    _, first = policy.coder(t, ctx)
    assert first.startswith("memory_read")


def test_transcript_reads_scores_and_messages():
    assert scores_in("Baseline Score: {'Score': 1.0}\nEvaluation Score: {'Score': 2.5, 'r2': -0.1}") == {"Score": 2.5, "r2": -0.1}
    assert scores_in("nothing") is None
    r = P.WorkResult(item="w3", status="done", summary="ok", scores={"Score": 1.5})
    text = T.RECEIVED + T.work_result_text("coder", r)
    assert T.parse_item(text) == "w3" and T.parse_scores(text) == {"Score": 1.5}


async def test_scripted_backend_answers_in_both_modes():
    m = create("scripted:auto", role="single", task="battleOfSexes")
    out = await m.complete([Message.system("s"), Message.user("task")])
    assert split_reply(out.text)[1] == "ls -la" and out.usage.prompt_tokens > 0
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}}]
    out = await m.complete([Message.system("s"), Message.user("task")], tools)
    assert out.tool_calls[0].name == "bash" and out.tool_calls[0].arguments == {"command": "ls -la"}
    priced = create("scripted:auto?usd_per_mtok=1000000", role="single", task="blotto")
    out = await priced.complete([Message.system("s"), Message.user("task")])
    assert out.cost_usd == pytest.approx(out.usage.total_tokens)


# ------------------------------------------------------------------ ledger and notes


def test_ledger_counts_steps_over_sessions_and_finds_the_best():
    L = Ledger("Score", "max")
    for sess, steps in (("s1", 3), ("s2", 2)):
        for i in range(1, steps + 1):
            L.feed(P.Envelope(body=P.CommandEvent(session=sess, step=i, command="ls", agent="coder")))
            L.feed(P.Envelope(body=P.ObservationEvent(session=sess, step=i, output="", exit_code=0)))
    L.feed(P.Envelope(body=P.ScoreEvent(session="s1", step=2, action="validate", scores={"Score": 1.0})))
    att = L.feed(P.Envelope(body=P.ScoreEvent(session="s2", step=1, action="validate", scores={"Score": 2.0})))
    assert L.steps == 5 and L.agents["coder"].env_steps == 5
    assert att is not None and att.run_step == 4 and L.best() is att
    assert not L.busy("s1") and not L.busy("s2")


def test_ledger_knows_when_a_session_is_busy_even_with_events_lost():
    """A session runs one action at a time: a step starting means the earlier ones finished (an
    observation event lost with a killed broker), and a new generation (a restarted environment
    server) means the dead server's action will never report its end."""
    L = Ledger("Score", "max")

    def feed(body: P.Body) -> None:
        L.feed(P.Envelope(body=body))

    feed(P.CommandEvent(session="s1", step=1, command="ls"))
    assert L.busy("s1")
    feed(P.CommandEvent(session="s1", step=2, command="validate"))  # step 1's observation lost
    feed(P.ObservationEvent(session="s1", step=2, output="", exit_code=0))
    assert not L.busy("s1")
    feed(P.CommandEvent(session="s1", step=3, command="python train.py"))
    assert L.busy("s1")
    feed(P.RunInfo(run="r", task="t", session="s1", env="e", generation=2))  # its server died
    assert not L.busy("s1") and L.generation == 2


async def test_an_agent_obeys_only_orders_of_the_generation_it_joined_or_later():
    """A resumed agent (joined in generation 2) reads the old `stop` that interrupted the run
    back from the log (generation 1): history, not an order (issue #18, item 1)."""
    a = Agent(Options(name="agent", role="single", run="r", bus="ipc:///nowhere",
                      model="scripted:auto"))
    a.joined = 2

    async def log(*bodies: P.Body):
        for b in bodies:
            yield P.Envelope(body=b)

    await a._listen(log(P.Control(action="stop", reason="interrupted", generation=1),
                        P.Control(action="warn", reason="note for now", generation=2)))
    assert not a._stop.is_set() and a.notes == ["note for now"]
    await a._listen(log(P.Control(action="stop", reason="submitted", generation=3)))
    assert a._stop.is_set() and "submitted" in a._stop_reason


def test_repeated_failing_command_is_pointed_out():
    a = Agent(Options(name="c", role="coder", run="r", bus="ipc:///nowhere", model="scripted:auto"))
    assert a._notes_for("python train.py", 1) == []
    assert a._notes_for("python train.py", 1) == []
    notes = a._notes_for("python train.py", 1)
    assert notes and "failed 3 times" in notes[0]
    assert a._notes_for("python train.py", 0) == []


def test_budget_checks():
    from mlgym.agents import budgets as B

    L = Ledger("Score", "max")
    L.feed(P.Envelope(body=P.AgentStatus(agent="lit", role="literature", state="working", tokens=500, cost_usd=0.2)))
    L.feed(P.Envelope(body=P.CommandEvent(session="s", step=3, command="ls", agent="coder")))
    assert B.run_exhausted(C.Budget(steps=3), L, 0) == "steps"
    assert B.run_exhausted(C.Budget(steps=4, tokens=500), L, 0) == "tokens"
    assert B.run_exhausted(C.Budget(dollars=0.2), L, 0) == "dollars"
    assert B.run_exhausted(C.Budget(wall_clock_s=10), L, 10.5) == "wall_clock"
    assert B.run_exhausted(C.Budget(steps=4, tokens=501, dollars=1, wall_clock_s=60), L, 1) == ""
    agents = [C.AgentConfig(name="lit", role="literature", budget=C.Budget(tokens=400)),
              C.AgentConfig(name="coder", role="coder", budget=C.Budget(steps=1))]
    over = [(a.name, why) for a, why in B.agents_exhausted(agents, L, 0.0, set())]
    assert over == [("lit", "tokens"), ("coder", "steps")]
    assert [a.name for a, _ in B.agents_exhausted(agents, L, 0.0, {"lit"})] == ["coder"]


def test_run_memory_option(tmp_path, monkeypatch):
    """`mlgym run --memory`: the run's own store by default, `shared` the per-user one, else
    the file named; a directory is refused with a hint."""
    import click

    from mlgym.agents.cli import _memory_db

    monkeypatch.setenv("MLGYM_HOME", str(tmp_path / "home"))
    assert _memory_db(None) is None
    assert _memory_db("shared") == tmp_path / "home" / "memory.sqlite"
    assert _memory_db(str(tmp_path / "m.sqlite")) == tmp_path / "m.sqlite"
    with pytest.raises(click.BadParameter, match="is a directory"):
        _memory_db(str(tmp_path))
