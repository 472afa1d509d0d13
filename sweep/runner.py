"""The sweep's loop: which run to attempt next, how (fresh or resumed), what each end means, and
when to stop. The same loop drives the local and the Ray executor.

For each run of the plan, in order: finished on its merits -> skipped; a folder that stopped
unfinished -> `mlgym resume`; nothing, or a failed finished attempt -> a fresh `mlgym run`
(the old folder set aside). An infrastructure failure is attempted again, after a backoff, up
to `retry.max_attempts`; a run that ended on its merits never is. SIGINT or SIGTERM stops
cleanly: no new attempt starts, running ones are told to stop and saved, and the same command
resumes them.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import statistics
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.sweep.attempt import AttemptExit, Job, pack, unpack
from mlgym.sweep.executors import Executor
from mlgym.sweep.folder import Folder, RunRecord, records, run_state
from mlgym.sweep.outcome import Outcome, classify, finished_result, from_result, read_json
from mlgym.sweep.spec import Plan, RunPoint, SweepError

logger = log.get(__name__)

TICK_S = 0.5
RESUME_BROKEN = ("start_failed", "attempt_failed")  # a resume that could not even start


@dataclass
class Running:
    job: Job
    submitted: float  # driver's time.time()


@dataclass
class Status:
    """What the progress display and the summary read."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0  # finished before this invocation
    queued: int = 0
    retries: int = 0
    spend_usd: float = 0.0
    started: float = field(default_factory=time.time)
    running: dict[str, Running] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)  # this invocation's finished runs, s
    overheads: list[float] = field(default_factory=list)  # driver-seen time minus the child's
    concurrency: int = 1
    stopping: bool = False
    budget_reached: bool = False

    def eta_s(self) -> float | None:
        left = self.queued + len(self.running)
        if not left or not self.durations:
            return None
        return statistics.median(self.durations) * left / max(1, min(self.concurrency, left))


class Sweep:
    def __init__(self, plan: Plan, executor: Executor, progress: Any = None, force: bool = False):
        self.plan = plan
        self.folder = Folder(plan.out)
        self.executor = executor
        self.progress = progress
        self.force = force
        self.retry = plan.sweep.retry
        self.status = Status(total=len(plan.runs))
        self.records: dict[str, RunRecord] = {}
        self.queue: list[tuple[float, RunPoint]] = []  # (not before, point)
        self.outcomes: dict[str, Outcome] = {}
        self._stop = threading.Event()
        self.fatal = ""  # why the sweep could not go on (its folder cannot be written)

    # ------------------------------------------------------------------ public

    def run(self) -> dict[str, Any]:
        with self.folder.lock(), self._signals():
            self._prepare()
            self.folder.log("sweep_start", executor=self.executor.name, runs=len(self.plan.runs),
                            queued=len(self.queue))
            self.status.concurrency = self.executor.capacity()
            if self.progress is not None:
                self.progress.start(self.status)
            try:
                self._loop()
            finally:
                if self.progress is not None:
                    self.progress.stop()
                self.executor.close()
            if self.fatal:
                raise SweepError(f"the sweep stopped: cannot write its folder: {self.fatal}; the running runs "
                                 "were told to stop; run the same command again once it is fixed")
            summary = self.summary()
            self.folder.log("sweep_end", **{k: v for k, v in summary.items() if k != "runs"})
            return summary

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> dict[str, Any]:
        s = self.status
        return {"sweep": self.plan.sweep.name, "dir": self.plan.out, "executor": self.executor.name,
                "runs": len(self.plan.runs), "done": s.done, "failed": s.failed, "skipped": s.skipped,
                "remaining": len(self.plan.runs) - s.done - s.failed, "retries": s.retries, "interrupted": s.stopping,
                "budget_reached": s.budget_reached, "spend_usd": round(s.spend_usd, 6),
                "seconds": round(time.time() - s.started, 3),
                "attempt_overhead_s": round(statistics.median(s.overheads), 4) if s.overheads else None}

    # ------------------------------------------------------------------ start

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT/SIGTERM: stop cleanly; a second SIGINT is the usual KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):  # noqa: ARG001
            self._stop.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _prepare(self) -> None:
        self.records = records(self.folder.journal())
        changed = [p.id for p in self.plan.runs
                   if p.id in self.records and self.records[p.id].fingerprint
                   and self.records[p.id].fingerprint != p.fingerprint]
        if changed and not self.force:
            raise SweepError(f"{self.plan.out}: {len(changed)} run(s) were made with other settings "
                             f"than the sweep file gives now (team, models, budget, backend, run_args), "
                             f"e.g. {changed[0]}; use another `out` folder, or --force to keep them")
        self.folder.save_plan(self.plan)
        for p in self.plan.runs:
            rec = self.records.setdefault(p.id, RunRecord(p.id))
            self._reconcile(p, rec)
            state = run_state(rec, self.retry.max_attempts)
            if state == "done":
                self.status.skipped += 1
                self.status.done += 1
            elif state == "failed":
                self.status.failed += 1
            else:
                self.queue.append((0.0, p))
            if rec.last is not None:
                self.status.spend_usd += sum(float(h.get("cost_usd") or 0.0) for h in rec.history)
        self.status.queued = len(self.queue)

    def _reconcile(self, p: RunPoint, rec: RunRecord) -> None:
        """An attempt the journal left open (the sweep itself died) gets its end from the folder."""
        result = finished_result(self.folder.run_dir(p.id))
        if rec.open_attempt is None and (result is None or rec.last is not None):
            return
        if result is not None:
            out = from_result(result)
        else:
            out = Outcome("interrupted", "sweep_stopped", "the sweep stopped before the attempt ended")
        attempt = rec.open_attempt or rec.attempts
        end = self.folder.log("end", run=p.id, attempt=attempt, recovered=True, **out.to_json())
        rec.last, rec.open_attempt = end, None
        rec.history.append(end)
        rec.infra_failures += out.kind == "infra"

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        s = self.status
        while True:
            if self._stop.is_set() and not s.stopping:
                s.stopping = True
                self.executor.stop()
                if self.progress is not None:
                    self.progress.note(f"stopping: {len(s.running)} running run(s) are saving their state; "
                                       "run the same command again to go on")
            try:
                if not s.stopping:
                    self._launch()
                if not s.running and (s.stopping or not self.queue or s.budget_reached):
                    break
                for ex in self.executor.poll(TICK_S):
                    self._ended(ex)
            except OSError as exc:  # the sweep folder cannot be written (a full disk, ...)
                self.fatal = self.fatal or f"{exc} ({getattr(exc, 'filename', '') or self.folder.root})"
                self._stop.set()
            if self.progress is not None:
                self.progress.update()

    def _launch(self) -> None:
        s = self.status
        s.concurrency = self.executor.capacity()
        now = time.time()
        cap = self.plan.sweep.max_dollars
        while self.queue and len(s.running) < s.concurrency:
            if cap and s.spend_usd >= cap:
                s.budget_reached = True
                return
            i = next((i for i, (t, _) in enumerate(self.queue) if t <= now), None)
            if i is None:
                return
            _, p = self.queue.pop(i)
            job = self._job(p)
            self.folder.log("start", run=p.id, attempt=job.attempt, kind=job.kind, fingerprint=p.fingerprint,
                            executor=self.executor.name)
            rec = self.records[p.id]
            rec.attempts, rec.open_attempt, rec.fingerprint = job.attempt, job.attempt, p.fingerprint
            s.running[p.id] = Running(job, time.time())
            s.queued = len(self.queue)
            self.executor.submit(job)

    def _job(self, p: RunPoint) -> Job:
        rec = self.records[p.id]
        attempt = rec.attempts + 1
        run_dir = self.folder.run_dir(p.id)
        state = read_json(run_dir / "run.json")
        last = rec.last or {}
        resumable = (state is not None and state.get("status") != "finished"
                     and not (last.get("kind") == "resume" and last.get("reason") in RESUME_BROKEN))
        if not resumable:
            self.folder.set_aside(p.id, rec.attempts)
        storage = self.executor.storage
        job = Job(run=p.id, attempt=attempt, kind="resume" if resumable else "fresh", task=p.task, team=p.team,
                  team_toml=p.team_toml, seed=p.seed, args=self.plan.run_args(p), env=dict(self.plan.sweep.env),
                  storage=storage, run_dir=str(run_dir), resources=dict(p.resources))
        if storage == "copy" and resumable:
            job.payload = pack(run_dir)
        return job

    def _receive(self, run_dir: Path, ex: AttemptExit) -> Path | None:
        """Put a run folder that came back through Ray in place of the local copy (the payload
        holds all the copy had, and more); a payload that cannot be unpacked leaves the copy."""
        incoming = run_dir.with_name(run_dir.name + ".incoming")
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            unpack(ex.payload or b"", incoming)
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(incoming, ignore_errors=True)
            ex.lost = ex.lost or f"the run folder that came back cannot be unpacked: {exc}"
            return None
        shutil.rmtree(run_dir, ignore_errors=True)
        incoming.rename(run_dir)
        return run_dir

    def _ended(self, ex: AttemptExit) -> None:
        s = self.status
        running = s.running.pop(ex.run, None)
        if running is None:
            logger.warning("an attempt the sweep did not start came back", run=ex.run)
            return
        run_dir: Path | None = self.folder.run_dir(ex.run)
        if ex.payload is not None:
            run_dir = self._receive(run_dir, ex)
        elif running.job.storage == "copy":
            run_dir = None  # the attempt's folder stayed on a lost node
        out = classify(run_dir, ex)
        seen = time.time() - running.submitted
        if ex.child_start and not ex.lost:
            s.overheads.append(max(seen - ex.child_s, 0.0))
        p = self.plan.point(ex.run)
        rec = self.records[p.id]
        end = self.folder.log("end", run=p.id, attempt=ex.attempt, kind=running.job.kind, node=ex.node,
                              seconds=round(seen, 3), returncode=ex.returncode, **out.to_json())
        rec.last, rec.open_attempt = end, None
        rec.history.append(end)
        s.spend_usd += out.cost_usd
        self.outcomes[p.id] = out
        line = ""
        if out.kind == "done":
            s.done += 1
            s.durations.append(seen)
        elif out.kind == "config":
            s.failed += 1
        elif out.kind == "infra":
            rec.infra_failures += 1
            if rec.infra_failures < self.retry.max_attempts and not s.stopping:
                s.retries += 1
                backoff = self.retry.backoff_s * 2 ** (rec.infra_failures - 1)
                self.queue.append((time.time() + backoff, p))
                line = f"retry in {backoff:g} s ({rec.infra_failures + 1}/{self.retry.max_attempts})"
            elif rec.infra_failures >= self.retry.max_attempts:
                s.failed += 1
                line = f"no attempts left ({self.retry.max_attempts})"
        s.queued = len(self.queue)
        if self.progress is not None:
            self.progress.finished(p, out, ex, seen, line)
