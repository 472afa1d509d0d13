"""The agent runtime with a real model backend: the official OpenAI SDK in the agent process
talks HTTP to a local OpenAI-compatible server, which answers with the scripted policy. So the
requests a model really receives (prompt structure, shortened history) can be checked, and
the dollars are priced as gpt-4o."""

from __future__ import annotations

import time

import pytest

from conftest import assert_beats_baseline
from test_llm_fakehttp import FakeServer, Reply, Seen

from mlgym.agents import config as C
from mlgym.agents.llm import Message
from mlgym.agents.scripted import estimate_tokens, policy
from mlgym.agents.scripted.transcript import read
from mlgym.agents.supervisor import run_team


def scripted_openai(task: str):
    ctx = policy.Context(role="single", task=task)

    def answer(seen: Seen) -> Reply:
        msgs = [Message(m["role"], m.get("content") or "") for m in seen.body["messages"]]
        thought, command = policy.single(read(msgs, {}), ctx)
        text = f"DISCUSSION\n{thought}\n\n```\n{command}\n```\n"
        usage = (sum(estimate_tokens(m.content) for m in msgs), estimate_tokens(text))
        return Reply(json={
            "id": "chatcmpl-x", "object": "chat.completion", "created": int(time.time()),
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        })

    return answer


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
    # the 8th call sees 7 observations, the 2 oldest shortened (MLGym's last-5 history)
    last = [m["content"] for m in reqs[-1]["messages"] if m["role"] == "user"][1:]
    assert len(last) == 7
    assert all(c.startswith("Old environment output:") for c in last[:2])
    assert not any(c.startswith("Old environment output:") for c in last[2:])
    assert "(Current Step: 7, Remaining Steps:" in last[-1]
    # priced as gpt-4o ($2.50 / $10 per million tokens), reported and written to result.json
    assert 0 < result["cost_usd"] < 0.5
    assert result["agents"]["agent"]["cost_usd"] == pytest.approx(result["cost_usd"])
