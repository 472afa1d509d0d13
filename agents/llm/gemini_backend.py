"""`gemini:<model>`: Google's Gemini API through the official `google-genai` SDK.

The SDK retries only when asked, and is not: `ModelBackend.complete` retries (agents/llm/limits.py),
honouring the server's `RetryInfo` delay on 429. The SDK's timeout is the stall bound. A streamed
reply is read through a `StreamGuard` and its stream closed when it runs past `max_tokens` or
the call is cancelled. Function declarations carry the ACI's JSON schemas as they are
(`parameters_json_schema`), and Gemini's thought signatures ride along in `ToolCallOut.meta`
so multi-turn function calling works with models that require them.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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

KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"  # the SDK's own variable
LOCAL_DUMMY_KEY = "not-needed"
# Retries are ours (base.py: typed, logged, bounded). Without explicit retry options the SDK
# (google-genai) sleeps 1-10 s and retries a refused connection on its own, unseen.
NO_SDK_RETRIES = types.HttpRetryOptions(attempts=1)
_SYNTH_ID = "gemini-call-"  # ids we made up: never sent back to the API


_TIMEOUTS, _CONNECTION = transport_errors()


def _api_key(explicit: str | None) -> str | None:
    # Same precedence as the SDK: GOOGLE_API_KEY wins when both are set.
    return explicit or os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")


def to_gemini(messages: list[Message]) -> tuple[str, list[types.Content]]:
    """(system instruction, contents). Tool results become function_response parts of a user
    turn; consecutive results merge into one turn, as the API expects one turn per call batch."""
    system: list[str] = []
    contents: list[types.Content] = []
    names: dict[str, str] = {}  # tool_call_id -> tool name, for results that lack a name
    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.role == "user":
            contents.append(types.Content(role="user", parts=[types.Part(text=m.content)]))
        elif m.role == "assistant":
            parts: list[types.Part] = []
            if m.content:
                parts.append(types.Part(text=m.content))
            for tc in m.tool_calls:
                names[tc.id] = tc.name
                sig = tc.meta.get("thought_signature")
                parts.append(
                    types.Part(
                        function_call=types.FunctionCall(
                            id=None if tc.id.startswith(_SYNTH_ID) else tc.id,
                            name=tc.name,
                            args=tc.arguments,
                        ),
                        thought_signature=base64.b64decode(sig) if sig else None,
                    )
                )
            if parts:
                contents.append(types.Content(role="model", parts=parts))
        elif m.role == "tool":
            part = types.Part(
                function_response=types.FunctionResponse(
                    id=None if m.tool_call_id.startswith(_SYNTH_ID) else m.tool_call_id,
                    name=m.name or names.get(m.tool_call_id, ""),
                    response={"output": m.content},
                )
            )
            last = contents[-1] if contents else None
            if last is not None and last.role == "user" and last.parts and all(
                p.function_response is not None for p in last.parts
            ):
                last.parts.append(part)
            else:
                contents.append(types.Content(role="user", parts=[part]))
    return "\n\n".join(s for s in system if s), contents


class _Reply:
    """Accumulates one reply from one response or many stream chunks."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: list[ToolCallOut] = []
        self.usage = Usage()
        self.model = ""
        self.finish = ""

    async def add(self, resp: types.GenerateContentResponse, on_token: TokenCallback | None,
                  guard: StreamGuard | None = None) -> bool:
        """Take one response (or streamed chunk) in; True when the guard says to cut."""
        cut = False
        self.model = resp.model_version or self.model
        um = resp.usage_metadata
        if um is not None:  # cumulative in streams: the last one counts
            self.usage = Usage(
                (um.prompt_token_count or 0) + (um.tool_use_prompt_token_count or 0),
                (um.candidates_token_count or 0) + (um.thoughts_token_count or 0),
                um.cached_content_token_count or 0,
            )
        if not resp.candidates:
            fb = resp.prompt_feedback
            if fb is not None and fb.block_reason is not None:
                self.finish = f"BLOCKED:{_enum(fb.block_reason)}"
            return cut
        cand = resp.candidates[0]
        if cand.finish_reason is not None:
            self.finish = _enum(cand.finish_reason)
        for part in (cand.content.parts if cand.content and cand.content.parts else []):
            if part.thought:  # thought summaries are not the answer
                continue
            if part.function_call is not None:
                fc = part.function_call
                args = dict(fc.args or {})
                meta = {}
                if part.thought_signature:
                    meta["thought_signature"] = base64.b64encode(part.thought_signature).decode()
                self.calls.append(
                    ToolCallOut(
                        id=fc.id or f"{_SYNTH_ID}{len(self.calls)}",
                        name=fc.name or "",
                        arguments=args,
                        raw_arguments=json.dumps(args),
                        meta=meta,
                    )
                )
                cut = cut or (guard is not None and guard.over(self.calls[-1].raw_arguments))
            elif part.text:
                self.text.append(part.text)
                await emit_token(on_token, part.text)
                cut = cut or (guard is not None and guard.over(part.text))
        return cut


def _retry_delay(exc: genai_errors.APIError) -> float | None:
    """The wait a 429 asks for: google.rpc.RetryInfo's `retryDelay` ("30s") in the error's
    details, else a Retry-After header."""
    details = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    for d in details.get("details", []) if isinstance(details, dict) else []:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(d.get("retryDelay", ""))
            try:
                return max(float(delay.removesuffix("s")), 0.0)
            except ValueError:
                return None
    headers = getattr(exc.response, "headers", None)
    return retry_after_s({k.lower(): v for k, v in headers.items()} if headers else None)


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


class GeminiBackend(ModelBackend):
    provider = "gemini"

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
        api_version: str | None = None,
        prices: PriceTable | None = None,
    ):
        limits = CallLimits(timeout_s=timeout_s, stall_s=stall_s, max_retries=max_retries,
                            backoff_s=backoff_s, backoff_max_s=backoff_max_s)
        super().__init__(model.removeprefix("models/"), prices=prices, limits=limits)
        if not self.model:
            raise ModelError("config", "no model name (gemini:<model>)", provider=self.provider)
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        key = _api_key(api_key)
        if not key:
            if not self.base_url or "googleapis.com" in self.base_url:
                raise MissingApiKey(
                    KEY_ENVS, provider=self.provider, model=self.model,
                    hint=" (or give a base URL to a local endpoint: gemini:<model>@http://host:port/)",
                )
            key = LOCAL_DUMMY_KEY
        self.client = genai.Client(
            vertexai=False,
            api_key=key,
            http_options=types.HttpOptions(
                base_url=self.base_url,
                api_version=api_version,
                timeout=int(limits.stall * 1000),  # the SDK wants milliseconds
                retry_options=NO_SDK_RETRIES,
            ),
        )

    def _config(self, system: str, tools: list[ToolSpec], temperature: float,
                max_tokens: int | None) -> types.GenerateContentConfig:
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=temperature,
            max_output_tokens=max_tokens or None,
            # We run the tools ourselves, through the environment server.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name, description=t.description,
                            parameters_json_schema=t.parameters,
                        )
                        for t in tools
                    ]
                )
            ]
            config.tool_config = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO)
            )
        return config

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
        system, contents = to_gemini(messages)
        if not contents:
            raise ModelError("bad_request", "Gemini needs at least one user message besides the "
                             "system prompt", provider=self.provider, model=self.model)
        config = self._config(system, tools, temperature, max_tokens)
        reply = _Reply()
        models = self.client.aio.models
        try:
            if stream:
                chunks = await models.generate_content_stream(
                    model=self.model, contents=contents, config=config
                )
                guard = StreamGuard(max_tokens)
                try:
                    async for chunk in chunks:
                        if await reply.add(chunk, on_token, guard):
                            reply.finish = "MAX_TOKENS"  # as if the server had stopped there
                            logger.warning("streamed reply cut at max_tokens; the server ignored "
                                           "it", spec=self.spec, max_tokens=max_tokens)
                            break
                finally:
                    await chunks.aclose()  # closes the stream's connection (done, cut, cancelled)
            else:
                # one reply comes when the whole generation is done: only the wall clock bounds it
                config.http_options = types.HttpOptions(timeout=int(self.limits.timeout_s * 1000),
                                                        retry_options=NO_SDK_RETRIES)
                await reply.add(
                    await models.generate_content(model=self.model, contents=contents, config=config),
                    on_token,
                )
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised if unknown
            err = self._error(exc)
            if err is None:
                raise
            raise err from exc
        return Completion(
            text="".join(reply.text), tool_calls=reply.calls, usage=reply.usage,
            model=reply.model, raw_finish_reason=reply.finish,
        )

    def _error(self, exc: Exception) -> ModelError | None:
        """Name what went wrong in one try; None for an exception that is not the call's."""
        p, m = self.provider, self.model
        where = self.base_url or "generativelanguage.googleapis.com"
        if isinstance(exc, genai_errors.APIError):
            code = exc.code or 0
            detail = f"HTTP {code} {exc.status or ''} from {where}: {exc.message or exc.details}"
            return http_error(code, detail, provider=p, model=m, key_hint=" / ".join(KEY_ENVS),
                              retry_after_s=_retry_delay(exc))
        if isinstance(exc, _TIMEOUTS):
            return ModelError("timeout", f"{where} sent nothing for {self.limits.stall:g} s",
                              provider=p, model=m, retryable=True)
        if isinstance(exc, _CONNECTION):
            return ModelError("connection", f"cannot reach {where}: {exc!r}", provider=p,
                              model=m, retryable=True)
        if isinstance(exc, (genai_errors.UnknownApiResponseError, ValueError)):
            return ModelError("bad_response", f"{type(exc).__name__}: {exc}", provider=p, model=m,
                              retryable=True)
        return None

    async def aclose(self) -> None:
        await self.client.aio.aclose()
