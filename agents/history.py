"""What part of the conversation the model sees.

- `last:N` (MLGym's default agent): the last N environment observations in full, older ones
  replaced by a one-line stub. One more observation is stubbed every turn, in the middle of the
  prompt, so the prompt's prefix changes every turn and a server's prompt cache (llama.cpp's
  slot, vLLM's prefix cache, OpenAI's and Gemini's cached input) can reuse only the part before
  it: most of the recent conversation is processed again on every call.
- `stable:K[:B]` (cache-friendly): at least K observations in full, never fewer than `last:K`
  shows; older ones are stubbed B at a time (B = 2K unless given), so the prompt only grows for
  B turns and its prefix stays byte-identical between the stubbing turns. The model sees K to
  K+B-1 full observations. `mlgym bench agents --model local` measures what it saves.
- `full`: everything.

When the server says the prompt does not fit its context window, `shorten` makes the view
smaller (fewer full observations, then long messages clipped) for the call to be tried again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlgym.agents.llm import Message

_SPEC = re.compile(r"full|last:([1-9][0-9]*)|stable:([1-9][0-9]*)(?::([1-9][0-9]*))?")
CLIP_START = 8000  # characters a message keeps at the first clipping
CLIP_MIN = 500  # below this, shortening gives up


def check_spec(spec: str) -> None:
    """Raise ValueError unless `spec` is a history policy."""
    if not _SPEC.fullmatch(spec):
        raise ValueError(f"history policy {spec!r}: use 'full', 'last:N' or 'stable:K' "
                         "(or 'stable:K:B')")


@dataclass
class Entry:
    message: Message
    observation: bool = False  # an environment output the policy may shorten


def stub(message: Message) -> Message:
    lines = message.content.count("\n") + 1
    return Message(message.role, f"Old environment output: ({lines} lines omitted)",
                   tool_call_id=message.tool_call_id, name=message.name)


def clip(message: Message, limit: int) -> Message:
    """The message with its content cut to about `limit` characters (head and tail kept)."""
    text = message.content
    if len(text) <= limit:
        return message
    half = limit // 2
    cut = len(text) - 2 * half
    short = f"{text[:half]}\n[... {cut} characters omitted ...]\n{text[-half:]}"
    return Message(message.role, short, message.tool_calls, message.tool_call_id, message.name)


class HistoryPolicy:
    def __init__(self, spec: str = "last:5"):
        check_spec(spec)
        m = _SPEC.fullmatch(spec)
        assert m is not None
        self.spec = spec
        self.keep: int | None = None  # None: every observation in full
        self.block = 1
        if m.group(1):
            self.keep = int(m.group(1))
        elif m.group(2):
            self.keep = int(m.group(2))
            self.block = int(m.group(3) or 2 * self.keep)
        self.stable = bool(m.group(2))
        self.clip: int | None = None  # after shortening: the longest message, in characters
        self.shortened = 0  # how many times `shorten` made the view smaller

    def elided(self, observations: int) -> int:
        """How many of the oldest observations are stubbed when there are `observations`."""
        if self.keep is None or observations <= self.keep:
            return 0
        if not self.stable:
            return observations - self.keep
        return (observations - self.keep) // self.block * self.block

    def view(self, entries: list[Entry]) -> list[Message]:
        """The messages to send: the oldest observations as stubs (see the module's doc)."""
        obs_idx = [i for i, e in enumerate(entries) if e.observation]
        old = set(obs_idx[: self.elided(len(obs_idx))])
        out = []
        for i, e in enumerate(entries):
            m = stub(e.message) if i in old else e.message
            if self.clip is not None and m.role != "system":
                m = clip(m, self.clip)
            out.append(m)
        return out

    def shorten(self, entries: list[Entry]) -> bool:
        """Make this and later views smaller after a context overflow, by at least a quarter
        where possible: halve the observations kept in full (down to 1), then clip long
        messages (8,000 characters, halving down to 500). False when nothing got smaller."""
        before = _size(self.view(entries))
        while self._step(sum(1 for e in entries if e.observation)):
            self.shortened += 1
            if _size(self.view(entries)) <= 0.75 * before:
                return True
        return _size(self.view(entries)) < before

    def _step(self, observations: int) -> bool:
        if self.keep is None:
            self.keep = max(observations // 2, 1)
        elif self.keep > 1:
            self.keep = max(self.keep // 2, 1)
            self.block = min(self.block, self.keep) if self.stable else 1
        elif self.clip is None:
            self.clip = CLIP_START
        elif self.clip // 2 >= CLIP_MIN:
            self.clip //= 2
        else:
            return False
        return True


def _size(messages: list[Message]) -> int:
    return sum(len(m.content) for m in messages)
