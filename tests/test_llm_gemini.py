"""The `gemini:` backend through the official `google-genai` SDK against a local server speaking
the Gemini REST protocol (generateContent, streamGenerateContent?alt=sse): function calls with
thought signatures, usage metadata, retries, timeouts, keys."""

from __future__ import annotations

import base64
import json
import socket
import re

import pytest

from mlgym.agents.llm import Message, MissingApiKey, ModelError, PriceTable, create
from mlgym.agents.llm.gemini_backend import GeminiBackend
from test_llm_fakehttp import FakeServer, Reply

MODEL = "gemini-2.0-flash"
# The SDK picks the API version (v1 or v1beta, depending on its release): accept either.
GENERATE = re.compile(rf"/v1(beta)?/models/{MODEL}:generateContent")
STREAM = re.compile(rf"/v1(beta)?/models/{MODEL}:streamGenerateContent\?alt=sse")
SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "line": {"type": "integer"}},
    "required": ["path"],
    "additionalProperties": False,  # full JSON Schema, as the ACI writes it
}
OPEN_TOOL = {"type": "function",
             "function": {"name": "open", "description": "Open a file.", "parameters": SCHEMA}}
SIG = base64.b64encode(b"opaque-thought-signature").decode()


def pick(obj: dict, camel: str):
    """A field by its JSON name. Google's JSON APIs accept proto field names in camelCase or
    snake_case, and the SDK sends some (function declarations) in snake_case: read either."""
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    assert (camel in obj) != (snake in obj), f"expected exactly one of {camel}/{snake}: {obj}"
    return obj[camel] if camel in obj else obj[snake]


def response(parts, finish="STOP", usage=(10, 4, 0)):
    meta = {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1],
            "totalTokenCount": sum(usage)}
    if usage[2]:
        meta["thoughtsTokenCount"] = usage[2]
    cand = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": meta, "modelVersion": f"{MODEL}-001",
            "responseId": "resp-1"}


def status(code, state, message):
    return Reply(code, {"error": {"code": code, "message": message, "status": state}})


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


def backend(server, **kw):
    kw.setdefault("api_key", "g-test-key")
    kw.setdefault("prices", PriceTable())
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return GeminiBackend(MODEL, base_url=server.url + "/", **kw)


CONVO = [Message.system("You are an ML researcher."), Message.user("Improve the baseline.")]


async def test_text_mode_request_and_usage(server):
    server.push(Reply(json=response([{"text": "ls "}, {"text": "-la"}], usage=(10, 4, 6))))
    async with backend(server) as llm:
        out = await llm.complete(CONVO, temperature=0.0, max_tokens=128)
    req = server.requests[0]
    assert req.method == "POST" and GENERATE.fullmatch(req.path)
    assert req.headers["x-goog-api-key"] == "g-test-key"
    assert req.body["contents"] == [{"role": "user", "parts": [{"text": "Improve the baseline."}]}]
    assert req.body["systemInstruction"]["parts"] == [{"text": "You are an ML researcher."}]
    assert req.body["generationConfig"] == {"temperature": 0.0, "maxOutputTokens": 128}
    assert "tools" not in req.body
    assert out.text == "ls -la" and out.tool_calls == [] and out.raw_finish_reason == "STOP"
    # thinking tokens are billed as output
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (10, 10)
    assert out.model == f"{MODEL}-001"
    assert out.cost_usd == pytest.approx((10 * 0.10 + 10 * 0.40) / 1e6)


async def test_function_calls_with_thought_signatures_round_trip(server):
    server.push(
        Reply(json=response([
            {"text": "Opening both."},
            {"functionCall": {"name": "open", "args": {"path": "a.py"}}, "thoughtSignature": SIG},
            {"functionCall": {"id": "fc-2", "name": "open", "args": {"path": "b.py", "line": 7}}},
        ])),
        Reply(json=response([{"text": "Both read."}])),
    )
    async with backend(server) as llm:
        out = await llm.complete(CONVO, tools=[OPEN_TOOL])
        a, b = out.tool_calls
        assert (a.name, a.arguments, a.meta) == ("open", {"path": "a.py"}, {"thought_signature": SIG})
        assert (b.id, b.arguments) == ("fc-2", {"path": "b.py", "line": 7})
        assert out.text == "Opening both."
        convo = [*CONVO, out.to_message(), Message.tool(a.id, "1: import numpy"),
                 Message.tool(b.id, "7: x = 1", name="open")]
        second = await llm.complete(convo, tools=[OPEN_TOOL])
    assert second.text == "Both read."
    first_req, second_req = server.requests
    (decl,) = pick(first_req.body["tools"][0], "functionDeclarations")
    assert (decl["name"], decl["description"]) == ("open", "Open a file.")
    assert pick(decl, "parametersJsonSchema") == SCHEMA  # the ACI's schema, unchanged
    assert pick(pick(first_req.body, "toolConfig"), "functionCallingConfig") == {"mode": "AUTO"}
    contents = second_req.body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model_parts = contents[1]["parts"]
    assert model_parts[0] == {"text": "Opening both."}
    assert model_parts[1]["functionCall"] == {"name": "open", "args": {"path": "a.py"}}
    assert model_parts[1]["thoughtSignature"] == SIG  # sent back byte for byte
    assert model_parts[2]["functionCall"] == {"id": "fc-2", "name": "open",
                                              "args": {"path": "b.py", "line": 7}}
    # both results in one user turn; the first found its tool name from the call
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "open", "response": {"output": "1: import numpy"}}},
        {"functionResponse": {"id": "fc-2", "name": "open", "response": {"output": "7: x = 1"}}},
    ]


async def test_streaming_text_and_function_call(server):
    server.push(Reply(sse=[
        json.dumps(response([{"text": "Let me "}], finish=None, usage=(20, 2, 0))),
        json.dumps(response([{"text": "check."}], finish=None, usage=(20, 4, 0))),
        json.dumps(response([{"functionCall": {"name": "open", "args": {"path": "c.py"}}}],
                            usage=(20, 9, 0))),
    ]))
    tokens: list[str] = []
    async with backend(server) as llm:
        out = await llm.complete(CONVO, tools=[OPEN_TOOL], stream=True, on_token=tokens.append)
    assert STREAM.fullmatch(server.requests[0].path)
    assert pick(server.requests[0].body["tools"][0], "functionDeclarations")[0]["name"] == "open"
    assert tokens == ["Let me ", "check."] and out.text == "Let me check."
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("open", {"path": "c.py"})]
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (20, 9)  # the last counts
    assert out.raw_finish_reason == "STOP"


async def test_rate_limit_then_success(server):
    server.push(status(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"),
                Reply(json=response([{"text": "ok"}])))
    async with backend(server, max_retries=3) as llm:
        out = await llm.complete(CONVO)
    assert out.text == "ok" and len(server.requests) == 2


async def test_server_errors_then_success_and_until_failure(server):
    server.push(status(500, "INTERNAL", "oops"), status(503, "UNAVAILABLE", "overloaded"),
                Reply(json=response([{"text": "fine"}])))
    async with backend(server, max_retries=2) as llm:
        assert (await llm.complete(CONVO)).text == "fine"
        assert len(server.requests) == 3
        server.default = lambda seen: status(500, "INTERNAL", "still broken")
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO)
    e = info.value
    assert (e.code, e.status, e.retryable) == ("server_error", 500, True)
    assert "still broken" in str(e)
    assert len(server.requests) == 3 + 3  # one try and two retries


async def test_client_errors_are_not_retried(server):
    server.push(status(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
                status(403, "PERMISSION_DENIED", "API key not valid."))
    async with backend(server, max_retries=3) as llm:
        with pytest.raises(ModelError) as bad:
            await llm.complete(CONVO)
        with pytest.raises(ModelError) as auth:
            await llm.complete(CONVO)
    assert bad.value.code == "bad_request" and "Invalid JSON payload" in str(bad.value)
    assert auth.value.code == "auth" and "GEMINI_API_KEY" in str(auth.value)
    assert len(server.requests) == 2


async def test_timeout_is_a_typed_error(server):
    server.default = lambda seen: Reply(json=response([{"text": "late"}]), delay_s=30)
    async with backend(server, max_retries=1, timeout_s=0.3) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO)
    assert info.value.code == "timeout" and info.value.retryable
    assert len(server.requests) == 2  # our retry loop, whichever HTTP stack the SDK picked


async def test_spec_with_base_url_needs_no_key(server, monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    server.push(Reply(json=response([{"text": "local"}])))
    async with create(f"gemini:{MODEL}@{server.url}/", prices=PriceTable()) as llm:
        out = await llm.complete([Message.user("hi")])
    assert out.text == "local"
    assert server.requests[0].headers["x-goog-api-key"] == "not-needed"


def test_missing_key_names_the_variables(monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MissingApiKey) as info:
        create(f"gemini:{MODEL}")
    assert "GEMINI_API_KEY" in str(info.value) and "GOOGLE_API_KEY" in str(info.value)


async def test_key_from_environment(server, monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    server.push(Reply(json=response([{"text": "x"}])))
    async with backend(server, api_key=None) as llm:
        await llm.complete([Message.user("hi")])
    assert server.requests[0].headers["x-goog-api-key"] == "from-env"


async def test_unreachable_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    async with GeminiBackend(MODEL, base_url=url, api_key="k", max_retries=1,
                             backoff_s=0.01) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO)
    assert info.value.code == "connection" and url in str(info.value)
