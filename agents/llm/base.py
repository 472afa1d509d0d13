"""What every model backend speaks: messages in, one `Completion` out, plus the spec factory.

The agent runtime only sees these types, so swapping GPT-4o for Gemini, a local vLLM server or a
scripted test model is a change of one string (`create("openai:gpt-4o")`). The types are
msgspec Structs so transcripts and replay files serialise without extra code.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import inspect
import json
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

import msgspec

from mlgym import log

from . import prices as _prices
from .limits import CallLimits, is_context_overflow

logger = log.get(__name__)

ROLES = ("system", "user", "assistant", "tool")

# A streaming callback: called with each text delta; may be a plain or an async function.
TokenCallback = Callable[[str], Any | Awaitable[Any]]


class ModelError(Exception):
    """A model call that failed for good (after the retries), with a stable `code`:

    missing_key, config, bad_request, context_overflow, auth, not_found, rate_limited,
    server_error, timeout, connection, bad_response. `retryable` says whether trying again later
    may help; `retry_after_s` is the wait the server asked for; `exit` is the typed exit an
    agent ends with when the call cannot be made.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ):
        where = f"{provider}:{model}: " if provider else ""
        super().__init__(f"{where}{message}")
        self.code = code
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.retries = 0  # how many retries were spent before this error was final

    @property
    def exit(self) -> str:
        return EXITS.get(self.code, "bad_request")


# ModelError.code -> the agent's typed exit (docs/models.md, "Exits").
EXITS = {
    "timeout": "model_unreachable", "connection": "model_unreachable",
    "server_error": "model_unreachable", "bad_response": "model_unreachable",
    "rate_limited": "rate_limited", "context_overflow": "context_overflow",
    "auth": "auth_error", "missing_key": "auth_error",
    "bad_request": "bad_request", "not_found": "bad_request", "config": "bad_request",
}


def http_error(status: int, detail: str, *, provider: str, model: str, key_hint: str,
               retry_after_s: float | None = None) -> ModelError:
    """The ModelError for an HTTP error status, the same for every provider: a prompt too long
    for the context window (by the server's words) context_overflow, 429 rate limited, 401/403
    auth (naming `key_hint`), 404 not found, 408 timeout, 5xx server error, anything else a bad
    request."""
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status}
    if is_context_overflow(status, detail):
        return ModelError("context_overflow", detail, **kw)
    if status == 429:
        return ModelError("rate_limited", f"rate limited: {detail}", retryable=True,
                          retry_after_s=retry_after_s, **kw)
    if status in (401, 403):
        return ModelError("auth", f"{detail} (check {key_hint})", **kw)
    if status == 404:
        return ModelError("not_found", f"{detail} (is the model name right?)", **kw)
    if status in (408, 409):
        return ModelError("timeout", f"timed out: {detail}", retryable=True,
                          retry_after_s=retry_after_s, **kw)
    if status >= 500:
        return ModelError("server_error", f"server error: {detail}", retryable=True,
                          retry_after_s=retry_after_s, **kw)
    return ModelError("bad_request", detail, **kw)


class MissingApiKey(ModelError):
    """No API key in the environment; the message names the variable to set."""

    def __init__(self, variables: Iterable[str], *, provider: str, model: str, hint: str = ""):
        names = list(variables)
        text = " or ".join(names)
        super().__init__(
            "missing_key",
            f"no API key: set the environment variable {text}{hint}",
            provider=provider,
            model=model,
        )
        self.variables = names


class Usage(msgspec.Struct, omit_defaults=True, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0  # includes reasoning/thinking tokens, which are billed as output
    cached_tokens: int = 0  # of prompt_tokens, those the provider read from its prompt cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


class ToolCallOut(msgspec.Struct, omit_defaults=True):
    """One function call the model asked for.

    `arguments` is the parsed JSON object. When the model produced arguments that are not a
    JSON object, `arguments` is empty and `error` says why, so the runtime can answer the call
    with that error instead of crashing. `meta` carries provider data that must be sent back
    with the call on the next turn (Gemini's `thought_signature`).
    """

    id: str
    name: str
    arguments: dict[str, Any] = {}
    raw_arguments: str = ""
    error: str = ""
    meta: dict[str, Any] = {}

    @classmethod
    def parse(cls, id: str, name: str, raw: str, meta: dict[str, Any] | None = None) -> ToolCallOut:  # noqa: A002
        raw = raw or ""
        try:
            value = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return cls(id, name, {}, raw, f"arguments are not valid JSON: {exc}", meta or {})
        if not isinstance(value, dict):
            return cls(id, name, {}, raw, "arguments must be a JSON object", meta or {})
        return cls(id, name, value, raw, "", meta or {})


class Message(msgspec.Struct, omit_defaults=True):
    role: str  # system | user | assistant | tool
    content: str = ""
    tool_calls: list[ToolCallOut] = []
    tool_call_id: str = ""  # role "tool": the call this answers
    name: str = ""  # role "tool": the tool's name (Gemini needs it; found from the call if empty)

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", text)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: list[ToolCallOut] | None = None) -> Message:
        return cls("assistant", text, list(tool_calls or []))

    @classmethod
    def tool(cls, tool_call_id: str, content: str, name: str = "") -> Message:
        return cls("tool", content, tool_call_id=tool_call_id, name=name)


class ToolSpec(msgspec.Struct, omit_defaults=True):
    """A function the model may call: name, description and a JSON-schema for its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    @classmethod
    def from_any(cls, obj: ToolSpec | Mapping[str, Any]) -> ToolSpec:
        """Accept a ToolSpec, OpenAI's {"type": "function", "function": {...}} or the bare
        {"name", "description", "parameters"} form (what the ACI produces)."""
        if isinstance(obj, ToolSpec):
            return obj
        if not isinstance(obj, Mapping):
            raise TypeError(f"tool spec must be a ToolSpec or a mapping, not {type(obj).__name__}")
        fn = obj.get("function", obj) if obj.get("type", "function") == "function" else None
        if not isinstance(fn, Mapping) or not fn.get("name"):
            raise ValueError(f"tool spec has no function name: {json.dumps(obj)[:200]}")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        return cls(str(fn["name"]), str(fn.get("description", "")), dict(params))

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Completion(msgspec.Struct, omit_defaults=True):
    text: str = ""
    tool_calls: list[ToolCallOut] = []
    usage: Usage = Usage()
    cost_usd: float = 0.0
    model: str = ""  # the model name the server reported (may be a dated snapshot)
    latency_s: float = 0.0
    raw_finish_reason: str = ""  # as the provider said it: "stop", "tool_calls", "STOP", ...

    def to_message(self) -> Message:
        """The assistant turn to append to the conversation."""
        return Message.assistant(self.text, self.tool_calls)


async def emit_token(on_token: TokenCallback | None, text: str) -> None:
    if on_token is None or not text:
        return
    result = on_token(text)
    if inspect.isawaitable(result):
        await result


def check_messages(messages: list[Message], provider: str, model: str) -> None:
    """Refuse malformed conversations before they cost a request."""
    if not messages:
        raise ModelError("bad_request", "no messages to send", provider=provider, model=model)
    for i, m in enumerate(messages):
        if not isinstance(m, Message):
            raise ModelError(
                "bad_request", f"message {i} is a {type(m).__name__}, not a Message",
                provider=provider, model=model,
            )
        if m.role not in ROLES:
            raise ModelError(
                "bad_request", f"message {i} has role {m.role!r}; expected one of {ROLES}",
                provider=provider, model=model,
            )
        if m.role == "tool" and not m.tool_call_id:
            raise ModelError(
                "bad_request", f"message {i} (role tool) has no tool_call_id",
                provider=provider, model=model,
            )


@dataclass(frozen=True)
class Retry:
    """What `on_retry` is told before each wait: retry `retry` of `max_retries` comes after
    `wait_s` seconds, because of `error`."""

    retry: int
    max_retries: int
    error: ModelError
    wait_s: float


RetryCallback = Callable[[Retry], Any | Awaitable[Any]]


class ModelBackend(abc.ABC):
    """One model behind one client. Subclasses implement `_complete` (one try); `complete` adds
    what every backend needs the same way: input checks, the call's limits (a wall clock per
    try, bounded retries with backoff for transient errors), latency, cost from the price table,
    running totals.
    """

    provider: str = ""

    def __init__(self, model: str, *, prices: _prices.PriceTable | None = None,
                 limits: CallLimits | None = None):
        self.model = model
        self.prices = prices
        self.limits = limits or CallLimits()
        self.calls = 0
        self.retries = 0  # retries spent over this backend's life
        self.usage = Usage()
        self.cost_usd = 0.0

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    async def complete(
        self,
        messages: list[Message],
        tools: list[ToolSpec | Mapping[str, Any]] | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        stream: bool = False,
        on_token: TokenCallback | None = None,
        on_retry: RetryCallback | None = None,
    ) -> Completion:
        """Send the conversation; return the reply with usage and cost. With tools, the model
        may answer with `tool_calls` (function calling); without, it answers in text (MLGym's
        classic command-in-text mode). `on_token` gets text deltas when `stream` is true;
        `on_retry` is told of each retry before its wait. Raises a ModelError when the call
        cannot be made within `self.limits`."""
        check_messages(messages, self.provider, self.model)
        try:
            specs = [ToolSpec.from_any(t) for t in tools] if tools else []
        except (TypeError, ValueError) as exc:
            raise ModelError("bad_request", str(exc), provider=self.provider, model=self.model) from None
        lim = self.limits
        retry = 0
        while True:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(lim.timeout_s):
                    out = await self._complete(
                        messages, specs, temperature=temperature, max_tokens=max_tokens,
                        stream=stream, on_token=on_token,
                    )
                break
            except TimeoutError:
                err = ModelError("timeout", f"no complete reply within {lim.timeout_s:g} s",
                                 provider=self.provider, model=self.model, retryable=True)
            except ModelError as exc:
                err = exc
            if not err.retryable or retry >= lim.max_retries:
                if retry:
                    err.retries = retry
                    err.args = (f"{err.args[0]} (after {retry} retries)",)
                raise err
            retry += 1
            self.retries += 1
            wait = lim.wait_before(retry, err.retry_after_s)
            logger.warning("model call failed; retrying", spec=self.spec, code=err.code,
                           retry=retry, max_retries=lim.max_retries, wait_s=round(wait, 2),
                           error=err.message[:300])
            if on_retry is not None:
                res = on_retry(Retry(retry, lim.max_retries, err, wait))
                if inspect.isawaitable(res):
                    await res
            await asyncio.sleep(wait)
        out.latency_s = time.perf_counter() - started
        if not out.cost_usd:
            table = self.prices or _prices.default_table()
            out.cost_usd = table.cost(
                self.model, out.usage.prompt_tokens, out.usage.completion_tokens, out.model,
                cached_tokens=out.usage.cached_tokens,
            )
        if not out.model:
            out.model = self.model
        self.calls += 1
        self.usage = self.usage + out.usage
        self.cost_usd += out.cost_usd
        logger.debug(
            "model call", spec=self.spec, prompt_tokens=out.usage.prompt_tokens,
            cached_tokens=out.usage.cached_tokens, completion_tokens=out.usage.completion_tokens,
            cost_usd=round(out.cost_usd, 6), latency_s=round(out.latency_s, 3),
            tool_calls=len(out.tool_calls), finish=out.raw_finish_reason, retries=retry,
        )
        return out

    @abc.abstractmethod
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
        """Do one try, streaming when asked (closing the stream when cancelled, so the server
        stops generating). Raise ModelError (retryable for transient failures); leave
        latency_s and cost_usd to `complete` (set cost_usd only when the provider reports the
        real cost)."""

    async def aclose(self) -> None:
        """Release the HTTP client."""

    async def __aenter__(self) -> ModelBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --------------------------------------------------------------------------- spec factory

BackendFactory = Callable[..., ModelBackend]

# prefix -> factory, or "module:attribute" of one (imported on first use, so `import` stays
# cheap and a missing SDK only breaks the provider that needs it).
_REGISTRY: dict[str, BackendFactory | str] = {
    "openai": "mlgym.agents.llm.openai_backend:OpenAIBackend",
    "gemini": "mlgym.agents.llm.gemini_backend:GeminiBackend",
}


def register_backend(prefix: str, factory: BackendFactory | str, *, replace: bool = False) -> None:
    """Make `create("<prefix>:<rest>")` call `factory(rest, **kw)` (e.g. "scripted", "replay").
    `factory` may be a callable or a lazy "module:attribute" string."""
    if not prefix or ":" in prefix or "@" in prefix:
        raise ValueError(f"bad backend prefix {prefix!r}")
    if prefix in _REGISTRY and not replace and _REGISTRY[prefix] != factory:
        raise ValueError(f"backend prefix {prefix!r} is already registered")
    _REGISTRY[prefix] = factory


def backend_prefixes() -> list[str]:
    return sorted(_REGISTRY)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """ "prefix:model[@base_url]" -> (prefix, model, base_url or None).

    Only the first ":" separates the prefix, so Ollama names such as "llama3.1:8b" survive;
    the base URL follows the last "@" that starts an http(s) URL.
    """
    prefix, sep, rest = spec.partition(":")
    if not sep or not prefix or not rest:
        raise ModelError(
            "config", f"bad model spec {spec!r}: expected <backend>:<model>, one of "
            f"{', '.join(backend_prefixes())} (e.g. openai:gpt-4o, gemini:gemini-2.0-flash, "
            "openai:llama3@http://127.0.0.1:8000/v1)",
        )
    base_url = None
    for marker in ("@http://", "@https://"):
        at = rest.rfind(marker)
        if at > 0:
            rest, base_url = rest[:at], rest[at + 1 :]
            break
    return prefix.strip(), rest, base_url


def create(spec: str, **kw: Any) -> ModelBackend:
    """A backend from a spec string. Keyword arguments go to the backend (base_url, api_key,
    timeout_s, stall_s, max_retries, prices, ...); a base URL inside the spec wins over
    `base_url=`."""
    prefix, model, base_url = parse_spec(spec)
    factory = _REGISTRY.get(prefix)
    if factory is None:
        raise ModelError(
            "config", f"unknown model backend {prefix!r} in {spec!r}; known: {', '.join(backend_prefixes())}"
        )
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    if base_url is not None:
        kw["base_url"] = base_url
    return factory(model, **kw)
