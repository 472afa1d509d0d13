"""Real runs (`run_team`: broker, environment server, supervisor, an agent process using the
official SDK) against local servers speaking the OpenAI or Gemini protocol that fail: a reply
that streams forever, a server that stalls, 429 / 500 / a context-length 400, a refused
connection. Each ends the agent with its typed exit within the configured bounds, after
visible retries; the run auto-submits; the live table and the final summary say why. A server
with a context limit makes the agent shorten its history and go on."""

from __future__ import annotations

import itertools
import json
import socket
from typing import Callable

import pytest
from test_agents_openai import scripted_openai
from test_llm_fakehttp import FakeServer, Reply, Seen
from test_llm_gemini import response as gemini_response
from test_llm_gemini import status as gemini_status
from test_llm_openai import chunk as openai_chunk
from test_llm_openai import err as openai_err

from mlgym.agents import config as C
from mlgym.agents.events import events
from mlgym.agents.ledger import Ledger
from mlgym.agents.progress import summary_lines, table
from mlgym.agents.supervisor import run_team
from mlgym.bus import protocol as P

TASK = "battleOfSexes"
LIMITS = {"max_retries": 2, "call_timeout_s": 1.5, "stall_timeout_s": 0.5}


def team(spec: str, **limits) -> C.TeamConfig:
    t = C.override_models(C.load_team("single"), spec)
    for field, value in {**LIMITS, **limits}.items():
        t = C.override_agents(t, field, value)
    return t


def openai_failure(kind: str) -> Callable[[Seen], Reply]:
    return {
        "streams_forever": lambda seen: Reply(
            sse=(openai_chunk({"content": "la "}) for _ in itertools.count()), interval_s=0.05),
        "stalls": lambda seen: Reply(json={}, delay_s=60),
        "429": lambda seen: openai_err(429, "Rate limit reached for requests", "requests",
                                       {"Retry-After": "0.2"}),
        "500": lambda seen: openai_err(500, "The server had an error processing your request"),
        "context_400": lambda seen: openai_err(
            400, "This model's maximum context length is 4096 tokens. However, your messages "
            "resulted in 5210 tokens. Please reduce the length of the messages.",
            "invalid_request_error"),
    }[kind]


def gemini_failure(kind: str) -> Callable[[Seen], Reply]:
    return {
        "streams_forever": lambda seen: Reply(
            sse=(json.dumps(gemini_response([{"text": "la "}], finish=None))
                 for _ in itertools.count()), interval_s=0.05),
        "stalls": lambda seen: Reply(json={}, delay_s=60),
        "429": lambda seen: gemini_status(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"),
        "500": lambda seen: gemini_status(503, "UNAVAILABLE", "The model is overloaded"),
        "context_400": lambda seen: gemini_status(
            400, "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed "
            "(1048576)."),
    }[kind]


CASES = [  # (failure, typed exit, error code of the retries, tries the server sees)
    ("streams_forever", "model_unreachable", "timeout", 3),
    ("stalls", "model_unreachable", "timeout", 3),
    ("429", "rate_limited", "rate_limited", 3),
    ("500", "model_unreachable", "server_error", 3),
    ("context_400", "context_overflow", "", 2),  # not retried: shortened once, tried once more
    ("refused", "model_unreachable", "connection", 0),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol", ["openai", "gemini"])
@pytest.mark.parametrize(("failure", "exit", "error", "tries"), CASES, ids=[c[0] for c in CASES])
async def test_model_failure_ends_the_agent_with_a_typed_exit_and_the_run_autosubmits(
        tmp_path, monkeypatch, protocol, failure, exit, error, tries):
    monkeypatch.setenv("MLGYM_OFFLINE", "1")
    run_dir = tmp_path / "run"
    make = openai_failure if protocol == "openai" else gemini_failure
    if failure == "refused":
        url = f"http://127.0.0.1:{closed_port()}"
        server = None
    else:
        server = FakeServer(default=make(failure))
        server.__enter__()
        url = server.url
    spec = (f"openai:gpt-4o@{url}/v1" if protocol == "openai"
            else f"gemini:gemini-2.0-flash@{url}/")
    try:
        result = await run_team(TASK, team(spec), run_dir=run_dir, progress=False)
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    agent = result["agents"]["agent"]
    assert agent["exit"] == exit, agent
    assert agent["turns"] == 0 and agent["exit_detail"]
    # the run went on without the agent: the supervisor submitted the starter artefact
    assert result["exit_status"] == "autosubmission (agents_stopped)"
    assert result["final_submission"]["auto"] is True
    assert result["agents"]["supervisor"]["exit"] == "auto-submitted"
    if server is not None:
        assert len(server.requests) == tries
    statuses = [e for e in events(run_dir, ["status/agent"]) if isinstance(e.body, P.AgentStatus)]
    retrying = [e.body for e in statuses if e.body.state == "retrying"]
    if error:
        assert [(s.retry, s.max_retries, s.error) for s in retrying] == [
            (1, 2, error), (2, 2, error)]
    else:
        assert retrying == []
    stopped = statuses[-1].body
    assert (stopped.state, stopped.exit) == ("stopped", exit)
    # within the configured bounds: three tries of at most 1.5 s and two waits of at most 2 s
    started = next(e.ts for e in statuses if e.body.state == "working")
    assert statuses[-1].ts - started < 3 * 1.5 + 2 * 2 + 10
    # the table (as the supervisor's ledger sees the log) and the summary say why
    ledger = Ledger("Score", "max")
    for env in events(run_dir):
        ledger.feed(env)
    from rich.console import Console

    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table(ledger))
    assert f"ended: {exit}" in console.export_text()
    assert any(line.startswith(f"  agent: {exit}: ") for line in summary_lines(result))


@pytest.mark.timeout(180)
async def test_context_limit_is_met_by_shortening_the_history(tmp_path, monkeypatch):
    """A server that refuses prompts over a size (as a local model with a small context does)
    answers the scripted policy otherwise: the agent shortens its history when refused, and the
    run still submits its own, better strategy."""
    monkeypatch.setenv("MLGYM_OFFLINE", "1")
    answer = scripted_openai(TASK)
    limit = 10_500  # characters: the last:5 window passes this after a few turns

    def limited(seen: Seen) -> Reply:
        size = sum(len(m.get("content") or "") for m in seen.body["messages"])
        if size > limit:
            return openai_err(400, f"This model's maximum context length is {limit // 4} tokens. "
                              f"However, your messages resulted in {size // 4} tokens.",
                              "invalid_request_error")
        return answer(seen)

    with FakeServer(default=limited) as srv:
        result = await run_team(TASK, team(f"openai:gpt-4o@{srv.url}/v1"),
                                run_dir=tmp_path / "run", progress=False)
    sizes = [sum(len(m.get("content") or "") for m in s.body["messages"]) for s in srv.requests]
    refused = [i for i, n in enumerate(sizes) if n > limit]
    assert refused, f"the test needs a prompt over the limit: {sizes}"
    assert all(sizes[i + 1] <= limit for i in refused)  # each refusal: a shorter prompt next
    assert result["exit_status"] == "submitted"
    assert result["final_submission"]["scores"]["Score"] > result["baseline"]["Score"]
    assert result["agents"]["agent"]["exit"] == "submitted"
