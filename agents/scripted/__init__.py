"""`scripted:<task|auto|bench>`: an offline, deterministic model for tests, demos and benchmarks.

It is a `ModelBackend` like any other: it receives the conversation (after the history
policy) and answers with text in the classic format, or with a tool call when the runtime
offers tools, so the whole pipeline (parsing, ACI, environment, bus) runs as with an LLM.
Token counts are estimated (4 characters a token) so token budgets can be exercised; a
price can be set for dollar budgets: `scripted:auto?usd_per_mtok=2.5`.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import parse_qs

from mlgym.agents.llm import (
    Completion, Message, ModelBackend, ModelError, Price, PriceTable, ToolCallOut, ToolSpec, Usage,
)
from mlgym.agents.parsing import format_reply
from mlgym.agents.scripted import policy as policy_mod
from mlgym.agents.scripted.transcript import read
from mlgym.agents.tools import ENV_TOOLS, LOCAL_TOOLS
from mlgym.tools.aci import AciError, Call, parse

_ALL_TOOLS = {**ENV_TOOLS, **LOCAL_TOOLS}


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


class ScriptedBackend(ModelBackend):
    provider = "scripted"

    def __init__(self, model: str, *, role: str = "single", task: str = "", metric: str = "Score",
                 direction: str = "max", has_literature: bool = True, policy: str = "",
                 agent: str = "", members: dict[str, str] | None = None,
                 approvers: list[str] | None = None, baseline: dict[str, float] | None = None,
                 workers: list[str] | None = None, **_: Any):
        name, _, query = model.partition("?")
        params = parse_qs(query)
        self.usd_per_mtok = float(params.get("usd_per_mtok", ["0"])[0])
        self.latency_s = float(params.get("latency_s", ["0"])[0])  # a model's think time (benches)
        self.chatter = int(params.get("chatter", ["0"])[0])  # bench: a team message every N turns
        # its own price entry: the cost is computed like any model's, and no "unknown model" warning
        super().__init__(name, prices=PriceTable({name: Price(self.usd_per_mtok, self.usd_per_mtok)}))
        self.target = name
        self.policy = policy or role
        if self.policy not in policy_mod.POLICIES:
            raise ModelError("config", f"scripted model has no policy {self.policy!r} (role "
                             f"{role!r}; policies: {', '.join(policy_mod.POLICIES)})",
                             provider="scripted", model=name)
        self.role = role
        task = task if name in ("auto", "bench") else name
        self.ctx = policy_mod.Context(role=role, task=task, metric=metric, direction=direction,
                                      has_literature=has_literature,
                                      baseline_commands=_baseline_commands(task),
                                      name=agent or role, members=dict(members or {}),
                                      approvers=tuple(approvers or ()),
                                      workers=tuple(workers or ()),
                                      baseline=dict(baseline or {}))

    async def _complete(self, messages: list[Message], tools: list[ToolSpec], *, temperature: float,
                        max_tokens: int | None, stream: bool, on_token: Any) -> Completion:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self.target == "bench":  # as cheap as possible: the benchmark measures the framework
            n = sum(1 for m in messages if m.role == "assistant")
            thought, command = policy_mod.bench_step(n, self.chatter)
            transcript = None
        else:
            transcript = read(messages, _ALL_TOOLS)
            thought, command = policy_mod.POLICIES[self.policy](transcript, self.ctx)
        prompt = sum(estimate_tokens(m.content) for m in messages)
        del transcript
        if tools:
            call = _as_call(command, {t.name for t in tools}, sum(1 for m in messages if m.role == "assistant"))
            text = thought
            calls = [call]
        else:
            text = format_reply(thought, command)
            calls = []
        usage = Usage(prompt, estimate_tokens(text + "".join(c.raw_arguments for c in calls)))
        return Completion(text=text, tool_calls=calls, usage=usage, model=self.spec,
                          raw_finish_reason="tool_calls" if calls else "stop")


def _as_call(command: str, offered: set[str], turn: int) -> ToolCallOut:
    """A text command as the function call a tool-calling model would make."""
    import json

    try:
        parsed = parse(command, _ALL_TOOLS)
    except AciError:
        parsed = None
    if isinstance(parsed, Call) and parsed.tool.name in offered:
        name, args = parsed.tool.name, parsed.args
    else:
        name, args = "bash", {"command": command}
    raw = json.dumps(args)
    digest = hashlib.sha1(f"{turn}:{name}:{raw}".encode()).hexdigest()[:12]
    return ToolCallOut(id=f"call_{digest}", name=name, arguments=args, raw_arguments=raw)


def _baseline_commands(task: str) -> tuple[str, ...]:
    """The task's published recipe for its baseline artefact (task.toml [baseline] commands)."""
    if not task:
        return ()
    from mlgym.tasks import registry

    try:
        return tuple(registry.load_task(task).spec.baseline.commands)
    except (registry.UnknownTask, registry.TaskSpecError):
        return ()
