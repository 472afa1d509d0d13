"""`openai:<model>`: OpenAI's chat-completions API through the official SDK, or any server that
speaks it (vLLM, Ollama, llama.cpp's server, ...) given a base URL.

Retries are the SDK's own (exponential backoff with jitter on 408/409/429/5xx, timeouts and
connection errors, honouring Retry-After / retry-after-ms up to two minutes); `max_retries`
sets how many. What is left after them becomes a `ModelError` with a stable code.
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
from .prices import PriceTable

logger = log.get(__name__)

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
LOCAL_DUMMY_KEY = "not-needed"  # what local servers without --api-key accept
# Reasoning models reject a non-default temperature and the old max_tokens parameter.
_REASONING = re.compile(r"^(o\d|gpt-5)")


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
        max_retries: int = 6,
        prices: PriceTable | None = None,
        stream_usage: bool = True,
    ):
        super().__init__(model, prices=prices)
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
        self.max_retries = max_retries
        self.client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries
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
                return await self._streamed(params, on_token)
            resp = await self.client.chat.completions.create(**params)
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
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

    async def _streamed(self, params: dict[str, Any], on_token: TokenCallback | None) -> Completion:
        params["stream"] = True
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = Usage()
        model = ""
        finish = ""
        stream = await self.client.chat.completions.create(**params)
        async with stream:
            async for chunk in stream:
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
                    for tc in delta.tool_calls or []:
                        acc = calls.setdefault(tc.index, {"id": "", "name": "", "args": []})
                        acc["id"] = acc["id"] or (tc.id or "")
                        if tc.function is not None:
                            acc["name"] = acc["name"] or (tc.function.name or "")
                            if tc.function.arguments:
                                acc["args"].append(tc.function.arguments)
        tool_calls = [
            ToolCallOut.parse(acc["id"] or f"call_{i}", acc["name"], "".join(acc["args"]))
            for i, acc in sorted(calls.items())
        ]
        return Completion(
            text="".join(text), tool_calls=tool_calls, usage=usage, model=model,
            raw_finish_reason=finish,
        )

    def _error(self, exc: openai.OpenAIError) -> ModelError:
        """Name what went wrong, after the SDK has spent its retries."""
        p, m = self.provider, self.model
        tries = f" (after {self.max_retries} retries)" if self.max_retries else ""
        where = self.base_url or "api.openai.com"
        if isinstance(exc, openai.APITimeoutError):
            return ModelError("timeout", f"request to {where} timed out{tries}", provider=p,
                              model=m, retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            return ModelError("connection", f"cannot reach {where}{tries}: {exc.__cause__ or exc}",
                              provider=p, model=m, retryable=True)
        if isinstance(exc, openai.APIStatusError):
            return http_error(exc.status_code, f"HTTP {exc.status_code} from {where}: {exc.message}",
                              provider=p, model=m, tries=tries, key_hint=KEY_ENV)
        return ModelError("bad_response", f"{type(exc).__name__}: {exc}", provider=p, model=m)

    async def aclose(self) -> None:
        await self.client.close()


def _usage(u: Any) -> Usage:
    if u is None:
        return Usage()
    return Usage(u.prompt_tokens or 0, u.completion_tokens or 0)
