"""Evaluator of the tasks imported from MLGym (`mlgym tasks import-mlgym`): runs the task's own
MLGym evaluation script the way MLGym runs it, and reads its metrics the way MLGym reads them.

MLGym evaluates inside the agent's workspace (`/home/agent/workspace`): `python evaluate.py
--submission_file <ws>/submission.csv` (CSV tasks), `python evaluate.py --config_fname
<first *.yaml>` (model tasks), `torchrun --nproc_per_node=N --standalone evaluate.py` (language
models), `python evaluate.py` (Python code tasks); the metrics are the first line of its
output that starts with `{`. Here the workspace is rebuilt for the evaluation: the task's
starter files, then the agent's artefact over them, then the read-only files (pristine) and
the secret files (which never were in the agent's workspace) over that. When the evaluation
sandbox provides `/home/agent/workspace` (`[evaluation] workspace_mount`), that is the
folder, so scripts with MLGym's absolute paths work; elsewhere a scratch folder.

Trust: MLGym's evaluation scripts import the agent's code in their own process, so an
imported task keeps MLGym's trust model (the built-in tasks confine agent code instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from evalkit import Args, EvalError, params

WORKSPACE = Path("/home/agent/workspace")
COMMANDS = {  # MLGym's task_entrypoint -> how it runs the evaluation script
    "CSVSubmissionTasks": ["{python}", "{script}", "--submission_file", "{submission}"],
    "ModelSubmissionTasks": ["{python}", "{script}", "--config_fname", "{submission}"],
    "LMSubmissionTasks": ["{python}", "-m", "torch.distributed.run", "--nproc_per_node={gpus}",
                          "--standalone", "{script}"],
    "PythonSubmissionTasks": ["{python}", "{script}"],
}


def _workspace() -> Path:
    if WORKSPACE.is_dir() and os.access(WORKSPACE, os.W_OK) and not any(WORKSPACE.iterdir()):
        return WORKSPACE
    return Path(tempfile.mkdtemp(prefix="mlgym-ws-"))


def _overlay(src: Path, dest: Path) -> None:
    """Copy the files under src to the same places under dest (replacing what is there)."""
    if src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        shutil.copyfile(src, dest)
        return
    for path in sorted(src.rglob("*")):
        if path.is_file() and not path.is_symlink():
            _overlay(path, dest / path.relative_to(src))


def _read_only(task_dir: Path) -> list[str]:
    spec = tomllib.loads((task_dir / "task.toml").read_text())
    return list(spec.get("files", {}).get("read_only", []))


def _gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(1, len([line for line in out.splitlines() if line.strip()]))


def metrics_line(output: str) -> dict:
    """The first output line starting with `{`, as JSON (MLGym's rule), numbers only."""
    try:
        line = next(x for x in output.split("\n") if x.strip().startswith("{"))
        data = json.loads(line)
    except (StopIteration, json.JSONDecodeError):
        raise EvalError("evaluation_format_error", "the evaluation script printed no metrics line "
                        "(one JSON object on a line); its output:\n" + output[-3000:]) from None
    if not isinstance(data, dict):
        raise EvalError("evaluation_format_error",
                        f"the metrics line is not an object: {line[:300]}")
    scores = {str(k): float(v) for k, v in data.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not scores:
        raise EvalError("evaluation_format_error",
                        f"the metrics line holds no numbers: {line[:300]}")
    return scores


def evaluate(args: Args) -> dict:
    p = params(args.task_dir)
    entry = str(p.get("mlgym_entrypoint", "CSVSubmissionTasks"))
    if entry not in COMMANDS:
        raise EvalError("evaluator_crash", f"unknown MLGym task_entrypoint {entry!r}")
    script = str(p.get("mlgym_evaluation_script", "evaluate.py"))
    ws = _workspace()
    _overlay(args.task_dir / "workspace", ws)  # the starter files
    sub = Path(args.submission)
    if sub.is_dir():
        _overlay(sub, ws)
    elif sub.is_file():
        _overlay(sub, ws / str(p.get("mlgym_submission", sub.name)))
    else:
        raise EvalError("missing_submission", f"no submission at {sub}")
    for pattern in _read_only(args.task_dir):  # pristine again, whatever the artefact held
        for path in (args.task_dir / "workspace").glob(pattern):
            _overlay(path, ws / path.relative_to(args.task_dir / "workspace"))
    if args.secret.is_dir():
        _overlay(args.secret, ws)
    if entry == "ModelSubmissionTasks":
        found = sorted(ws.rglob("*.yaml"))
        if not found:
            raise EvalError("missing_submission", "No valid submission artefacts found (no *.yaml "
                            "config in the workspace).")
        submission = str(found[0])
    else:
        submission = str(ws / str(p.get("mlgym_submission", "submission.csv")))
        if entry == "CSVSubmissionTasks" and not Path(submission).is_file():
            raise EvalError("missing_submission", "No submission file found. Please make sure that "
                            "your code produces a submission file.")
    argv = [a.format(python=sys.executable, script=ws / script, submission=submission,
                     gpus=_gpus() if entry == "LMSubmissionTasks" else 1)
            for a in COMMANDS[entry]]
    timeout = float(p.get("mlgym_evaluation_timeout_s", 1800))
    try:
        proc = subprocess.run(argv, cwd=ws, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EvalError("evaluation_timeout", f"{script} ran longer than {timeout:g} s") from None
    output = proc.stdout + proc.stderr
    return {"scores": metrics_line(proc.stdout if "{" in proc.stdout else output),
            "details": {"entrypoint": entry, "exit_code": proc.returncode}}
