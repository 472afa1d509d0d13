"""The Ray executor: each attempt a Ray task on whatever node has the resources the run
declares (its task spec's [limits] cpus, memory_mb and gpus, or the sweep file's [ray] values).

Ray's own task retries are off: a lost worker or node comes back to the sweep as an
infrastructure failure, journaled and retried under the sweep's policy (Ray schedules the
next attempt on whatever node is alive). Run folders come back through Ray's object store as
.tar.gz (storage "copy", no shared file system needed) or are written by the workers straight
into the sweep folder (storage "shared": a path every node mounts). Ray is optional:
`pip install 'mlgym-bus[ray]'`.
"""

from __future__ import annotations

import math
import socket
import time

from mlgym import log
from mlgym.sweep.attempt import AttemptExit, Job
from mlgym.sweep.spec import SweepError

logger = log.get(__name__)

RAY_MISSING = "the Ray executor needs ray: pip install 'mlgym-bus[ray]'"
CAPACITY_EVERY_S = 5.0


def _attempt_task(job: Job) -> AttemptExit:
    """Runs on a Ray worker. A cancel (the sweep stopping) arrives as KeyboardInterrupt, which
    the attempt turns into a clean stop of its run."""
    import ray

    from mlgym.sweep.attempt import run_attempt

    ex = run_attempt(job)
    ex.node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    return ex


class RayExecutor:
    name = "ray"

    def __init__(self, address: str, *, storage: str = "copy", concurrency: int | None = None,
                 cpus_per_run: float = 1.0):
        try:
            import ray
        except ImportError:
            raise SweepError(RAY_MISSING) from None
        self.ray = ray
        self.storage = storage
        self.fixed = concurrency
        self.cpus_per_run = max(cpus_per_run, 0.01)
        try:
            if address == "local":  # a private one-node cluster for this sweep
                ray.init(include_dashboard=False, log_to_driver=False, namespace="mlgym-sweep")
            else:
                ray.init(address=address, log_to_driver=False, namespace="mlgym-sweep")
        except ConnectionError as exc:
            raise SweepError(f"no Ray cluster at {address!r}: {exc} (start one with `ray start --head`, "
                             "or use --ray local)") from None
        self.address = address
        self._task = ray.remote(max_retries=0, retry_exceptions=False)(_attempt_task)
        self._refs: dict = {}
        self._stopping = False
        self._capacity = 1
        self._capacity_at = 0.0
        logger.info("connected to Ray", address=address, resources=ray.cluster_resources())

    def capacity(self) -> int:
        if self.fixed:
            return self.fixed
        if time.monotonic() - self._capacity_at > CAPACITY_EVERY_S:
            cpus = self.ray.cluster_resources().get("CPU", 0.0)
            self._capacity = max(1, math.floor(cpus / self.cpus_per_run + 1e-9))
            self._capacity_at = time.monotonic()
        return self._capacity

    def submit(self, job: Job) -> None:
        r = job.resources
        opts: dict = {"num_cpus": r.get("cpus", 1.0)}
        if r.get("memory_mb"):
            opts["memory"] = int(r["memory_mb"] * 2**20)
        if r.get("gpus"):
            opts["num_gpus"] = r["gpus"]
        ref = self._task.options(name=f"mlgym-sweep:{job.run}#{job.attempt}", **opts).remote(job)
        self._refs[ref] = job

    def poll(self, timeout: float) -> list[AttemptExit]:
        if not self._refs:
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # and whatever else is ready now
            ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            job = self._refs.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:  # the worker or its node died, or a cancel
                why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                out.append(AttemptExit(run=job.run, attempt=job.attempt, lost=why, interrupted=self._stopping))
        return out

    def stop(self) -> None:
        self._stopping = True
        for ref in self._refs:
            self.ray.cancel(ref)

    def close(self) -> None:
        self.ray.shutdown()  # the driver's connection; a cluster started with `ray start` goes on
