"""Live progress of a sweep: runs done / running / failed / queued, retries, ETA and spend so
far, the running runs, and one line per finished run. A rich live table on a terminal; on
anything else the lines, and a status line every 30 seconds."""

from __future__ import annotations

import contextlib
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mlgym.agents.progress import dollars, score
from mlgym.sweep.attempt import AttemptExit
from mlgym.sweep.outcome import Outcome
from mlgym.sweep.runner import Status
from mlgym.sweep.spec import RunPoint

PLAIN_EVERY_S = 30.0


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_line(name: str, executor: str, s: Status) -> str:
    done = s.done - s.skipped
    return (f"sweep {name} · {executor} x{s.concurrency} · done {s.done}/{s.total}"
            + (f" ({s.skipped} before)" if s.skipped else "")
            + f" · running {len(s.running)} · failed {s.failed} · queued {s.queued}"
            + (f" · retries {s.retries}" if s.retries else "")
            + f" · {duration(time.time() - s.started)}"
            + (f" · ETA {duration(s.eta_s())}" if done else "")
            + f" · spend ${dollars(s.spend_usd)}"
            + (" · STOPPING" if s.stopping else "") + (" · BUDGET REACHED" if s.budget_reached else ""))


def finished_line(p: RunPoint, out: Outcome, ex: AttemptExit, seconds: float, extra: str = "") -> str:
    head = {"done": "done", "infra": "FAIL", "config": "FAIL", "interrupted": "stop"}[out.kind]
    what = (f"score {score(out.score)} (best {score(out.best)}) · {out.reason}" if out.kind == "done"
            else f"{out.kind}: {out.reason}" + (f" ({out.detail[:160]})" if out.detail else ""))
    where = f" · {ex.node}" if ex.node else ""
    return (f"{head}  {p.id} #{ex.attempt} · {what} · {seconds:.1f} s · ${dollars(out.cost_usd)}{where}"
            + (f" · {extra}" if extra else ""))


class SweepProgress:
    def __init__(self, name: str, executor: str, live: bool = True):
        self.name = name
        self.executor = executor
        self.console = Console(stderr=True, soft_wrap=True)
        self.tty = live and self.console.is_terminal and sys.stderr.isatty()
        self.status: Status | None = None
        self._live: Live | None = None
        self._last_plain = 0.0

    def start(self, status: Status) -> None:
        self.status = status
        if self.tty:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        else:
            self._plain()

    def stop(self) -> None:
        if self._live is not None:
            with contextlib.suppress(Exception):
                self._live.update(self.render())
                self._live.stop()
        else:
            self._plain()

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif time.monotonic() - self._last_plain > PLAIN_EVERY_S:
            self._plain()

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def finished(self, p: RunPoint, out: Outcome, ex: AttemptExit, seconds: float, extra: str) -> None:
        style = {"done": "", "interrupted": "yellow"}.get(out.kind, "red")
        self.console.print(Text(finished_line(p, out, ex, seconds, extra), style=style))

    def _plain(self) -> None:
        self._last_plain = time.monotonic()
        if self.status is not None:
            self.console.print(status_line(self.name, self.executor, self.status), highlight=False)

    def render(self) -> Group:
        s = self.status
        assert s is not None
        t = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
        t.add_column("running", no_wrap=True, overflow="ellipsis", max_width=max(self.console.width - 24, 20))
        t.add_column("try", justify="right")
        t.add_column("how")
        t.add_column("time", justify="right")
        now = time.time()
        for rid, r in sorted(s.running.items(), key=lambda kv: kv[1].submitted):
            t.add_row(rid, str(r.job.attempt), r.job.kind, duration(now - r.submitted))
        return Group(Text(status_line(self.name, self.executor, s), overflow="fold"), t)
