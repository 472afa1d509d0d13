"""Live progress of a run: steps and budget used, tokens, dollars, time, the best score against
the baseline, and what each agent is doing (`calling model 42 s`, `retrying 2/5: timeout`,
`ended: model_unreachable`, or its current command). A rich live table on a terminal, made to
fit 80 columns; on anything else, one log line every few seconds. `summary_lines` is what
`mlgym run` prints at the end, each agent's exit included."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mlgym import log
from mlgym.agents.ledger import AgentUsage, Ledger

logger = log.get(__name__)


def compact(n: float) -> str:
    """12345 -> 12.3k, 2500000 -> 2.50M: token counts that fit a narrow column."""
    if n < 10_000:
        return f"{n:.0f}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1e6:.2f}M"


def score(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def dollars(v: float) -> str:
    return f"{v:.3f}" if v < 100 else f"{v:.0f}"


def limit(v: float, fmt: Any = str) -> str:
    return fmt(v) if v else "∞"


def agent_state(u: AgentUsage, now: float | None = None) -> str:
    """What the agent is doing, in a few words."""
    now = time.time() if now is None else now
    if u.exit or u.state == "stopped":
        return f"ended: {u.exit or 'stopped'}"
    if u.state == "calling":
        return f"calling model {max(now - u.since, 0):.0f} s"
    if u.state == "retrying":
        return f"retrying {u.retry}/{u.max_retries}: {u.error}"
    if u.state == "crashed":
        return f"crashed: {u.detail}" if u.detail else "crashed"
    if u.state in ("working", "idle") and u.detail:
        return f"{u.state}: {u.detail}"
    return u.state


def header(task: str, team: str, ledger: Ledger, budget: Any, elapsed: float, metric: str,
           baseline: float | None) -> list[str]:
    best = ledger.best_score()
    cached = f" ({compact(sum(a.cached_tokens for a in ledger.agents.values()))} cached)" \
        if any(a.cached_tokens for a in ledger.agents.values()) else ""
    return [
        f"{task} · team {team} · {elapsed:.0f} s/{limit(budget.wall_clock_s, round)}",
        f"steps {ledger.steps}/{limit(budget.steps)} · tokens {compact(ledger.tokens)}{cached}/"
        f"{limit(budget.tokens, compact)} · ${dollars(ledger.cost)}/"
        f"{limit(budget.dollars, dollars)}",
        f"best {metric} {score(best)} (baseline {score(baseline)})",
    ]


def table(ledger: Ledger, now: float | None = None, width: int = 80) -> Table:
    """One row per agent, within `width` columns: names are never cut, the state column (the
    last) gives way."""
    agents = ledger.agents.values()
    cols: list[tuple[str, Any]] = [("turns", lambda u: str(u.turns)),
                                   ("steps", lambda u: str(u.env_steps)),
                                   ("tok", lambda u: compact(u.tokens))]
    if any(u.cost_usd for u in agents):  # local models cost nothing: no column of zeros
        cols.append(("$", lambda u: dollars(u.cost_usd)))
    if any(u.restarts for u in agents):
        cols.append(("rst", lambda u: str(u.restarts)))
    heads = ["agent"] + [h for h, _ in cols]
    rows = [([name] + [f(u) for _, f in cols], u, agent_state(u, now))
            for name, u in ledger.agents.items()]
    fixed = sum(max([len(h)] + [len(r[i]) for r, _, _ in rows]) for i, h in enumerate(heads))
    room = width - fixed - 2 * len(heads)  # two spaces between columns
    t = Table(box=None, pad_edge=False, expand=False, padding=(0, 1), header_style="bold")
    t.add_column("agent", no_wrap=True)
    for col in heads[1:]:
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("state", no_wrap=True, overflow="ellipsis", max_width=max(room, 12))
    for row, u, state in rows:
        bad = state.startswith(("retrying", "crashed")) or (
            state.startswith("ended") and u.exit not in ("submitted", "stopped", "auto-submitted"))
        t.add_row(*row, Text(state, style="red" if bad else ""))
    return t


class Progress:
    def __init__(self, sup: Any, interval: float = 0.25):
        self.sup = sup
        self.interval = interval
        self.console = Console(stderr=True)
        self.tty = self.console.is_terminal and sys.stderr.isatty()
        self._task: asyncio.Task | None = None
        self._live: Live | None = None

    def start(self) -> None:
        if self.tty:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.start()
        self._task = asyncio.create_task(self._loop(), name="progress")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._live is not None:
            with contextlib.suppress(Exception):
                self._live.update(self.render())
                self._live.stop()

    async def _loop(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.interval)
            n += 1
            if self._live is not None:
                self._live.update(self.render())
            elif n % max(int(5 / self.interval), 1) == 0:
                logger.info("progress", **self.summary())

    def summary(self) -> dict[str, Any]:
        s = self.sup
        L = s.ledger
        b = s.cfg.team.budget
        return {"steps": f"{L.steps}/{b.steps or '-'}", "tokens": L.tokens, "usd": round(L.cost, 4),
                "seconds": round(s.elapsed, 1), "best": L.best_score(),
                "baseline": score(s.baseline.get(s.metric)),
                "agents": {n: agent_state(u) for n, u in L.agents.items()}}

    def render(self) -> Group:
        s = self.sup
        lines = header(s.cfg.task, s.cfg.team.name, s.ledger, s.cfg.team.budget, s.elapsed,
                       s.metric, s.baseline.get(s.metric))
        return Group(*(Text(line, overflow="fold") for line in lines),
                     table(s.ledger, width=self.console.width))


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The end of `mlgym run`: outcome, scores (rounded), usage, and each agent's exit."""
    metric = result["metric"]["name"]
    base = (result.get("baseline") or {}).get(metric)
    final = (result.get("final_submission") or {}).get("scores", {}).get(metric)
    cached = sum(a.get("cached_tokens", 0) for a in result.get("agents", {}).values())
    lines = [
        f"run {result['run_id']}: {result['exit_status']}",
        f"  {metric}: submitted {score(final)}, best attempt {score(result.get('best_attempt'))}, "
        f"baseline {score(base)}",
        f"  steps {result['steps']}, tokens {result['tokens']}"
        + (f" ({cached} cached)" if cached else "")
        + f", ${result['cost_usd']:.4f}, {result['seconds']:.1f} s; "
        f"run directory {result['run_dir']}",
    ]
    for name, a in result.get("agents", {}).items():
        why = f": {a['exit_detail']}" if a.get("exit_detail") else ""
        lines.append(f"  {name}: {a.get('exit') or 'running'}{why}"[:300])
    return lines
