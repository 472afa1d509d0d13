"""The sweep folder: the sweep's own state, so running the same command again goes on.

    SWEEP/sweep.toml            a copy of the sweep file, for the record
    SWEEP/plan.json             the expanded runs (ids, options, fingerprints)
    SWEEP/journal.jsonl         every attempt's start and end, appended and fsynced
    SWEEP/runs/<run id>/        each run's folder (`mlgym run --run-dir`)
    SWEEP/attempts/<id>/<n>/    folders of failed attempts set aside before a fresh one
    SWEEP/report/               `mlgym sweep report`

The journal says which attempts were made and how each ended; the run folders say where each
run stands. Where they disagree (the sweep died between a run's end and its journal line),
the run folder wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from mlgym.sweep.spec import Plan, SweepError

PLAN_FILE = "plan.json"
JOURNAL_FILE = "journal.jsonl"
COPY_FILE = "sweep.toml"
LOCK_FILE = ".sweep.lock"


class Folder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.journal_path = self.root / JOURNAL_FILE

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One driver per sweep folder: a second `mlgym sweep run` is refused, not mixed in."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                raise SweepError(f"{self.root}: another mlgym sweep is running on this folder "
                                 f"({fh.read().strip() or 'pid unknown'})") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            yield

    # ------------------------------------------------------------------ plan

    def save_plan(self, plan: Plan) -> None:
        self.runs.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(plan.source, self.root / COPY_FILE)
        # the environment's values may be secrets the file should not hold anyway: names only
        env = {k: "<set>" for k in plan.sweep.env}
        shown = msgspec.structs.replace(plan, sweep=msgspec.structs.replace(plan.sweep, env=env))
        _write_atomic(self.root / PLAN_FILE, msgspec.json.format(msgspec.json.encode(shown)))

    def load_plan(self) -> Plan:
        try:
            return msgspec.json.decode((self.root / PLAN_FILE).read_bytes(), type=Plan)
        except FileNotFoundError:
            raise SweepError(f"{self.root}: not a sweep folder (no {PLAN_FILE}); "
                             "`mlgym sweep run FILE` makes one") from None

    # ------------------------------------------------------------------ journal

    def log(self, event: str, **data: Any) -> dict[str, Any]:
        rec = {"t": round(time.time(), 3), "event": event, **data}
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.journal_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return rec

    def journal(self) -> list[dict[str, Any]]:
        """Every record; a torn last line (the sweep killed mid-write) is skipped."""
        out = []
        try:
            text = self.journal_path.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def set_aside(self, run_id: str, attempt: int) -> Path | None:
        """Move a run folder out of the way of a fresh attempt, keeping it for the record."""
        src = self.run_dir(run_id)
        if not src.exists():
            return None
        dst = self.root / "attempts" / run_id / str(attempt)
        n = 0
        while dst.exists():
            n += 1
            dst = self.root / "attempts" / run_id / f"{attempt}.{n}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
        return dst


@dataclass
class RunRecord:
    """Where one run stands, from the journal and its folder."""

    id: str
    attempts: int = 0  # attempts started
    infra_failures: int = 0
    last: dict[str, Any] | None = None  # the last end record
    open_attempt: int | None = None  # an attempt started with no end recorded
    fingerprint: str = ""  # of the last attempt's start
    history: list[dict[str, Any]] = field(default_factory=list)


def run_state(rec: RunRecord, max_attempts: int) -> str:
    """done (ended on its merits), failed (a set-up error, or no attempts left) or pending."""
    last = (rec.last or {}).get("outcome")
    if last == "done":
        return "done"
    if last == "config" or (last == "infra" and rec.infra_failures >= max_attempts):
        return "failed"
    return "pending"


def records(journal: list[dict[str, Any]]) -> dict[str, RunRecord]:
    out: dict[str, RunRecord] = {}
    for rec in journal:
        rid = rec.get("run")
        if not isinstance(rid, str):
            continue
        r = out.setdefault(rid, RunRecord(rid))
        if rec["event"] == "start":
            r.attempts = max(r.attempts, int(rec.get("attempt", 0)))
            r.open_attempt = int(rec.get("attempt", 0))
            r.fingerprint = rec.get("fingerprint", r.fingerprint)
        elif rec["event"] == "end":
            r.last = rec
            r.open_attempt = None
            r.history.append(rec)
            if rec.get("outcome") == "infra":
                r.infra_failures += 1
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
