"""Every model call is bounded, for both protocols, through the official SDKs against local
servers speaking them: a reply that streams forever is cut at max_tokens (or by the wall clock)
and its connection closed; a server that stalls times out; 429 / 5xx / refused connections are
retried a bounded number of times with backoff, then end in a typed error; a context-length 400
is classified as context_overflow and not retried; cancelling a call hangs up on the server."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time

import pytest

from mlgym.agents.llm import Message, ModelError, PriceTable
from mlgym.agents.llm.base import Retry
from mlgym.agents.llm.gemini_backend import GeminiBackend
from mlgym.agents.llm.limits import (
    CallLimits, StreamGuard, default_max_tokens, is_context_overflow, retry_after_s,
)
from mlgym.agents.llm.openai_backend import OpenAIBackend
from test_llm_fakehttp import FakeServer, Reply
from test_llm_gemini import response as gemini_response
from test_llm_gemini import status as gemini_status
from test_llm_openai import chunk as openai_chunk
from test_llm_openai import completion as openai_completion
from test_llm_openai import err as openai_err

CONVO = [Message.system("You are an ML researcher."), Message.user("Improve the baseline.")]


class OpenAI:
    name = "openai"
    cut_finish = "length"

    @staticmethod
    def make(url: str, **kw):
        return OpenAIBackend("gpt-4o", base_url=url + "/v1", api_key="sk-test",
                             prices=PriceTable(), **kw)

    @staticmethod
    def piece(text: str) -> str:
        return openai_chunk({"content": text})

    @staticmethod
    def ok(text: str = "ok") -> Reply:
        return Reply(sse=[openai_chunk({"content": text}), openai_chunk({}, finish="stop"),
                          "[DONE]"])

    @staticmethod
    def rate_limited(wait_s: float) -> Reply:
        return openai_err(429, "Rate limit reached", "requests", {"Retry-After": f"{wait_s:g}"})

    @staticmethod
    def server_error() -> Reply:
        return openai_err(500, "The server had an error while processing your request")

    overflow_messages = [
        # OpenAI and vLLM
        "This model's maximum context length is 8192 tokens. However, your messages resulted in "
        "9120 tokens. Please reduce the length of the messages.",
        # llama.cpp's server
        "the request exceeds the available context size, try increasing it",
    ]

    @staticmethod
    def overflow(message: str) -> Reply:
        return openai_err(400, message, "invalid_request_error")


class Gemini:
    name = "gemini"
    cut_finish = "MAX_TOKENS"

    @staticmethod
    def make(url: str, **kw):
        return GeminiBackend("gemini-2.0-flash", base_url=url + "/", api_key="g-key",
                             prices=PriceTable(), **kw)

    @staticmethod
    def piece(text: str) -> str:
        return json.dumps(gemini_response([{"text": text}], finish=None))

    @staticmethod
    def ok(text: str = "ok") -> Reply:
        return Reply(sse=[json.dumps(gemini_response([{"text": text}]))])

    @staticmethod
    def rate_limited(wait_s: float) -> Reply:
        info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait_s:g}s"}
        return Reply(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                     "message": "Quota exceeded", "details": [info]}})

    @staticmethod
    def server_error() -> Reply:
        return gemini_status(500, "INTERNAL", "An internal error has occurred")

    overflow_messages = [
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ]

    @staticmethod
    def overflow(message: str) -> Reply:
        return gemini_status(400, "INVALID_ARGUMENT", message)


PROTOCOLS = [OpenAI, Gemini]


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def wait_for_hang_up(server: FakeServer, n: int = 1, within: float = 5.0) -> list[float]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        hung = [s.hung_up for s in server.requests if s.hung_up is not None]
        if len(hung) >= n:
            return hung
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server saw {n} hang-ups within {within} s: {server.requests}")


# ------------------------------------------------------------------ (a) streams forever


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_endless_stream_is_cut_at_max_tokens_and_the_connection_closed(server, proto):
    server.push(Reply(sse=(proto.piece("la ") for _ in itertools.count())))
    async with proto.make(server.url, max_retries=0) as llm:
        t0 = time.monotonic()
        out = await llm.complete(CONVO, max_tokens=50, stream=True)
        cut_at = time.monotonic()
    assert out.raw_finish_reason == proto.cut_finish
    assert out.text.startswith("la la ") and out.text.count("la") == 50 + StreamGuard.MARGIN + 1
    assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 0  # accounted, estimated
    (hung,) = await wait_for_hang_up(server)
    assert hung - cut_at < 2.0, "the server went on writing after the reply was cut"
    assert cut_at - t0 < 10


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_endless_trickle_hits_the_wall_clock_then_a_typed_error(server, proto):
    server.default = lambda seen: Reply(sse=(proto.piece("x") for _ in itertools.count()),
                                        interval_s=0.05)
    retries: list[Retry] = []
    async with proto.make(server.url, timeout_s=0.6, max_retries=1, backoff_s=0.05) as llm:
        t0 = time.monotonic()
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, max_tokens=100_000, stream=True, on_retry=retries.append)
        took = time.monotonic() - t0
    e = info.value
    assert (e.code, e.exit, e.retries) == ("timeout", "model_unreachable", 1)
    assert "within 0.6 s" in str(e) and "after 1 retries" in str(e)
    assert [(r.retry, r.max_retries, r.error.code) for r in retries] == [(1, 1, "timeout")]
    assert len(server.requests) == 2
    assert took < llm.limits.worst_case_s() + 3  # two tries of 0.6 s and a short wait, not more
    await wait_for_hang_up(server, 2)  # each abandoned try hung up on the server


# ------------------------------------------------------------------ (b) stalls


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_silent_server_times_out_at_the_stall_bound(server, proto):
    server.default = lambda seen: Reply(json={}, delay_s=60)
    async with proto.make(server.url, stall_s=0.3, timeout_s=30, max_retries=2,
                          backoff_s=0.01) as llm:
        t0 = time.monotonic()
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True)
        took = time.monotonic() - t0
    assert (info.value.code, info.value.exit) == ("timeout", "model_unreachable")
    assert len(server.requests) == 3
    assert took < 3 * 0.3 + 3  # the stall bound per try, not the 30 s wall clock


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_unstreamed_reply_may_take_longer_than_the_stall_bound(server, proto):
    """Without streaming the server says nothing until the reply is whole: the wall clock
    bounds it, not the stall bound."""
    body = openai_completion("slow") if proto is OpenAI else gemini_response([{"text": "slow"}])
    server.push(Reply(json=body, delay_s=0.8))
    async with proto.make(server.url, stall_s=0.3, timeout_s=10, max_retries=0) as llm:
        assert (await llm.complete(CONVO)).text == "slow"


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_stream_that_stalls_midway_times_out(server, proto):
    server.default = lambda seen: Reply(sse=[proto.piece("Let me "), 60.0, proto.piece("never")])
    async with proto.make(server.url, stall_s=0.3, max_retries=0) as llm:
        t0 = time.monotonic()
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True)
    assert info.value.code == "timeout" and time.monotonic() - t0 < 3
    await wait_for_hang_up(server)


# ------------------------------------------------------------ (c) 429, 500, 400 context length


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_rate_limit_waits_as_asked_then_ends_rate_limited(server, proto):
    server.default = lambda seen: proto.rate_limited(0.4)
    retries: list[Retry] = []
    async with proto.make(server.url, max_retries=2, backoff_s=5) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True, on_retry=retries.append)
    e = info.value
    assert (e.code, e.exit, e.status, e.retries) == ("rate_limited", "rate_limited", 429, 2)
    assert [r.wait_s for r in retries] == [0.4, 0.4]  # the server's wait, not the 5 s backoff
    at = [s.at for s in server.requests]
    assert len(at) == 3 and all(b - a >= 0.38 for a, b in zip(at, at[1:]))


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_server_errors_retry_with_backoff_then_succeed_or_end_unreachable(server, proto):
    server.push(proto.server_error(), proto.ok("fine"))
    async with proto.make(server.url, max_retries=3, backoff_s=0.01) as llm:
        assert (await llm.complete(CONVO, stream=True)).text == "fine"
        assert llm.retries == 1
        server.default = lambda seen: proto.server_error()
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True)
    e = info.value
    assert (e.code, e.exit, e.status) == ("server_error", "model_unreachable", 500)
    assert len(server.requests) == 2 + 4


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_context_length_400_is_context_overflow_and_not_retried(server, proto):
    for message in proto.overflow_messages:
        server.push(proto.overflow(message))
    async with proto.make(server.url, max_retries=3, backoff_s=0.01) as llm:
        for message in proto.overflow_messages:
            with pytest.raises(ModelError) as info:
                await llm.complete(CONVO, stream=True)
            e = info.value
            assert (e.code, e.exit, e.retryable, e.status) == (
                "context_overflow", "context_overflow", False, 400)
            assert message[:40] in str(e)
    assert len(server.requests) == len(proto.overflow_messages)


# ------------------------------------------------------------------ (d) refused connections


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
async def test_refused_connection_is_retried_then_model_unreachable(proto):
    url = closed_url()
    retries: list[Retry] = []
    async with proto.make(url, max_retries=3, backoff_s=0.05, backoff_max_s=0.1) as llm:
        t0 = time.monotonic()
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True, on_retry=retries.append)
        took = time.monotonic() - t0
    e = info.value
    assert (e.code, e.exit, e.retries) == ("connection", "model_unreachable", 3)
    assert url in str(e)
    assert [r.retry for r in retries] == [1, 2, 3]
    assert all(0.025 <= r.wait_s <= 0.1 for r in retries)
    assert took < 5


async def test_a_json_answer_to_a_streamed_request_is_not_an_empty_reply(server):
    server.push(Reply(json=openai_completion("not streamed")))
    async with OpenAI.make(server.url, max_retries=0) as llm:
        with pytest.raises(ModelError) as info:
            await llm.complete(CONVO, stream=True)
    assert info.value.code == "bad_response" and "stream" in str(info.value)


# ------------------------------------------------------------------ cancellation


@pytest.mark.parametrize("proto", PROTOCOLS, ids=lambda p: p.name)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
async def test_cancelled_call_hangs_up_on_the_server(server, proto, stream):
    if stream:
        server.push(Reply(sse=(proto.piece("y") for _ in itertools.count()), interval_s=0.02))
    else:
        server.push(Reply(json=openai_completion("late"), delay_s=30))
    async with proto.make(server.url, max_retries=0) as llm:
        task = asyncio.create_task(llm.complete(CONVO, max_tokens=100_000, stream=stream))
        while not server.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        (hung,) = await wait_for_hang_up(server)
    assert hung - cancelled_at < 2.0


# ------------------------------------------------------------------ cached tokens


async def test_openai_cached_tokens_are_read_and_priced_at_the_cached_rate(server):
    body = openai_completion("ok", usage=(2000, 10))
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1536}
    stream_usage = json.loads(openai_chunk(None, usage=(2000, 10)))
    stream_usage["usage"]["prompt_tokens_details"] = {"cached_tokens": 1024}
    server.push(Reply(json=body), Reply(sse=[openai_chunk({"content": "ok"}, finish="stop"),
                                             json.dumps(stream_usage), "[DONE]"]))
    async with OpenAI.make(server.url) as llm:
        plain = await llm.complete(CONVO)
        streamed = await llm.complete(CONVO, stream=True)
    assert plain.usage.cached_tokens == 1536 and streamed.usage.cached_tokens == 1024
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million
    assert plain.cost_usd == pytest.approx((464 * 2.5 + 1536 * 1.25 + 10 * 10) / 1e6)
    assert llm.usage.cached_tokens == 2560


async def test_gemini_cached_content_tokens_are_read_and_priced(server):
    body = gemini_response([{"text": "ok"}], usage=(4000, 10, 0))
    body["usageMetadata"]["cachedContentTokenCount"] = 3000
    server.push(Reply(json=body))
    async with Gemini.make(server.url) as llm:
        out = await llm.complete(CONVO)
    assert out.usage.cached_tokens == 3000
    # gemini-2.0-flash: $0.10 input, $0.025 cached, $0.40 output per million
    assert out.cost_usd == pytest.approx((1000 * 0.10 + 3000 * 0.025 + 10 * 0.40) / 1e6)


# ------------------------------------------------------------------ the parts


def test_retry_after_headers():
    assert retry_after_s({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_s({"retry-after": "7"}) == 7.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_s({"retry-after": date}) <= 30
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_backoff_doubles_with_jitter_up_to_its_cap_and_honours_the_server():
    lim = CallLimits(backoff_s=1.0, backoff_max_s=4.0, retry_after_max_s=60)
    for retry, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        waits = [lim.wait_before(retry) for _ in range(50)]
        assert all(cap / 2 <= w <= cap for w in waits) and len(set(waits)) > 1
    assert lim.wait_before(1, retry_after_s=12) == 12
    assert lim.wait_before(1, retry_after_s=600) == 60
    worst = CallLimits(timeout_s=10, max_retries=2, backoff_s=1, backoff_max_s=30).worst_case_s()
    assert worst == 10 + 10 + 10 + 1 + 2


@pytest.mark.parametrize(("status", "text", "overflow"), [
    (400, "This model's maximum context length is 4096 tokens. However, you requested 5000", True),
    (400, "Error code: context_length_exceeded", True),
    (400, "the request exceeds the available context size, try increasing it", True),
    (400, "The input token count (2000000) exceeds the maximum number of tokens allowed", True),
    (400, "prompt is too long: 210000 tokens > 200000 maximum", True),
    (400, "Invalid 'messages[1].role': expected one of system, user", False),
    (429, "You exceeded your current quota: too many tokens per minute", False),
    (400, "max_tokens is too large: 100000. This model supports at most 16384 tokens", False),
])
def test_context_overflow_is_told_from_other_errors(status, text, overflow):
    assert is_context_overflow(status, text) is overflow


@pytest.mark.parametrize(("code", "exit"), [
    ("timeout", "model_unreachable"), ("connection", "model_unreachable"),
    ("server_error", "model_unreachable"), ("bad_response", "model_unreachable"),
    ("rate_limited", "rate_limited"), ("context_overflow", "context_overflow"),
    ("auth", "auth_error"), ("missing_key", "auth_error"), ("bad_request", "bad_request"),
    ("not_found", "bad_request"), ("config", "bad_request"),
])
def test_every_error_code_has_a_typed_exit(code, exit):
    assert ModelError(code, "x").exit == exit


async def test_auth_errors_end_at_once_with_auth_error(server):
    for proto in PROTOCOLS:
        server.script.clear()
        refusal = (openai_err(401, "Incorrect API key provided", "invalid_request_error")
                   if proto is OpenAI
                   else gemini_status(403, "PERMISSION_DENIED", "API key not valid"))
        server.push(refusal)
        async with proto.make(server.url, max_retries=3) as llm:
            with pytest.raises(ModelError) as info:
                await llm.complete(CONVO, stream=True)
        assert (info.value.code, info.value.exit, info.value.retries) == ("auth", "auth_error", 0)
    assert len(server.requests) == 2


@pytest.mark.parametrize(("model", "cap"), [
    ("gpt-4o", 4096), ("openai:gpt-4.1-mini", 4096), ("openai:llama3.1:8b", 4096),
    ("gemini-2.0-flash", 4096), ("openai:o3", 32768), ("o4-mini", 32768), ("gpt-5-mini", 32768),
    ("openai:gpt-5", 32768), ("gemini:gemini-2.5-pro", 32768), ("openai:deepseek-r1:14b", 32768),
    ("openai:Qwen/QwQ-32B", 32768),
])
def test_reasoning_models_get_room_for_their_hidden_reasoning(model, cap):
    assert default_max_tokens(model) == cap
