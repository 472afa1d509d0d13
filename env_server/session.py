"""One session = one task instance: a workspace, a sandbox, ACI state, a step counter, budgets.

The session owns the rules of an episode: every action is a step; `validate` evaluates and
goes on; `submit` evaluates and ends; when the step budget runs out the last artefact is
auto-submitted and the episode is truncated. Scores come from the evaluation sandbox
(env_server/evaluation.py), never from the agent's own output.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.bus import protocol as p
from mlgym.env_server import evaluation, taskinfo
from mlgym.env_server.sandbox import WORKSPACE, Sandbox, SandboxConfig, SandboxPathError, create
from mlgym.tools.aci import ACI, ToolResult
from mlgym.tools.turn import format_state

logger = log.get(__name__)

Publish = Callable[[str, p.Body], Awaitable[None]]

DEFAULT_COMMAND_TIMEOUT = 1800.0  # MLGym's training timeout for most tasks
FILE_WRITING_TOOLS = {"create", "edit", "insert"}  # ACI tools that write on the host side
KEEP_EVALUATED = 8  # evaluated file artefacts kept per session for read_artefact


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


class Session:
    def __init__(
        self,
        sid: str,
        task: taskinfo.TaskHandle,
        root: Path,
        *,
        backend: str = "local",
        limits: p.Limits = p.Limits(),
        seed: int = 0,
        run: str = "",
        publish: Publish | None = None,
        sandbox_factory: Callable[[str, SandboxConfig], Sandbox] = create,
        image: str = "",
    ):
        self.id = sid
        self.task = task
        self.spec = task.spec
        self.root = root
        self.workspace = root / "workspace"
        self.backend = backend
        self.seed = seed
        self.run = run
        self.max_steps = limits.max_steps or self.spec.limits.max_steps
        self.command_timeout = limits.command_timeout_s or self.spec.limits.training_timeout_s or DEFAULT_COMMAND_TIMEOUT
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

    # ------------------------------------------------------------------ lifecycle

    def sandbox_config(self, readonly: list[tuple[Path, str]]) -> SandboxConfig:
        return SandboxConfig(
            workspace=self.workspace,
            readonly=readonly,
            python_env=taskinfo.task_python_env() if self.backend == "local" else None,
            image=self.image,
            network=self.limits.network,
            memory_mb=self.limits.memory_mb or self.spec.limits.memory_mb,
            cpu_seconds=self.limits.cpu_seconds,
            max_processes=self.limits.max_processes or 512,
            state_dir=self.root / "state",
        )

    async def open(self, templates: Path, pool: Any = None) -> str:
        """Lay out the workspace from the task template and start (or take from `pool`) a
        sandbox for it."""
        template, readonly = await asyncio.to_thread(self.task.template, templates)
        self.root.mkdir(parents=True, exist_ok=True)
        if pool is not None:
            self.sandbox = await pool.acquire(prepare=lambda ws: self.task.copy_template(template, ws))
            self.workspace = self.sandbox.config.workspace
        else:
            await asyncio.to_thread(self.task.copy_template, template, self.workspace)
            (self.root / "state").mkdir(parents=True, exist_ok=True)
            self.sandbox = self._sandbox_factory(self.backend, self.sandbox_config(readonly))
            await self.sandbox.start()
        window = self.limits.window or 1000
        self.aci = ACI(
            self.workspace,
            inside_root=self.inside,
            shell=self._shell,
            validate=self._validate,
            submit=self._submit,
            window=window,
            command_timeout=self.command_timeout,
        )
        self.state = "open"
        return self.initial_observation()

    async def close(self) -> None:
        if self.state not in ("submitted", "truncated"):
            self.state = "closed"
        if self.sandbox is not None:
            await self.sandbox.stop()

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
            await self._emit("command", p.CommandEvent(session=self.id, step=step, command=label, agent=agent))
            self._pending_scores: dict[str, float] = {}
            result = await action()
            if label.split(" ", 1)[0].split("\n", 1)[0] in FILE_WRITING_TOOLS:
                fix = getattr(self.sandbox, "fix_ownership", None)  # docker: files the host wrote
                if fix is not None:
                    await fix()
            done = result.action == "submit" or self.state == "submitted"
            truncated = False
            output = result.output
            if not done and self.step >= self.max_steps:
                auto = await self._evaluate("autosubmit")
                output += "\n\n" + self._score_text(auto, autosubmit=True)
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
                    **({"error": self.attempts[-1].error} if result.action in ("validate", "submit") and self.attempts and self.attempts[-1].error else {}),
                },
            )
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

        return await self.sandbox.exec(command, timeout=timeout or self.command_timeout,
                                       on_output=chunk if self._publish else None)

    async def _background(self, command: str):
        assert self.sandbox is not None
        offsets: dict[str, int] = {}
        job_ref: list[str] = []

        async def chunk(text: str) -> None:
            job = job_ref[0] if job_ref else "job"
            await self._emit("output", p.OutputChunk(session=self.id, job=job, offset=offsets.get(job, 0), data=text))
            offsets[job] = offsets.get(job, 0) + len(text)

        job = await self.sandbox.start_background(command, on_output=chunk)
        job_ref.append(job)
        status = await self.sandbox.job_status(job)
        return ToolResult(
            output=f"Started background job {job}: {command}\nIts output is logged to {status.get('log_path')}; "
            f"read it with `tail -n 50 {status.get('log_path')}`.",
            exit_code=0, action=None, data={"job": job},
        )

    async def _validate(self) -> ToolResult:
        outcome = await self._evaluate("validate")
        return ToolResult(output=self._score_text(outcome), exit_code=0 if outcome.ok else 1,
                          action="validate", data={"scores": outcome.scores, "error": outcome.error})

    async def _submit(self) -> ToolResult:
        outcome = await self._evaluate("submit")
        self.state = "submitted"
        return ToolResult(output=self._score_text(outcome, final=True), exit_code=0 if outcome.ok else 1,
                          action="submit", data={"scores": outcome.scores, "error": outcome.error})

    async def _evaluate(self, action: str) -> evaluation.EvalOutcome:
        assert self.sandbox is not None
        started = time.monotonic()
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
                timeout_s=self.spec.evaluation.timeout_s, seed=self.spec.evaluation.seed, scratch=scratch,
            )
            if self.spec.files.submission_kind == "file":
                await asyncio.to_thread(self._keep_evaluated, artefact, self.step)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self.attempts.append(Attempt(self.step, action, outcome.scores, outcome.error, outcome.seconds))
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
                         error=(outcome.error or {}).get("message", "")),
            acked=True,
        )
        return outcome

    def _score_text(self, outcome: evaluation.EvalOutcome, *, final: bool = False, autosubmit: bool = False) -> str:
        head = ""
        if autosubmit:
            head = f"Step budget exhausted ({self.max_steps} steps): the current artefact was submitted automatically.\n"
        if not outcome.ok:
            assert outcome.error is not None
            return head + f"Evaluation failed ({outcome.error['code']}): {outcome.error['message']}"
        verb = "submitted" if final or autosubmit else "validated"
        return (
            head
            + f"Your {verb} artefact {self.inside}/{self.spec.files.submission} was evaluated.\n"
            + f"Baseline Score: {dict(self.spec.baseline.scores)}\n"
            + f"Evaluation Score: {outcome.scores}"
        )

    # ------------------------------------------------------------------ files

    async def read_file(self, path: str, max_bytes: int = 0) -> p.FileContent:
        assert self.sandbox is not None
        data = await self.sandbox.read_file(path)
        size = len(data)
        truncated = bool(max_bytes) and size > max_bytes
        return p.FileContent(session=self.id, path=path, data=data[:max_bytes] if truncated else data,
                             size=size, truncated=truncated)

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
