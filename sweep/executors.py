"""Where attempts run. Both executors take jobs and hand back `AttemptExit`s; the sweep's loop
(runner.py) decides what runs, when, and what an end means.

- `LocalExecutor`: up to N attempts at once on this machine, each a thread driving one
  `mlgym run` subprocess (the run's own broker, environment server and agents).
- `RayExecutor` (ray_exec.py): each attempt a Ray task, on whatever node has the resources.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from mlgym.sweep.attempt import AttemptExit, Job, run_attempt


class Executor(Protocol):
    name: str
    storage: str  # local, shared or copy (attempt.Job.storage)

    def capacity(self) -> int:
        """How many attempts may run at once now."""

    def submit(self, job: Job) -> None: ...

    def poll(self, timeout: float) -> list[AttemptExit]:
        """Attempts that ended, waiting up to `timeout` seconds for one."""

    def stop(self) -> None:
        """Ask every running attempt to stop cleanly (its run can be resumed)."""

    def close(self) -> None: ...


class LocalExecutor:
    name = "local"
    storage = "local"

    def __init__(self, concurrency: int):
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sweep-attempt")
        self._stop = threading.Event()
        self._futures: dict[Future, Job] = {}

    def capacity(self) -> int:
        return self.concurrency

    def submit(self, job: Job) -> None:
        self._futures[self._pool.submit(run_attempt, job, self._stop)] = job

    def poll(self, timeout: float) -> list[AttemptExit]:
        if not self._futures:
            return []
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            job = self._futures.pop(f)
            try:
                out.append(f.result())
            except Exception as exc:  # run_attempt catches its own; this is a bug, kept visible
                out.append(AttemptExit(run=job.run, attempt=job.attempt, lost=f"{type(exc).__name__}: {exc}"))
        return out

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
