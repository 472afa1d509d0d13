"""`openai:<model>`: OpenAI's chat-completions API through the official SDK, or any server that
speaks it (vLLM, Ollama, llama.cpp's server, ...) given a base URL.

The SDK's own retries are off: `ModelBackend.complete` retries (agents/llm/limits.py), so every
retry is visible and bounded. The SDK's timeout is the stall bound (connect, first byte, between
streamed chunks). A streamed reply is read through a `StreamGuard` and closed when it runs past
`max_tokens` or the call is cancelled, which closes the connection: a server such as
llama.cpp's stops generating when its client goes away.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlparse

import openai

from mlgym import log

from .base import (
    Completion,
    Message,
    MissingApiKey,
    ModelBackend,
    ModelError,
    TokenCallback,
    ToolCallOut,
    ToolSpec,
    Usage,
    emit_token,
    http_error,
)
from .limits import CallLimits, StreamGuard, retry_after_s, transport_errors
from .prices import PriceTable

logger = log.get(__name__)

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
LOCAL_DUMMY_KEY = "not-needed"  # what local servers without --api-key accept
# Reasoning models reject a non-default temperature and the old max_tokens parameter.
_REASONING = re.compile(r"^(o\d|gpt-5)")
_TIMEOUTS, _CONNECTION = transport_errors()


def is_openai_host(base_url: str | None) -> bool:
    return not base_url or (urlparse(base_url).hostname or "").endswith("openai.com")


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {
                        "id": tc.id,
                        "type": "function",
                        "function": {
                            "name": tc.name,
                            "arguments": tc.raw_arguments or json.dumps(tc.arguments),
                        },
                    }
                    for tc in m.tool_calls
                ]
            out.append(msg)
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class OpenAIBackend(ModelBackend):
    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        stall_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        prices: PriceTable | None = None,
        stream_usage: bool = True,
    ):
        limits = CallLimits(timeout_s=timeout_s, stall_s=stall_s, max_retries=max_retries,
                            backoff_s=backoff_s, backoff_max_s=backoff_max_s)
        super().__init__(model, prices=prices, limits=limits)
        if not model:
            raise ModelError("config", "no model name (openai:<model>)", provider=self.provider)
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            if is_openai_host(self.base_url):
                raise MissingApiKey(
                    [KEY_ENV], provider=self.provider, model=model,
                    hint=" (or give a base URL to an OpenAI-compatible server: "
                    "openai:<model>@http://host:port/v1, --base-url or $OPENAI_BASE_URL; "
                    "local servers need no key)",
                )
            key = LOCAL_DUMMY_KEY
        self.official = is_openai_host(self.base_url)
        self.stream_usage = stream_usage
        stall = limits.stall
        self.client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0,
            timeout=openai.Timeout(stall, connect=min(stall, 30.0)),
        )

    def _params(self, messages: list[Message], tools: list[ToolSpec], temperature: float,
                max_tokens: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(messages)}
        if tools:
            params["tools"] = [t.to_openai() for t in tools]
            params["tool_choice"] = "auto"
        reasoning = self.official and _REASONING.match(self.model) is not None
        if not reasoning:
            params["temperature"] = temperature
        if max_tokens:
            # the official API renamed it; compatible servers mostly know only the old name
            params["max_completion_tokens" if self.official else "max_tokens"] = max_tokens
        return params

    async def _complete(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        *,
        temperature: float,
        max_tokens: int | None,
        stream: bool,
        on_token: TokenCallback | None,
    ) -> Completion:
        params = self._params(messages, tools, temperature, max_tokens)
        try:
            if stream:
                return await self._streamed(params, on_token, max_tokens, messages)
            # one JSON reply comes when the whole generation is done: only the wall clock bounds it
            whole = openai.Timeout(self.limits.timeout_s, connect=min(self.limits.stall, 30.0))
            resp = await self.client.chat.completions.create(**params, timeout=whole)
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        except _TIMEOUTS as exc:  # raised as they are while a stream is read
            raise self._stalled() from exc
        except _CONNECTION as exc:
            raise ModelError("connection", f"the connection to {self._where} broke: {exc!r}",
                             provider=self.provider, model=self.model, retryable=True) from exc
        if not resp.choices:
            raise ModelError("bad_response", "the reply has no choices", provider=self.provider,
                             model=self.model)
        choice = resp.choices[0]
        calls = []
        for i, tc in enumerate(choice.message.tool_calls or []):
            fn = getattr(tc, "function", None)
            if fn is None:  # a non-function ("custom") tool call: not ours
                continue
            calls.append(ToolCallOut.parse(tc.id or f"call_{i}", fn.name, fn.arguments))
        text = choice.message.content or ""
        await emit_token(on_token, text)
        return Completion(
            text=text,
            tool_calls=calls,
            usage=_usage(resp.usage),
            model=resp.model or "",
            raw_finish_reason=choice.finish_reason or "",
        )

    async def _streamed(self, params: dict[str, Any], on_token: TokenCallback | None,
                        max_tokens: int | None, messages: list[Message]) -> Completion:
        params["stream"] = True
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: Usage | None = None
        model = ""
        finish = ""
        guard = StreamGuard(max_tokens)
        cut = False
        chunks = 0
        stream = await self.client.chat.completions.create(**params)
        async with stream:  # leaving it (done, cut, cancelled) closes the connection
            async for chunk in stream:
                chunks += 1
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    finish = choice.finish_reason or finish
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        text.append(delta.content)
                        await emit_token(on_token, delta.content)
                        cut = guard.over(delta.content)
                    for tc in delta.tool_calls or []:
                        acc = calls.setdefault(tc.index, {"id": "", "name": "", "args": []})
                        acc["id"] = acc["id"] or (tc.id or "")
                        if tc.function is not None:
                            acc["name"] = acc["name"] or (tc.function.name or "")
                            if tc.function.arguments:
                                acc["args"].append(tc.function.arguments)
                                cut = cut or guard.over(tc.function.arguments)
                if cut:
                    finish = "length"  # as if the server had stopped at max_tokens
                    logger.warning("streamed reply cut at max_tokens; the server ignored it",
                                   spec=self.spec, max_tokens=max_tokens, pieces=guard.pieces)
                    break
        if not chunks:
            raise ModelError("bad_response", f"{self._where} sent no events for a streamed request "
                             "(a server without streaming? set stream = false for this agent)",
                             provider=self.provider, model=self.model, retryable=True)
        if usage is None:  # cut, or a server that does not report usage in streams: estimate
            usage = Usage(sum(len(m.content) for m in messages) // 4, guard.pieces)
        tool_calls = [
            ToolCallOut.parse(acc["id"] or f"call_{i}", acc["name"], "".join(acc["args"]))
            for i, acc in sorted(calls.items())
        ]
        return Completion(
            text="".join(text), tool_calls=tool_calls, usage=usage, model=model,
            raw_finish_reason=finish,
        )

    @property
    def _where(self) -> str:
        return self.base_url or "api.openai.com"

    def _stalled(self) -> ModelError:
        return ModelError("timeout", f"{self._where} sent nothing for {self.limits.stall:g} s",
                          provider=self.provider, model=self.model, retryable=True)

    def _error(self, exc: openai.OpenAIError) -> ModelError:
        """Name what went wrong in one try."""
        p, m, where = self.provider, self.model, self._where
        if isinstance(exc, openai.APITimeoutError):
            return self._stalled()
        if isinstance(exc, openai.APIConnectionError):
            return ModelError("connection", f"cannot reach {where}: {exc.__cause__ or exc}",
                              provider=p, model=m, retryable=True)
        if isinstance(exc, openai.APIStatusError):
            return http_error(exc.status_code, f"HTTP {exc.status_code} from {where}: {exc.message}",
                              provider=p, model=m, key_hint=KEY_ENV,
                              retry_after_s=retry_after_s(exc.response.headers))
        # a broken reply (an error event mid-stream, unreadable data): worth another try
        return ModelError("bad_response", f"{type(exc).__name__}: {exc}", provider=p, model=m,
                          retryable=True)

    async def aclose(self) -> None:
        await self.client.close()


def _usage(u: Any) -> Usage:
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(u.prompt_tokens or 0, u.completion_tokens or 0, cached or 0)
