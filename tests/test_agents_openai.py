"""The agent runtime with a real model backend: the official OpenAI SDK in the agent process
talks HTTP to a local OpenAI-compatible server, which answers with the scripted policy. So the
requests a model really receives (prompt structure, shortened history) can be checked, and
the dollars are priced as gpt-4o, cached prompt tokens at gpt-4o's cached rate."""

from __future__ import annotations

import json

import pytest

from conftest import assert_beats_baseline
from test_llm_fakehttp import FakeServer, Reply, Seen
from test_llm_openai import chunk, completion

from mlgym.agents import config as C
from mlgym.agents.events import events
from mlgym.agents.llm import Message
from mlgym.agents.scripted import estimate_tokens, policy
from mlgym.agents.scripted.transcript import read
from mlgym.agents.supervisor import run_team


def scripted_openai(task: str):
    """Answers with the scripted single policy, and reports as cached the leading messages the
    request shares with the one before (a prompt cache of one slot)."""
    ctx = policy.Context(role="single", task=task)
    previous: list[Message] = []

    def answer(seen: Seen) -> Reply:
        msgs = [Message(m["role"], m.get("content") or "") for m in seen.body["messages"]]
        thought, command = policy.single(read(msgs, {}), ctx)
        text = f"DISCUSSION\n{thought}\n\n```\n{command}\n```\n"
        shared = 0
        for a, b in zip(previous, msgs):
            if a != b:
                break
            shared += estimate_tokens(a.content)
        previous[:] = msgs
        usage = (sum(estimate_tokens(m.content) for m in msgs), estimate_tokens(text))
        return openai_reply(seen, text, usage, cached=shared)

    return answer


def openai_reply(seen: Seen, text: str, usage: tuple[int, int], cached: int = 0) -> Reply:
    """A chat completion as the server would send it: streamed (server-sent events, usage last)
    when the request asks for a stream, else one JSON object; `cached` prompt tokens reported
    in `prompt_tokens_details`."""
    if seen.body.get("stream"):
        last = json.loads(chunk(None, usage=usage))
        last["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
        return Reply(sse=[chunk({"role": "assistant", "content": text}), chunk({}, finish="stop"),
                          json.dumps(last), "[DONE]"])
    body = completion(text, usage=usage)
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
    return Reply(json=body)


@pytest.mark.timeout(120)
async def test_single_agent_over_the_openai_sdk(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer(default=scripted_openai("battleOfSexes")) as srv:
        team = C.override_models(C.load_team("single"), f"openai:gpt-4o@{srv.url}/v1")
        result = await run_team("battleOfSexes", team, run_dir=tmp_path / "run", progress=False)
    assert result["exit_status"] == "submitted"
    assert_beats_baseline(result, 1.0227)
    reqs = [s.body for s in srv.requests if s.path.endswith("/chat/completions")]
    assert len(reqs) == result["agents"]["agent"]["turns"] == 8
    first = reqs[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user"]
    assert "COMMANDS:" in first[0]["content"] and "RESPONSE FORMAT:" in first[0]["content"]
    assert "TASK DESCRIPTION:" in first[1]["content"] and "(Current Step: 0" in first[1]["content"]
    assert reqs[0]["temperature"] == 0.0 and "tools" not in reqs[0]
    assert reqs[0]["stream"] is True and reqs[0]["max_tokens"] == 4096  # bounded, cut if need be
    # the 8th call sees 7 observations, the 2 oldest shortened (MLGym's last-5 history)
    last = [m["content"] for m in reqs[-1]["messages"] if m["role"] == "user"][1:]
    assert len(last) == 7
    assert all(c.startswith("Old environment output:") for c in last[:2])
    assert not any(c.startswith("Old environment output:") for c in last[2:])
    assert "(Current Step: 7, Remaining Steps:" in last[-1]
    # priced as gpt-4o ($2.50 / $10 per million tokens, $1.25 cached), reported and written to
    # result.json and the trajectory
    assert 0 < result["cost_usd"] < 0.5
    agent = result["agents"]["agent"]
    assert agent["cost_usd"] == pytest.approx(result["cost_usd"])
    steps = [e.body for e in events(tmp_path / "run", ["agents/agent/step"])]
    prompt, cached = sum(s.prompt_tokens for s in steps), sum(s.cached_tokens for s in steps)
    completion_tokens = sum(s.completion_tokens for s in steps)
    assert 0 < cached < prompt and agent["cached_tokens"] == cached
    assert agent["cost_usd"] == pytest.approx(
        ((prompt - cached) * 2.5 + cached * 1.25 + completion_tokens * 10) / 1e6, abs=1e-6)
    traj = json.loads((tmp_path / "run" / "trajectories" / "agent.traj").read_text())
    assert traj["info"]["model_stats"]["tokens_cached"] == cached
