"""The `openai:` backend through the official `openai` SDK against a local server speaking the
chat-completions protocol: JSON and SSE replies, tool calls, retries, timeouts, keys, cost."""

from __future__ import annotations

import json
import socket
import time

import pytest

from mlgym.agents.llm import Message, MissingApiKey, ModelError, PriceTable, create
from mlgym.agents.llm.openai_backend import OpenAIBackend
from test_llm_fakehttp import FakeServer, Reply

OPEN_TOOL = {
    "type": "function",
    "function": {
        "name": "open",
        "description": "Open a file in the viewer.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "line": {"type": "integer"}},
            "required": ["path"],
        },
    },
}
RUN_TOOL = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
    },
}


def completion(content=None, tool_calls=None, finish="stop", model="gpt-4o-2024-08-06",
               usage=(12, 5)):
    msg = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                  "total_tokens": sum(usage)},
    }


def chunk(delta=None, finish=None, usage=None, model="gpt-4o-2024-08-06"):
    body = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [] if delta is None else
            [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                         "total_tokens": sum(usage)}
    return json.dumps(body)


def err(status, message, typ="server_error", headers=None):
    return Reply(status, {"error": {"message": message, "type": typ, "code": None}},
                 headers=headers or {})


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


def backend(server, model="gpt-4o", **kw):
    kw.setdefault("api_key", "sk-test")
    kw.setdefault("prices", PriceTable())
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(model, base_url=server.url + "/v1", **kw)


CONVO = [Message.system("You are an ML researcher."), Message.user("Improve the baseline.")]


async def test_text_mode_sends_conversation_and_accounts_cost(server):
    server.push(Reply(json=completion("ls -la")))
    async with backend(server) as llm:
        out = await llm.complete(CONVO, max_tokens=64)
    req = server.requests[0]
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.body["model"] == "gpt-4o"
    assert req.body["messages"] == [
        {"role": "system", "content": "You are an ML researcher."},
        {"role": "user", "content": "Improve the baseline."},
    ]
    assert req.body["temperature"] == 0.0
    assert req.body["max_tokens"] == 64  # a compatible server gets the classic name
    assert "tools" not in req.body and "stream" not in req.body
    assert out.text == "ls -la" and out.tool_calls == []
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (12, 5)
    assert out.model == "gpt-4o-2024-08-06" and out.raw_finish_reason == "stop"
    assert out.cost_usd == pytest.approx((12 * 2.50 + 5 * 10.00) / 1e6)
    assert out.latency_s > 0
    assert (llm.calls, llm.usage.total_tokens) == (1, 17)
    assert llm.cost_usd == pytest.approx(out.cost_usd)


async def test_function_calling_round_trip(server):
    calls = [
        {"id": "call_a", "type": "function",
         "function": {"name": "open", "arguments": '{"path": "train.py", "line": 3}'}},
        {"id": "call_b", "type": "function", "function": {"name": "bash", "arguments": "{oops"}},
    ]
    server.push(Reply(json=completion(None, calls, finish="tool_calls")),
                Reply(json=completion("done")))
    async with backend(server) as llm:
        out = await llm.complete(CONVO, tools=[OPEN_TOOL, RUN_TOOL])
        assert out.raw_finish_reason == "tool_calls" and out.text == ""
        a, b = out.tool_calls
        assert (a.id, a.name, a.arguments, a.error) == ("call_a", "open", {"path": "train.py", "line": 3}, "")
        assert (b.name, b.arguments) == ("bash", {}) and "not valid JSON" in b.error
        convo = [*CONVO, out.to_message(), Message.tool("call_a", "1: import torch", name="open"),
                 Message.tool("call_b", "error: " + b.error, name="bash")]
        await llm.complete(convo, tools=[OPEN_TOOL, RUN_TOOL])
    first, second = server.requests
    assert first.body["tools"] == [OPEN_TOOL, RUN_TOOL]
    assert first.body["tool_choice"] == "auto"
    sent = second.body["messages"]
    assert sent[2] == {"role": "assistant", "content": None, "tool_calls": calls}  # arguments verbatim
    assert sent[3] == {"role": "tool", "tool_call_id": "call_a", "content": "1: import torch"}
    assert sent[4]["tool_call_id"] == "call_b"


async def test_streaming_text_reports_tokens_and_usage(server):
    server.push(Reply(sse=[
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "look."}),
        chunk({}, finish="stop"),
        chunk(None, usage=(30, 4)),
        "[DONE]",
    ]))
    seen: list[str] = []

    async def on_token(t: str) -> None:  # async callbacks are awaited
        seen.append(t)

    async with backend(server) as llm:
        out = await llm.complete(CONVO, stream=True, on_token=on_token)
    body = server.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert seen == ["Let me ", "look."]
    assert out.text == "Let me look." and out.raw_finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (30, 4)
    assert out.cost_usd == pytest.approx((30 * 2.5 + 4 * 10) / 1e6)


async def test_streaming_tool_call_deltas_are_reassembled(server):
    server.push(Reply(sse=[
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_x", "type": "function",
             "function": {"name": "open", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.py"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_y", "type": "function",
                               "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]}),
        chunk({}, finish="tool_calls"),
        chunk(None, usage=(50, 20)),
        "[DONE]",
    ]))
    tokens: list[str] = []
    async with backend(server) as llm:
        out = await llm.complete(CONVO, tools=[OPEN_TOOL, RUN_TOOL], stream=True,
                                 on_token=tokens.append)
    assert server.requests[0].body["tools"] == [OPEN_TOOL, RUN_TOOL]
    assert [(c.id, c.name, c.arguments) for c in out.tool_calls] == [
        ("call_x", "open", {"path": "a.py"}), ("call_y", "bash", {"command": "ls"})]
    assert out.tool_calls[0].raw_arguments == '{"path": "a.py"}'
    assert tokens == [] and out.raw_finish_reason == "tool_calls"
    assert out.usage.total_tokens == 70


async def test_rate_limit_honours_retry_after_then_succeeds(server):
    server.push(err(429, "Rate limit reached for gpt-4o", "requests", {"Retry-After": "1"}),
                Reply(json=completion("ok")))
    async with backend(server, max_retries=2) as llm:
        out = await llm.complete(CONVO)
    assert out.text == "ok"
    assert len(server.requests) == 2
    # Behaviour, not speed: the SDK waited at least the second the server asked for.
    assert server.requests[1].at - server.requests[0].at >= 0.95


async def test_server_errors_are_retried_then_succeed(server):
    server.push(err(500, "boom"), err(503, "overloaded"), Reply(json=completion("fine")))
    async with backend(server, max_retries=2) as llm:
        out = await llm.complete(CONVO)
    assert out.text == "fine" and len(server.requests) == 3


async def test_persistent_server_errors_raise_a_typed_error(server):
    server.default = lambda seen: err(500, "the model is on fire")
    async with backend(server, max_retries=1) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO)
    e = info.value
    assert (e.code, e.status, e.retryable) == ("server_error", 500, True)
    assert "the model is on fire" in str(e) and "after 1 retries" in str(e)
    assert len(server.requests) == 2
    assert llm.calls == 0  # a failed call is not accounted


async def test_timeout_is_retried_then_a_typed_error(server):
    server.default = lambda seen: Reply(json=completion("late"), delay_s=30)
    async with backend(server, max_retries=1, timeout_s=0.3) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO)
    assert info.value.code == "timeout" and info.value.retryable
    assert len(server.requests) == 2


async def test_client_errors_are_not_retried(server):
    server.push(err(400, "Invalid 'messages[1].role'", "invalid_request_error"))
    server.push(err(401, "Incorrect API key provided", "invalid_request_error"))
    async with backend(server, max_retries=3) as llm:
        with pytest.raises(ModelError) as bad:
            await llm.complete(CONVO)
        with pytest.raises(ModelError) as auth:
            await llm.complete(CONVO)
    assert bad.value.code == "bad_request" and "Invalid 'messages[1].role'" in str(bad.value)
    assert auth.value.code == "auth" and "OPENAI_API_KEY" in str(auth.value)
    assert len(server.requests) == 2


async def test_error_event_mid_stream_is_a_typed_error(server):
    server.push(Reply(sse=[chunk({"content": "par"}),
                           json.dumps({"error": {"message": "stream broke", "type": "server_error"}})]))
    async with backend(server, max_retries=0) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True)
    assert "stream broke" in str(info.value)
    assert info.value.code == "bad_response" and info.value.retryable  # a broken reply: try again


async def test_spec_with_base_url_needs_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.push(Reply(json=completion("hi", model="llama3.1:8b")))
    llm = create(f"openai:llama3.1:8b@{server.url}/v1", prices=PriceTable())
    try:
        out = await llm.complete([Message.user("hello")])
    finally:
        await llm.aclose()
    req = server.requests[0]
    assert req.body["model"] == "llama3.1:8b"  # the ":" of an Ollama tag survives
    assert req.headers["authorization"] == "Bearer not-needed"
    assert out.text == "hi" and out.cost_usd == 0.0  # unknown model: no price


async def test_base_url_from_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.push(Reply(json=completion("env")))
    async with create("openai:qwen2.5-coder") as llm:
        assert (await llm.complete([Message.user("x")])).text == "env"
    assert server.requests[0].path == "/v1/chat/completions"


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(MissingApiKey) as info:
        create("openai:gpt-4o")
    assert info.value.code == "missing_key"
    assert "OPENAI_API_KEY" in str(info.value) and info.value.variables == ["OPENAI_API_KEY"]


def test_official_api_parameters_for_reasoning_models(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    o3 = OpenAIBackend("o3", api_key="sk-test")
    params = o3._params([Message.user("x")], [], 0.0, 100)
    assert "temperature" not in params and params["max_completion_tokens"] == 100
    gpt = OpenAIBackend("gpt-4o", api_key="sk-test")
    params = gpt._params([Message.user("x")], [], 0.2, 100)
    assert params["temperature"] == 0.2 and params["max_completion_tokens"] == 100


async def test_malformed_conversation_is_refused_before_sending(server):
    async with backend(server) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete([Message("robot", "hi")])
        with pytest.raises(ModelError):
            await llm.complete([Message.user("x"), Message("tool", "out")])  # no tool_call_id
        with pytest.raises(ModelError):
            await llm.complete([Message.user("x")], tools=[{"type": "function", "function": {}}])
    assert info.value.code == "bad_request"
    assert server.requests == []



def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_server_is_a_connection_error():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    async with OpenAIBackend("gpt-4o", base_url=url, api_key="k", max_retries=1,
                             backoff_s=0.01) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO)
    assert info.value.code == "connection" and url in str(info.value)
