"""Background jobs (training runs): started from the persistent shell, detached into their own
session, output appended to a log in the sandbox's state folder, which the host tails.

Backend-neutral: it needs the shell driver and a host view of the jobs folder (a bind mount
in every backend). Each job `jN` leaves, under STATE/jobs/: jN.log (output), jN.pid (session
id inside the sandbox), jN.rc (exit code, written when it ends).

The jobs folder is the agent's to write: any of those files may be a symlink, a FIFO or a
never-ending file by the time the server looks. The server never creates or writes a file
there, and reads only regular files, through tools/safefs.py, a bounded number of bytes.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from mlgym import log
from mlgym.env_server.sandbox.base import OutputCallback, SandboxError
from mlgym.tools import safefs
from mlgym.env_server.sandbox.output import CarriageReturnCollapser, call_back, collapse
from mlgym.env_server.sandbox.shell import LogDir, ShellDriver

logger = log.get(__name__)

POLL_S = 0.5  # how often a running job's log is tailed
KILLED = 137  # exit code recorded for a job we killed (128 + SIGKILL)
MAX_OUTPUT_READ = 1 << 20  # the most one job_output call returns, whatever is asked


@dataclass
class Job:
    id: str
    command: str
    inside: str  # inside path prefix of its files (without suffix)
    sid: int
    started: float = field(default_factory=time.time)
    ended: float | None = None
    exit_code: int | None = None
    lost: bool = False  # the sandbox was restarted under it
    tail_task: asyncio.Task[None] | None = None


class JobManager:
    def __init__(self, shell: ShellDriver, jobs: LogDir, stream_limit: int = 1_000_000) -> None:
        """`jobs`: the jobs folder (host path, inside path)."""
        self.shell = shell
        self.dir = jobs
        self.stream_limit = stream_limit
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)

    async def start(self, command: str, on_output: OutputCallback | None = None) -> str:
        job_id = f"j{next(self._ids)}"
        _, inside = self.dir.path(job_id)
        await asyncio.to_thread(self._clear, job_id)
        sid = await self.shell.start_job(inside, command)
        job = Job(job_id, command, inside, sid)
        self.jobs[job_id] = job
        job.tail_task = asyncio.create_task(self._tail(job, on_output))
        logger.info("job_started", job=job_id, sid=sid, command=command[:200])
        return job_id

    def _get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise SandboxError(f"no background job {job_id!r}; known: {sorted(self.jobs)}")
        return job

    def _clear(self, job_id: str) -> None:
        """Remove what an earlier sandbox may have left under the same job id (a reused
        folder): the entries themselves, never what a link points to."""
        for suffix in (".rc", ".rc.tmp", ".pid", ".log"):
            safefs.unlink(self.dir.host, job_id + suffix)

    def _read(self, job: Job, suffix: str, limit: int, offset: int = 0) -> bytes:
        try:
            return safefs.read(self.dir.host, job.id + suffix, limit, offset)
        except OSError:  # missing, or not a regular file (the agent's doing): nothing
            return b""

    def _refresh(self, job: Job) -> None:
        if job.exit_code is not None or job.lost:
            return
        text = self._read(job, ".rc", 32).decode("ascii", errors="replace").strip()
        if text.lstrip("-").isdigit():
            job.exit_code = int(text)
            job.ended = time.time()

    async def status(self, job_id: str) -> dict[str, Any]:
        job = self._get(job_id)
        await asyncio.to_thread(self._refresh, job)
        try:
            st = await asyncio.to_thread(safefs.lstat, self.dir.host, job.id + ".log")
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        except OSError:
            size = 0
        return {
            "job": job.id,
            "command": job.command,
            "running": job.exit_code is None and not job.lost,
            "exit_code": job.exit_code,
            "lost": job.lost,
            "started": job.started,
            "ended": job.ended,
            "output_bytes": size,
            "log_path": job.inside + ".log",
        }

    async def output(self, job_id: str, offset: int = 0, limit: int = 100_000) -> str:
        job = self._get(job_id)
        limit = min(max(limit, 0), MAX_OUTPUT_READ)
        data = await asyncio.to_thread(self._read, job, ".log", limit, offset)
        return collapse(data.decode("utf-8", errors="replace"))

    async def kill(self, job_id: str) -> None:
        job = self._get(job_id)
        await asyncio.to_thread(self._refresh, job)
        if job.exit_code is not None or job.lost:
            return
        await self.shell.kill_session(job.sid)
        job.exit_code, job.ended = KILLED, time.time()
        logger.info("job_killed", job=job.id)

    def mark_lost(self) -> None:
        """The sandbox restarted: its jobs died with it."""
        for job in self.jobs.values():
            if job.exit_code is None:
                job.lost, job.ended = True, time.time()

    async def close(self) -> None:
        for job in self.jobs.values():
            if job.tail_task is not None:
                job.tail_task.cancel()
        tasks = [j.tail_task for j in self.jobs.values() if j.tail_task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _tail(self, job: Job, on_output: OutputCallback | None) -> None:
        """Pass the job's new output to on_output until it ends (progress bars collapsed)."""
        if on_output is None:
            return
        offset, streamed = 0, 0
        cr = CarriageReturnCollapser()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            await asyncio.to_thread(self._refresh, job)
            finished = job.exit_code is not None or job.lost
            data = await asyncio.to_thread(self._read, job, ".log", 1 << 20, offset)
            offset += len(data)
            text = cr.feed(decoder.decode(data))
            if finished and len(data) < 1 << 20:
                text += cr.flush()
            if text and streamed < self.stream_limit:
                chunk = text[: self.stream_limit - streamed]
                streamed += len(text)
                if streamed >= self.stream_limit:
                    chunk += f"\n[live output stopped; read the rest with job_output {job.id}]\n"
                await call_back(on_output, chunk)
            if finished and len(data) < 1 << 20:
                return
            if len(data) < 1 << 20:
                await asyncio.sleep(POLL_S)
