"""Evaluation that the agent cannot tamper with.

`validate` and `submit` copy the submission artefact OUT of the agent's workspace (refusing
symlinks and anything outside it) into a fresh folder beside pristine copies of the task's files
and its secret data, and run the task's evaluator there in a NEW sandbox with a time limit. The
evaluator writes its scores as JSON to a file: scores are never parsed from stdout.

Layout inside the evaluation sandbox (all under /eval, a fresh copy per evaluation):
  /eval/tasks/<id>/    the task folder as shipped (evaluator), never the agent's copies
  /eval/tasks/_common/ helpers the evaluators share
  /eval/secret/        prepared secret data (test labels, opponent code)
  /eval/submission/    the copied artefact
  /eval/out/           scores.json is written here
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgym import log
from mlgym.env_server.sandbox import WORKSPACE, Mount, Sandbox, SandboxPathError
from mlgym.env_server.sandbox.base import host_path
from mlgym.tasks import registry
from mlgym.tools import safefs

logger = log.get(__name__)

EVAL_ROOT = "/eval"
MAX_ARTEFACT_BYTES = 2 * 1024**3


@dataclass
class EvalOutcome:
    scores: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None  # {"code", "message"}
    seconds: float = 0.0
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "error": self.error, "seconds": round(self.seconds, 3)}


def copy_artefact(workspace: Path, rel: str, dest: Path, kind: str = "file") -> Path:
    """Copy the submission artefact `rel` out of the workspace into `dest`. Every file is
    opened from the workspace folder down without following a symlink and only when it is a
    regular file (tools/safefs.py), so a link or FIFO swapped in while the copy runs is refused,
    never followed; links inside a folder artefact are left out. Returns the copied path."""
    src = host_path(workspace, rel)  # refuses `..`, absolute paths and symlink escapes
    root = Path(os.path.realpath(workspace))
    inner = src.relative_to(root)
    target = dest / Path(rel).name
    try:
        if kind == "file":
            fd = safefs.open_file(root, inner, os.O_RDONLY)
            with os.fdopen(fd, "rb") as f:
                _copy_bounded(f, target, 0, rel)
            return target
        try:
            top = safefs.open_dir(root, inner)
        except NotADirectoryError:
            raise FileNotFoundError(f"{rel} is not a folder") from None
        try:
            target.mkdir(exist_ok=target == dest)  # `.`: the whole workspace, into dest
            total = 0
            for path, dirfd, name in safefs.walk_files(top):
                try:
                    fd = safefs.open_file(dirfd, name, os.O_RDONLY)
                except safefs.UnsafePath:
                    continue  # a link, FIFO or device inside the folder: not part of it
                out = target / path
                out.parent.mkdir(parents=True, exist_ok=True)
                with os.fdopen(fd, "rb") as f:
                    total = _copy_bounded(f, out, total, rel)
        finally:
            os.close(top)
        return target
    except safefs.UnsafePath as exc:
        raise SandboxPathError(f"{rel}: {exc.why}") from None


def _copy_bounded(src: Any, out: Path, total: int, rel: str) -> int:
    """Copy an open file to `out`, refusing artefacts over MAX_ARTEFACT_BYTES in all."""
    with open(out, "wb") as f:
        while chunk := src.read(1 << 20):
            total += len(chunk)
            if total > MAX_ARTEFACT_BYTES:
                raise ValueError(f"{rel} holds more than {MAX_ARTEFACT_BYTES} bytes")
            f.write(chunk)
    return total


async def evaluate(
    *,
    sandbox: Sandbox,
    task: registry.Task,
    prepared: registry.PreparedTask,
    artefact: Path,
    timeout_s: float,
    seed: int = 0,
    scratch: Path | None = None,
) -> EvalOutcome:
    """Run the evaluator on an artefact already copied out of the workspace (see
    copy_artefact) in a fresh sandbox; return structured scores or a typed error."""
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="mlgym-eval-", dir=scratch))
    try:
        layout = registry.evaluation_layout(task, prepared, base)
        sub = base / "submission"
        sub.mkdir()
        name = artefact.name
        if artefact.is_dir():
            shutil.copytree(artefact, sub / name)
        else:
            shutil.copyfile(artefact, sub / name)
        (base / "out").mkdir()
        for p in [base, *base.rglob("*")]:  # the sandbox may run as another uid
            try:
                os.chmod(p, 0o777 if p.is_dir() else 0o666)
            except OSError:
                pass

        def inside(path: Path) -> Path:
            return Path(EVAL_ROOT) / path.relative_to(base)

        argv = registry.evaluation_command(
            task, registry.EvaluationLayout(
                root=Path(EVAL_ROOT), task_dir=inside(layout.task_dir), common_dir=inside(layout.common_dir),
                secret_dir=inside(layout.secret_dir), entry=inside(layout.entry)),
            "python", Path(EVAL_ROOT) / "submission" / name, Path(EVAL_ROOT) / "out" / "scores.json", seed,
        )
        mounts = [Mount(base, EVAL_ROOT, writable=True)]
        if task.spec.evaluation.workspace_mount:  # an imported MLGym task: its scripts use it
            (base / "workspace").mkdir(mode=0o777)
            os.chmod(base / "workspace", 0o777)
            mounts.append(Mount(base / "workspace", WORKSPACE, writable=True))
        result = await sandbox.run_isolated(
            argv, timeout=timeout_s, mounts=mounts, cwd=str(inside(layout.task_dir))
        )
        seconds = time.monotonic() - started
        tail = result.output[-2000:]
        if result.timed_out:
            return EvalOutcome(
                error={"code": "evaluation_timeout", "message": f"evaluation took longer than {timeout_s:.0f} s"},
                seconds=seconds, log_tail=tail,
            )
        out = base / "out" / "scores.json"
        try:
            data = json.loads(out.read_text())
        except FileNotFoundError:
            return EvalOutcome(
                error={
                    "code": "evaluator_crashed",
                    "message": f"the evaluator exited with code {result.exit_code} without writing scores; "
                    f"last output:\n{tail.strip()[-800:]}",
                },
                seconds=seconds, log_tail=tail,
            )
        except ValueError as exc:
            return EvalOutcome(error={"code": "evaluator_output", "message": f"unreadable scores file: {exc}"},
                               seconds=seconds, log_tail=tail)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            return EvalOutcome(error={"code": str(err.get("code", "invalid_submission")),
                                      "message": str(err.get("message", ""))}, seconds=seconds, log_tail=tail)
        scores = data.get("scores") if isinstance(data, dict) else None
        if not isinstance(scores, dict) or not scores:
            return EvalOutcome(error={"code": "evaluator_output", "message": "the evaluator wrote no scores"},
                               seconds=seconds, log_tail=tail)
        clean: dict[str, float] = {}
        for k, v in scores.items():
            try:
                clean[str(k)] = float(v)
            except (TypeError, ValueError):
                continue
        return EvalOutcome(scores=clean, seconds=seconds, log_tail=tail)
    finally:
        shutil.rmtree(base, ignore_errors=True)
