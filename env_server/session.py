"""One session = one task instance: a workspace, a sandbox, ACI state, a step counter, budgets.

The session owns the rules of an episode: every action is a step; `validate` evaluates and
goes on; `submit` evaluates and ends; when the step budget runs out the last artefact is
auto-submitted and the episode is truncated. Scores come from the evaluation sandbox
(env_server/evaluation.py), never from the agent's own output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.env_server import evaluation, policy, taskinfo
from mlgym.env_server.disk import SessionDisk
from mlgym.env_server.sandbox import (
    WORKSPACE,
    Sandbox,
    SandboxConfig,
    SandboxError,
    SandboxPathError,
    create,
)
from mlgym.env_server.sandbox.base import MAX_READ_BYTES
from mlgym.tools.aci import ACI, ToolResult
from mlgym.tools.turn import format_state

logger = log.get(__name__)

Publish = Callable[[str, p.Body], Awaitable[None]]

DEFAULT_COMMAND_TIMEOUT = 1800.0  # MLGym's training timeout for most tasks
KEEP_EVALUATED = 8  # evaluated file artefacts kept per session for read_artefact


SAVED_FILE = "session.jsonl"  # beside the workspace, outside every folder the sandbox sees
SAVED_COMPACT_BYTES = 1 << 20  # past this the journal is rewritten as its last line


class Saved(msgspec.Struct, kw_only=True):
    """What a session needs to be adopted by a restarted server (`Session.adopt`): a line
    appended to <root>/session.jsonl when it opens, when each action starts and ends, and when
    it closes; the last whole line counts. The workspace itself is the folder on disk, as the
    last action left it.

    Why a journal, not a file replaced each time: an append to an open file costs about a
    microsecond, while writing and renaming a file cost 0.5-0.7 ms here (twice per action,
    against an action round trip of about 0.75 ms)."""

    id: str
    task: str
    backend: str
    workspace: str
    limits: p.Limits
    seed: int
    run: str
    image: str
    max_steps: int
    step: int
    state: str
    exit_status: str
    created: float
    open_file: str = ""
    first_line: int = 1
    cwd: str = WORKSPACE
    attempts: list[dict[str, Any]] = []
    evaluated: list[int] = []
    token: str = ""  # the session's owner token: an adopted session keeps its owner


def load_saved(path: Path) -> Saved | None:
    """The last whole record of a session journal (a torn last line is skipped), or None."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return msgspec.json.decode(line, type=Saved)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return None


class SessionError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Attempt:
    step: int
    action: str  # "validate" | "submit" | "autosubmit"
    scores: dict[str, float]
    error: dict[str, str] | None
    seconds: float
    ts: float = field(default_factory=time.time)
    seed: int = 0


class Session:
    def __init__(
        self,
        sid: str,
        task: taskinfo.TaskHandle,
        root: Path,
        *,
        backend: str = "local",
        limits: policy.Effective | p.Limits = p.Limits(),
        seed: int = 0,
        run: str = "",
        publish: Publish | None = None,
        sandbox_factory: Callable[[str, SandboxConfig], Sandbox] = create,
        image: str = "",
        token: str = "",
        keep_disk: bool = True,
        heldout_key: bytes = b"",
    ):
        """`limits`: what the server's policy granted (a raw request is checked against the
        default policy). `token`: the secret requests for this session must carry.
        `keep_disk`: keep the disk image when the session closes."""
        if isinstance(limits, p.Limits):
            limits = policy.ServerPolicy().effective(limits, task.spec)
        self.id = sid
        self.task = task
        self.spec = task.spec
        self.root = root
        self.token = token or policy.new_token()
        self.keep_disk = keep_disk
        self.disk: SessionDisk | None = None
        self.workspace = root / "disk" / "workspace"
        self.backend = backend
        self.seed = seed
        # the final evaluation's seed: held out (from this machine's secret, never inside the
        # sandbox), so knowing the task's public seed and an opponent's code does not predict
        # the score; the same task and seed get the same one here, so runs reproduce
        self.final_seed = policy.final_seed(heldout_key or policy.heldout_key(), self.spec.id,
                                            seed)
        self.run = run
        self.max_steps = limits.max_steps
        self.command_timeout = limits.command_timeout_s or DEFAULT_COMMAND_TIMEOUT
        self.limits = limits
        self.step = 0
        self.state = "opening"
        self.exit_status = ""
        self.created = time.time()
        self.attempts: list[Attempt] = []
        self._evaluated: list[int] = []  # steps whose scored artefact is kept
        self._publish = publish
        self._sandbox_factory = sandbox_factory
        self._lock = asyncio.Lock()
        self.sandbox: Sandbox | None = None
        self.aci: ACI | None = None
        self.last_agent = ""
        self.image = image
        self._journal: int | None = None  # the open session.jsonl (append only)
        self._journal_bytes = 0

    # ------------------------------------------------------------------ lifecycle

    def sandbox_config(self, readonly: list[tuple[Path, str]]) -> SandboxConfig:
        return SandboxConfig(
            workspace=self.workspace,
            jobs_dir=self.workspace.parent / "jobs",
            readonly=readonly,
            python_env=taskinfo.task_python_env() if self.backend == "local" else None,
            image=self.image,
            network=self.limits.network,
            memory_mb=self.limits.memory_mb,
            cpu_seconds=self.limits.cpu_seconds,
            max_processes=self.limits.max_processes,
            state_dir=self.root / "state",
        )

    async def open(self, templates: Path, pool: Any = None) -> str:
        """Lay out the workspace from the task template on the session's disk and start (or
        take from `pool`) a sandbox for it."""
        template, readonly = await asyncio.to_thread(self.task.template, templates)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # the host's other users have no business in a session
        if pool is not None:
            self.sandbox = await pool.acquire(prepare=lambda ws: self.task.copy_template(template, ws))
            self.workspace = self.sandbox.config.workspace
            self.disk = getattr(self.sandbox, "disk", None)
        else:
            self.sandbox = self._sandbox_factory(self.backend, self.sandbox_config(readonly))
            self.disk = SessionDisk(self.root, self.limits.disk_mb, owner=self.sandbox.file_owner)
            await self.disk.create()
            await asyncio.to_thread(self.task.copy_template, template, self.workspace)
            await self.sandbox.start()
        window = self.limits.window
        self.aci = ACI(
            self.workspace,
            file_owner=self.sandbox.file_owner,
            inside_root=self.inside,
            shell=self._shell,
            validate=self._validate,
            submit=self._submit,
            window=window,
            command_timeout=self.command_timeout,
            read_only=[inside for _, inside in readonly],  # the editor refuses them too
        )
        self.state = "open"
        self.save()
        return self.initial_observation()

    async def adopt(self, saved: Saved, templates: Path) -> None:
        """Take over a session a server that died left on disk (`mlgym env serve --adopt`):
        its workspace as the last action left it, its step count, scores, evaluated artefacts
        and viewer state, in a new sandbox (the old one died with its server). The shell is new:
        its variables, background jobs and processes are gone."""
        _, readonly = await asyncio.to_thread(self.task.template, templates)
        self.workspace = Path(saved.workspace)
        self.step, self.max_steps, self.created = saved.step, saved.max_steps, saved.created
        self.exit_status = saved.exit_status
        self.attempts = [Attempt(**a) for a in saved.attempts]
        self._evaluated = [n for n in saved.evaluated if self._evaluated_path(n).is_file()]
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        self.sandbox = self._sandbox_factory(self.backend, self.sandbox_config(readonly))
        if self.workspace == self.root / "disk" / "workspace":  # still mounted, or its image
            self.disk = SessionDisk(self.root, self.limits.disk_mb,
                                    owner=self.sandbox.file_owner)
            await self.disk.create()
        await self.sandbox.start()
        self.aci = ACI(self.workspace, shell=self._shell, validate=self._validate,
                       submit=self._submit, window=self.limits.window or 1000,
                       command_timeout=self.command_timeout, cwd=saved.cwd or self.inside,
                       inside_root=self.inside, file_owner=self.sandbox.file_owner,
                       read_only=[inside for _, inside in readonly])
        if saved.open_file:
            try:
                self.aci.editor.file = self.aci.workspace.resolve(saved.open_file, self.aci.cwd)
                self.aci.editor.first = max(saved.first_line, 1)
            except Exception:  # the file is gone or refused: none open, as after a fresh start
                self.aci.editor.file = None
        self.state = saved.state
        self.save()

    def save(self) -> None:
        """Append the session's state to <root>/session.jsonl, for a restarted server to adopt."""
        aci = self.aci.state() if self.aci is not None else None
        saved = Saved(
            id=self.id, task=self.spec.id, backend=self.backend, workspace=str(self.workspace),
            limits=self.limits, seed=self.seed, run=self.run, image=self.image,
            max_steps=self.max_steps, step=self.step, state=self.state,
            exit_status=self.exit_status, created=self.created,
            open_file=(aci.open_file or "") if aci else "",
            first_line=aci.first_line if aci else 1, cwd=aci.cwd if aci else self.inside,
            attempts=[dataclasses.asdict(a) for a in self.attempts],
            evaluated=list(self._evaluated), token=self.token,
        )
        line = msgspec.json.encode(saved) + b"\n"
        path = self.root / SAVED_FILE
        if self._journal is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            self._journal = os.open(path, flags, 0o600)
            self._journal_bytes = os.fstat(self._journal).st_size
        os.write(self._journal, line)
        self._journal_bytes += len(line)
        if self._journal_bytes > SAVED_COMPACT_BYTES:  # keep only the last record
            tmp = self.root / f"{SAVED_FILE}.tmp"
            tmp.write_bytes(line)
            os.replace(tmp, path)
            os.close(self._journal)
            self._journal = None

    def _close_journal(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None

    async def suspend(self) -> None:
        """Stop the sandbox but leave the session open on disk, for a server started later with
        `--adopt` (a server shutting down; SessionClose closes for good)."""
        if self.state == "open" and self.root.is_dir():
            self.save()
        self._close_journal()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self.disk is not None:  # unmounted, its image kept: adopting mounts it again
            await self.disk.release(keep=True)

    async def close(self) -> None:
        if self.state not in ("submitted", "truncated"):
            self.state = "closed"
        if self.root.is_dir():
            self.save()
        self._close_journal()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self.disk is not None:
            await self.disk.release(keep=self.keep_disk)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ observations

    @property
    def inside(self) -> str:
        """The workspace as the agent's commands see it (WORKSPACE, or the host folder where
        the local sandbox runs without namespaces: see sandbox/nobwrap.py)."""
        return self.sandbox.workspace_inside if self.sandbox is not None else WORKSPACE

    def initial_observation(self) -> str:
        return (
            f"{self.spec.full_description().strip()}\n\n"
            f"Your workspace is {self.inside}. The submission artefact is `{self.spec.files.submission}`; "
            "use `validate` to score it without ending the episode and `submit` to finish.\n"
            + self.state_lines()
        )

    def state_lines(self) -> str:
        open_file, cwd = ("", self.inside)
        if self.aci is not None:
            open_file, cwd = self.aci.state().open_file or "", self.aci.cwd
        return format_state(self.step, self.max_steps - self.step, open_file, cwd)

    def info(self) -> p.SessionInfo:
        best: dict[str, float] = {}
        for a in self.attempts:
            for k, v in a.scores.items():
                better = self._better(k, v, best.get(k))
                if better:
                    best[k] = v
        return p.SessionInfo(
            session=self.id, task=self.spec.id, backend=self.backend, workdir=str(self.workspace),
            step=self.step, max_steps=self.max_steps, state=self.state,
            open_file=(self.aci.state().open_file or "") if self.aci else "",
            best_scores=best, created=self.created,
            warning=(self.sandbox.warning or "") if self.sandbox is not None else "",
            workspace=self.inside,
        )

    def _better(self, metric: str, value: float, current: float | None) -> bool:
        if current is None:
            return True
        try:
            direction = self.spec.metric(metric).direction
        except KeyError:
            return False
        return value > current if direction == "max" else value < current

    # ------------------------------------------------------------------ actions

    def _check_open(self) -> None:
        if self.state in ("submitted", "truncated"):
            raise SessionError("episode_over", f"session {self.id} has ended ({self.exit_status}); open a new one")
        if self.state != "open" or self.aci is None:
            raise SessionError("not_open", f"session {self.id} is {self.state}")

    async def act(self, command: str, *, timeout_s: float = 0.0, background: bool = False,
                  agent: str = "") -> p.Observation:
        return await self._do(lambda: self._run_text(command, timeout_s, background), command, agent)

    async def tool_call(self, tool: str, args: dict[str, Any], *, timeout_s: float = 0.0,
                        agent: str = "") -> p.Observation:
        label = f"{tool} {args}" if args else tool
        return await self._do(lambda: self.aci.call(tool, args, timeout_s or None), label, agent)  # type: ignore[union-attr]

    async def _run_text(self, command: str, timeout_s: float, background: bool):
        assert self.aci is not None
        if background:
            return await self._background(command)
        return await self.aci.run(command, timeout_s or None)

    async def _do(self, action: Callable[[], Awaitable[Any]], label: str, agent: str) -> p.Observation:
        async with self._lock:
            self._check_open()
            self.step += 1
            self.last_agent = agent
            step = self.step
            self.save()  # a server that dies during the action comes back at this step
            await self._emit("command", p.CommandEvent(session=self.id, step=step, command=label, agent=agent))
            self._pending_scores: dict[str, float] = {}
            result = await action()
            done = result.action == "submit" or self.state == "submitted"
            truncated = False
            output = result.output
            auto_text = ""
            if not done and self.step >= self.max_steps:
                # the step's own output stays as it is (MLGym ends the episode on the next
                # step with "Exited (max_steps)"); that text goes to info["autosubmission"]
                await self._evaluate("autosubmit")
                auto_text = "Exited (max_steps)"
                done, truncated = True, True
                self.state = "truncated"
            obs = p.Observation(
                session=self.id, output=output, exit_code=result.exit_code, step=step,
                remaining_steps=max(self.max_steps - step, 0), done=done, truncated=truncated,
                scores=dict(self._pending_scores), baseline=dict(self.spec.baseline.scores),
                info={
                    "open_file": (self.aci.state().open_file or "") if self.aci else "",
                    "cwd": self.aci.cwd if self.aci else self.inside,
                    "action": result.action or "",
                    "exit_status": self.exit_status,
                    "state": self.state,
                    **({"autosubmission": auto_text} if auto_text else {}),
                    **({"error": self.attempts[-1].error} if result.action in ("validate", "submit") and self.attempts and self.attempts[-1].error else {}),
                },
            )
            self.save()
            await self._emit("observation", p.ObservationEvent(session=self.id, step=step, output=output[-20000:], exit_code=result.exit_code))
            return obs

    # ------------------------------------------------------------------ ACI callbacks

    async def _shell(self, command: str, timeout: float | None = None):
        assert self.sandbox is not None
        job = f"step{self.step}"
        offset = 0

        async def chunk(text: str) -> None:
            nonlocal offset
            await self._emit("output", p.OutputChunk(session=self.id, job=job, offset=offset, data=text))
            offset += len(text)

        result = await self.sandbox.exec(command, timeout=timeout or self.command_timeout,
                                         on_output=chunk if self._publish else None)
        full = self.disk is not None and await asyncio.to_thread(self.disk.full)
        if full or "No space left on device" in result.output:
            result.output += self._space_note()
        return result

    def _space_note(self) -> str:
        """What filled up, for an observation: the session's disk, or /tmp (memory)."""
        tmp = self.sandbox.config.tmp_size_mb if self.sandbox is not None else 0
        disk = ""
        if self.disk is not None and self.disk.mounted:
            used, total = self.disk.usage()
            disk = (f"the workspace and job logs share a disk of {total / 2**20:.0f} MB, "
                    f"{used / 2**20:.0f} MB used")
        else:
            disk = "the workspace disk has no fixed size here"
        return (f"\n[No space left: {disk}; /tmp and /var/tmp hold {tmp} MB each (memory). "
                "Delete files you no longer need to go on.]")

    async def _background(self, command: str):
        assert self.sandbox is not None
        offsets: dict[str, int] = {}
        job_ref: list[str] = []

        async def chunk(text: str) -> None:
            job = job_ref[0] if job_ref else "job"
            await self._emit("output", p.OutputChunk(session=self.id, job=job, offset=offsets.get(job, 0), data=text))
            offsets[job] = offsets.get(job, 0) + len(text)

        try:
            job = await self.sandbox.start_background(command, on_output=chunk)
        except SandboxError as exc:  # e.g. a full disk: the job's files cannot be written
            note = self._space_note() if self.disk is not None and self.disk.full() else ""
            return ToolResult(output=f"{exc}{note}", exit_code=1, action=None)
        job_ref.append(job)
        status = await self.sandbox.job_status(job)
        return ToolResult(
            output=f"Started background job {job}: {command}\nIts output is logged to {status.get('log_path')}; "
            f"read it with `tail -n 50 {status.get('log_path')}`.",
            exit_code=0, action=None, data={"job": job},
        )

    async def _validate(self) -> ToolResult:
        outcome = await self._evaluate("validate")
        return ToolResult(output=self._score_text(outcome, "validate"),
                          exit_code=0 if outcome.ok else 1,
                          action="validate", data={"scores": outcome.scores, "error": outcome.error})

    async def _submit(self) -> ToolResult:
        outcome = await self._evaluate("submit")
        self.state = "submitted"
        return ToolResult(output=self._score_text(outcome, "submit"),
                          exit_code=0 if outcome.ok else 1,
                          action="submit", data={"scores": outcome.scores, "error": outcome.error})

    async def _evaluate(self, action: str) -> evaluation.EvalOutcome:
        assert self.sandbox is not None
        started = time.monotonic()
        seed = self.spec.evaluation.seed if action == "validate" else self.final_seed
        scratch = self.root / "eval"
        scratch.mkdir(exist_ok=True)
        staged = scratch / f"artefact-{self.step}"
        staged.mkdir(exist_ok=True)
        try:
            artefact = await asyncio.to_thread(
                evaluation.copy_artefact, self.workspace, self.spec.files.submission, staged,
                self.spec.files.submission_kind,
            )
        except (FileNotFoundError, SandboxPathError, ValueError, OSError) as exc:
            outcome = evaluation.EvalOutcome(
                error={"code": "submission_not_found",
                       "message": f"No valid submission artefact at {self.inside}/{self.spec.files.submission}: {exc}"},
                seconds=time.monotonic() - started,
            )
        else:
            outcome = await evaluation.evaluate(
                sandbox=self.sandbox, task=self.task.task, prepared=self.task.prepared, artefact=artefact,
                timeout_s=self.spec.evaluation.timeout_s, seed=seed, scratch=scratch,
            )
            if self.spec.files.submission_kind == "file":
                await asyncio.to_thread(self._keep_evaluated, artefact, self.step)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self.attempts.append(Attempt(self.step, action, outcome.scores, outcome.error, outcome.seconds,
                                     seed=seed))
        self._pending_scores = dict(outcome.scores)
        if action in ("submit", "autosubmit"):
            if outcome.ok:
                self.exit_status = "submitted" if action == "submit" else "autosubmission"
            else:
                self.exit_status = (
                    "submission_not_found" if outcome.error and outcome.error["code"] == "submission_not_found"
                    else "evaluation_format_error"
                )
        await self._emit(
            "score",
            p.ScoreEvent(session=self.id, step=self.step, action=action, scores=outcome.scores,
                         baseline=dict(self.spec.baseline.scores),
                         error=(outcome.error or {}).get("message", ""), seed=seed),
            acked=True,
        )
        return outcome

    def _score_text(self, outcome: evaluation.EvalOutcome, action: str) -> str:
        """The observation of `validate` / `submit`, worded as MLGym's (docs/aci.md)."""
        if action != "validate":
            return f"Exited ({action})"  # the episode is over; the scores are in the Observation
        if outcome.ok:
            baseline = dict(self.spec.baseline.scores)
            return (f"Your code produced a valid submission artefact at {self.inside}/"
                    f"{self.spec.files.submission}.\nBaseline Score: {baseline}"
                    f"\nEvaluation Score: {outcome.scores}")
        assert outcome.error is not None
        if outcome.error["code"] == "submission_not_found":
            return ("Submission artefact not found. You have to produce a valid submission "
                    "artefact as described in the task description to validate your results.")
        return ("Failed to decode metrics from evaluation script. Output:\n---\n"
                f"{outcome.error['code']}: {outcome.error['message']}\n---\n"
                "Please make sure the evaluation script prints the metrics in json format.")

    # ------------------------------------------------------------------ files

    async def read_file(self, path: str, max_bytes: int = 0, offset: int = 0) -> p.FileContent:
        """`max_bytes` of the file (0: all) from `offset`, never more than the server's cap:
        the client's number is a request, not an order."""
        assert self.sandbox is not None
        limit = min(max_bytes, MAX_READ_BYTES) if max_bytes > 0 else MAX_READ_BYTES
        data, size = await self.sandbox.read_file_head(path, limit, offset)
        return p.FileContent(session=self.id, path=path, data=data, size=size,
                             truncated=max(offset, 0) + len(data) < size)

    def _keep_evaluated(self, artefact: Path, step: int) -> None:
        """Keep the exact bytes that were scored, for read_artefact; only the last few."""
        self._evaluated_path(step).parent.mkdir(exist_ok=True)
        os.replace(artefact, self._evaluated_path(step))
        self._evaluated.append(step)
        while len(self._evaluated) > KEEP_EVALUATED:
            self._evaluated_path(self._evaluated.pop(0)).unlink(missing_ok=True)

    def _evaluated_path(self, step: int) -> Path:
        return self.root / "evaluated" / f"step-{step}"

    async def read_artefact(self, step: int) -> p.FileContent:
        path = self._evaluated_path(step)
        if step not in self._evaluated or not path.is_file():
            kept = ", ".join(map(str, self._evaluated)) or "none"
            raise SessionError("not_found", f"no evaluated artefact kept for step {step} (kept: {kept})")
        data = await asyncio.to_thread(path.read_bytes)
        return p.FileContent(session=self.id, path=self.spec.files.submission, data=data, size=len(data))

    async def write_file(self, path: str, data: bytes) -> p.FileWritten:
        assert self.sandbox is not None
        self._check_open()
        if self.aci is not None and self.aci.is_read_only(path):  # one truth with the editor
            raise SessionError("read_only",
                               f"{path} is a read-only task file; it cannot be written")
        await self.sandbox.write_file(path, data)
        return p.FileWritten(session=self.id, path=path, size=len(data))

    # ------------------------------------------------------------------ events

    async def _emit(self, kind: str, body: p.Body, acked: bool = False) -> None:
        if self._publish is None:
            return
        try:
            await self._publish(f"env/{self.id}/{kind}", body, acked)  # type: ignore[call-arg]
        except Exception as exc:  # the bus being down must not break the episode
            logger.warning("could not publish session event", session=self.id, kind=kind, error=str(exc))
