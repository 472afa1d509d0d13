"""Runs of any length for the viewer's benchmark and tests, made from a real run.

`grow` reads a finished run's event log and writes a new run folder whose log repeats the
team's work cycle (everything between the run's first `run_info` and its closing `control`)
until it holds the number of events asked for, with the bus's own writer (`EventLog`): turn
and step numbers, tokens, work-item and question ids and timestamps go on from cycle to
cycle, scores drift, each validation gets its artefact copy. `Replayer` publishes such
messages through a real broker at a given rate, which makes a live run.

`launch_chromium` starts the browser both drive (Debian's /usr/bin/chromium through
Playwright). Nothing here is used by `mlgym view` itself; `mlgym bench view` and
tests/test_viewer_*.py use it, and it is a quick way to try the viewer on a big run:
`python -m mlgym.viewer.synth RUN_DIR OUT_DIR --events 50000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from mlgym.bus import protocol as P
from mlgym.bus.broker import LOG_FILE
from mlgym.bus.eventlog import EventLog, LogReader

_decode = msgspec.msgpack.Decoder().decode
_encode = msgspec.msgpack.Encoder().encode


@dataclass
class Message:
    topic: str
    sender: str
    body: dict[str, Any]
    ts: float


def read_messages(run_dir: Path) -> list[Message]:
    """Every message of a run's log, decoded as plain data."""
    reader = LogReader(run_dir / LOG_FILE)
    out = []
    try:
        for rows in reader.read(1):
            for _seq, _epoch, ts, topic, encoding, payload in rows:
                env = _decode(payload) if encoding == "msgpack" else json.loads(payload)
                out.append(Message(topic, env.get("sender", ""), env["body"], ts))
    finally:
        reader.close()
    return out


@dataclass
class Template:
    """A finished run cut in three: its start, its work cycle and its end."""

    head: list[Message]
    cycle: list[Message]
    tail: list[Message]
    run: dict[str, Any]
    artefacts: list[tuple[str, bytes]]  # (file name, content) of each validation copy, in order
    step_span: dict[str, int] = field(default_factory=dict)  # agent -> turns per cycle
    env_span: int = 0  # session steps per cycle
    usage: dict[str, tuple[int, float]] = field(
        default_factory=dict
    )  # agent -> tokens, $ per cycle

    @classmethod
    def load(cls, run_dir: Path) -> Template:
        msgs = read_messages(run_dir)
        start = next(i for i, m in enumerate(msgs) if m.body.get("kind") == "run_info") + 1
        end = next(
            (
                i
                for i, m in enumerate(msgs)
                if i >= start and m.body.get("kind") in ("control", "run_end")
            ),
            len(msgs),
        )
        run = json.loads((run_dir / "run.json").read_text())
        copies = []
        root = run_dir / "artefacts"
        for d in sorted(root.glob("step-*"), key=lambda p: [int(x) for x in p.name.split("-")[1:]]):
            for f in sorted(d.iterdir()):
                copies.append((f.name, f.read_bytes()))
        t = cls(msgs[:start], msgs[start:end], msgs[end:], run, copies)
        for m in t.cycle:
            b, kind = m.body, m.body.get("kind")
            if kind == "agent_step":
                t.step_span[b["agent"]] = max(t.step_span.get(b["agent"], 0), int(b.get("step", 0)))
            elif kind in ("command_event", "observation_event", "score_event"):
                t.env_span = max(t.env_span, int(b.get("step", 0)))
            elif kind == "agent_status":
                tok, usd = t.usage.get(b["agent"], (0, 0.0))
                t.usage[b["agent"]] = (
                    max(tok, int(b.get("tokens", 0))),
                    max(usd, float(b.get("cost_usd", 0.0))),
                )
        return t

    def messages(self, events: int) -> Iterator[Message]:
        """`events` messages: the start, as many cycles as fit, and the end."""
        left = events - len(self.head) - len(self.tail)
        yield from self.head[:events]
        if left <= 0:
            return
        span = (self.cycle[-1].ts - self.cycle[0].ts) + 1.0 if self.cycle else 1.0
        r = 0
        while left > 0:
            for m in self.cycle:
                if left <= 0:
                    break
                yield self._shift(m, r, span)
                left -= 1
            r += 1
        shift = (
            r * span - (self.tail[0].ts - self.cycle[0].ts) + span
            if self.tail and self.cycle
            else 0.0
        )
        for m in self.tail:
            yield Message(m.topic, m.sender, self._later(m.body, r), m.ts + shift)

    def _shift(self, m: Message, r: int, span: float) -> Message:
        b = dict(m.body)
        kind = b.get("kind")
        if kind in ("agent_step", "agent_status") and "step" in b:
            b["step"] = int(b["step"]) + r * self.step_span.get(b.get("agent", ""), 0)
        if kind == "agent_status":
            tok, usd = self.usage.get(b.get("agent", ""), (0, 0.0))
            b["tokens"] = int(b.get("tokens", 0)) + r * tok
            b["cost_usd"] = float(b.get("cost_usd", 0.0)) + r * usd
        if kind in ("command_event", "observation_event", "score_event"):
            b["step"] = int(b.get("step", 0)) + r * self.env_span
        if kind == "agent_step" and b.get("env_step"):
            b["env_step"] = int(b["env_step"]) + r * self.env_span
        if kind == "output_chunk":
            b["job"] = f"{b.get('job', '')}.{r}"
        if kind == "score_event" and b.get("scores"):
            # drift: cycles score a little differently, and slowly better
            b["scores"] = {
                k: v * (1 + 0.04 * math.sin(r * 1.7) + 0.0005 * r) for k, v in b["scores"].items()
            }
        for key in ("item", "question_id"):
            if b.get(key):
                b[key] = f"{b[key]}.{r}"
        return Message(m.topic, m.sender, b, m.ts + r * span)

    def _later(self, body: dict[str, Any], r: int) -> dict[str, Any]:
        """A message of the run's end, after r cycles: its counters go on from the last one."""
        b = dict(body)
        if b.get("kind") == "agent_status":
            agent, k = b.get("agent", ""), max(r - 1, 0)
            tok, usd = self.usage.get(agent, (0, 0.0))
            b["step"] = int(b.get("step", 0)) + k * self.step_span.get(agent, 0)
            b["tokens"] = int(b.get("tokens", 0)) + k * tok
            b["cost_usd"] = float(b.get("cost_usd", 0.0)) + k * usd
        return b


def copy_run(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """A copy of a run folder (or a folder of them) holding what the viewer reads: never the
    environment's sessions (`env/`: workspaces and each session's disk image, a sparse file
    of gigabytes that a plain copy writes out in full), sockets, or the names in `skip`."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        out = set()
        for name in names:
            path = Path(folder) / name
            special = not (path.is_file() or path.is_dir())  # sockets, FIFOs
            if name in skip or name == "env" or name.endswith(".img") or special:
                out.add(name)
        return out

    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
    return dest


def envelope(m: Message, run_id: str, ts: float | None = None) -> bytes:
    """The message as the broker logs it (msgpack envelope, as a publisher sends it)."""
    return _encode(
        {
            "body": m.body,
            "v": P.PROTOCOL_VERSION,
            "id": P.new_id(),
            "run": run_id,
            "topic": m.topic,
            "sender": m.sender,
            "ts": m.ts if ts is None else ts,
        }
    )


def grow(
    template_dir: Path,
    out_dir: Path,
    events: int,
    *,
    status: str = "finished",
    start: float | None = None,
) -> Path:
    """Write run folder `out_dir` with `events` messages grown from `template_dir`'s run."""
    t = Template.load(template_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{t.run.get('task', 'run')}-grown-{events}"
    shift = (start if start is not None else time.time() - 4 * 3600) - t.head[0].ts
    log = EventLog(out_dir / LOG_FILE)
    batch: list[tuple[int, int, float, str, str, bytes]] = []
    scores: list[dict[str, Any]] = []
    usage: dict[str, tuple[int, float]] = {}  # agent -> its last tokens, dollars
    copies = 0
    try:
        first_ts = last_ts = 0.0
        for seq, m in enumerate(t.messages(events), 1):
            last_ts = m.ts + shift
            first_ts = first_ts or last_ts
            batch.append((seq, 1, last_ts, m.topic, "msgpack", envelope(m, run_id, ts=last_ts)))
            if m.body.get("kind") == "agent_status":
                usage[m.body["agent"]] = (
                    int(m.body.get("tokens", 0)),
                    float(m.body.get("cost_usd", 0.0)),
                )
            if m.body.get("kind") == "score_event":
                scores.append(m.body)
                if m.body.get("action") == "validate" and m.body.get("scores") and t.artefacts:
                    name, data = t.artefacts[copies % len(t.artefacts)]
                    d = out_dir / "artefacts" / f"step-1-{m.body['step']}"
                    d.mkdir(parents=True, exist_ok=True)
                    (d / name).write_bytes(data)
                    copies += 1
            if len(batch) >= 2000:
                log.append(batch)
                batch = []
        log.append(batch)
    finally:
        log.close()
    run = {**t.run, "run_id": run_id, "status": status, "updated": time.time()}
    if status == "finished":
        totals = {
            "tokens": sum(t for t, _ in usage.values()),
            "cost_usd": round(sum(c for _, c in usage.values()), 6),
            "seconds": round(last_ts - first_ts, 3),
        }
        _write_result(out_dir, run, scores, template_dir, totals)
    (out_dir / "run.json").write_text(json.dumps(run, indent=2))
    return out_dir


def _write_result(
    out_dir: Path,
    run: dict[str, Any],
    scores: list[dict[str, Any]],
    template_dir: Path,
    totals: dict[str, Any],
) -> None:
    base = json.loads((template_dir / "result.json").read_text())
    metric = base["metric"]["name"]
    attempts = [
        {"step": s["step"], "action": s["action"], "scores": s.get("scores")} for s in scores
    ]
    values = [a["scores"][metric] for a in attempts if a["scores"] and metric in a["scores"]]
    final = next(
        (
            {"step": a["step"], "scores": a["scores"], "auto": False}
            for a in reversed(attempts)
            if a["action"] == "submit"
        ),
        None,
    )
    best = (
        (max(values) if base["metric"]["direction"] == "max" else min(values)) if values else None
    )
    result = {
        **base,
        "run_id": run["run_id"],
        "attempts": attempts,
        "final_submission": final,
        "best_attempt": best,
        "steps": max((s["step"] for s in scores), default=0),
        "run_dir": str(out_dir),
        **totals,
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))


class Replayer:
    """Publishes a template's messages through a running broker at `rate` per second, each
    stamped with the time it is sent: a live run for the viewer to follow."""

    def __init__(self, template_dir: Path, run_dir: Path, rate: float):
        self.template = Template.load(template_dir)
        self.run_dir = run_dir
        self.rate = rate
        self.sent = 0

    def start_run_files(self) -> None:
        """run.json as a running run has it (this process stands for its supervisor)."""
        run = {k: v for k, v in self.template.run.items() if k != "exit_status"}
        run.update(run_id=self.run_dir.name, status="running", updated=time.time())
        (self.run_dir / "run.json").write_text(json.dumps(run, indent=2))
        (self.run_dir / "pids.json").write_text(json.dumps({"supervisor": os.getpid()}))

    def finish_run_files(self) -> None:
        run = json.loads((self.run_dir / "run.json").read_text())
        (self.run_dir / "run.json").write_text(json.dumps({**run, "status": "finished"}, indent=2))

    async def publish(
        self, events: int, stop: asyncio.Event | None = None, timeout: float = 30.0
    ) -> int:
        """Publish up to `events` messages, paced, and wait until the broker has logged them all;
        returns how many were sent."""
        from mlgym.bus import connect

        reader = LogReader(self.run_dir / LOG_FILE)
        first = reader.head()
        bus = connect(self.run_dir, run=self.run_dir.name, sender="replay")
        await bus.connect()
        try:
            t0 = time.monotonic()
            for i, m in enumerate(self.template.messages(events)):
                if stop is not None and stop.is_set():
                    break
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await bus.publish_envelope(P.decode(envelope(m, self.run_dir.name, ts=time.time())))
                self.sent += 1
            deadline = time.monotonic() + timeout
            while reader.head() < first + self.sent:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the broker logged {reader.head() - first} of {self.sent} messages"
                    )
                await asyncio.sleep(0.02)
        finally:
            await bus.close()
            reader.close()
        return self.sent


# ------------------------------------------------------------------ the browser of bench and tests

CHROMIUM = "/usr/bin/chromium"  # Debian's package: Playwright never downloads a browser here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-precise-memory-info",
]


def launch_chromium(playwright: Any, profile: str) -> Any:
    """Debian's Chromium, headless, with a fresh profile folder, as a Playwright context.

    bypass_csp: Playwright evaluates its wait predicates as strings, which the viewer's
    Content-Security-Policy (no eval) refuses; the page's own code never needs it."""
    return playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1440, "height": 900},
        bypass_csp=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("template", type=Path, help="a finished run folder (mlgym run)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--events", type=int, default=50_000)
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    grow(args.template, args.out, args.events)
    print(f"{args.out}: {args.events} events in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
