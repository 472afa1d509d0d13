"""Bounds on one model call, the same for every backend: how long a try may take, how long the
server may stay silent, how many tries transient errors get and how long to wait between them,
and when a streamed reply is a runaway. `ModelBackend.complete` applies them (agents/llm/base.py).

Why our own loop rather than the SDKs' retries: every retry must be visible (the live table shows
`retrying 2/5: timeout`) and bounded in wall-clock time, a streamed reply must be cut when it runs
away, and both SDKs must behave the same. The SDKs' own retries are switched off.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from dataclasses import dataclass
from typing import Mapping

DEFAULT_MAX_TOKENS = 4096  # the output cap per call, unless a team file or --max-tokens sets it
REASONING_MAX_TOKENS = 32768  # the same for models whose cap counts their hidden reasoning too
# OpenAI's o-series and gpt-5, Gemini 2.5 and later (thinking), DeepSeek's R1, Qwen's QwQ
_REASONING_MODEL = re.compile(
    r"(^|[/:])(o\d|gpt-5)|gemini-(2\.5|[3-9])|deepseek-r1|reasoner|qwq|thinking", re.IGNORECASE)


def default_max_tokens(model: str) -> int:
    """The output cap for a model when none was set: reasoning models spend much of it on
    reasoning tokens they do not show (OpenAI's `max_completion_tokens` and Gemini's
    `maxOutputTokens` include them), so they get more."""
    return REASONING_MAX_TOKENS if _REASONING_MODEL.search(model) else DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class CallLimits:
    """`timeout_s`: wall clock for one try, the whole streamed reply included. `stall_s`: the
    longest the server may send nothing (connect, first byte, between chunks); the SDK's own
    timeout. `max_retries`: further tries after transient errors (timeouts, connection errors,
    429, 5xx, a broken reply), waiting `backoff_s` doubling up to `backoff_max_s` (with jitter),
    or what the server's Retry-After asks, up to `retry_after_max_s`."""

    timeout_s: float = 300.0
    stall_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.stall_s <= 0:
            raise ValueError("timeout_s and stall_s must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")

    @property
    def stall(self) -> float:
        """The SDK timeout: the stall bound, never above the try's own."""
        return min(self.stall_s, self.timeout_s)

    def wait_before(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry)."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.retry_after_max_s)
        cap = min(self.backoff_max_s, self.backoff_s * 2 ** (retry - 1))
        return cap * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto

    def worst_case_s(self) -> float:
        """The longest `complete` can take without a Retry-After: every try times out and
        every wait is the longest backoff."""
        waits = sum(min(self.backoff_max_s, self.backoff_s * 2 ** (r - 1))
                    for r in range(1, self.max_retries + 1))
        return (self.max_retries + 1) * self.timeout_s + waits


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """A server's suggested wait: `retry-after-ms` (OpenAI), `retry-after` in seconds or as an
    HTTP date; None when absent or unreadable."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(float(ra), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# What servers say when a prompt does not fit the context window: OpenAI
# (context_length_exceeded: "This model's maximum context length is ..."), vLLM (the same
# words), llama.cpp ("exceeds the available context size", exceed_context_size_error), Gemini
# ("The input token count (N) exceeds the maximum number of tokens allowed (M)"), others
# ("prompt is too long", "too many tokens", "context window").
_OVERFLOW = re.compile(
    r"context_length_exceeded|exceed_context_size|maximum context length"
    r"|context (?:length|window|size).{0,40}(?:exceed|too|limit|larger)"
    r"|exceeds? the (?:available )?context|input token count.{0,40}exceeds"
    r"|exceeds the maximum number of tokens|prompt is too long|too many (?:input |prompt )?tokens"
    r"|reduce the length of the (?:messages|prompt)",
    re.IGNORECASE | re.DOTALL,
)


def is_context_overflow(status: int, text: str) -> bool:
    """Whether an HTTP error says the prompt is longer than the model's context window."""
    return status in (400, 413, 422, 500) and bool(_OVERFLOW.search(text or ""))


class StreamGuard:
    """Cuts a streamed reply that runs past its `max_tokens` (a server that ignores the
    parameter, or a loop that never ends). Counts pieces (each streamed piece is at least one
    token) and characters (no sane reply averages 16 characters a token), so a legitimate reply
    is never cut; the call's wall clock bounds whatever slips through."""

    MARGIN = 16

    def __init__(self, max_tokens: int | None):
        self.max_tokens = max_tokens or 0
        self.pieces = 0
        self.chars = 0

    def over(self, text: str) -> bool:
        if not text:
            return False
        self.pieces += 1
        self.chars += len(text)
        if not self.max_tokens:
            return False
        return self.pieces > self.max_tokens + self.MARGIN or self.chars > 16 * self.max_tokens


def transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, connection errors) of whichever HTTP stacks the SDKs use (httpx, its httpx2
    fork, aiohttp): raised as they are while a stream is read, not wrapped by the SDK."""
    timeouts: list[type[BaseException]] = [TimeoutError]
    conns: list[type[BaseException]] = [ConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        conns.append(mod.TransportError)
    try:
        import aiohttp

        timeouts.append(aiohttp.ServerTimeoutError)
        conns.append(aiohttp.ClientError)
    except ImportError:
        pass
    return tuple(timeouts), tuple(conns)
