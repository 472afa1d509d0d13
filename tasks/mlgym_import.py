"""MLGym's own tasks as task folders of ours: `mlgym tasks import-mlgym CHECKOUT [TASK...]`.

An MLGym checkout describes a task by `configs/tasks/<name>.yaml` (id, name, description with a
`{dataset_docs}` slot, dataset configs, task_entrypoint, training_timeout, starter_code,
baseline_paths, baseline_scores, evaluation_paths, evaluation_read_only, secret_files,
requirements_path) and each dataset by `configs/datasets/<name>.yaml` (name, description,
data_path, is_local). MLGym lays out the agent's workspace from them: the starter files at its
root, a local dataset's folder as `data/` (read-only), the evaluation scripts read-only when
`evaluation_read_only`. The import writes the same workspace into `<out>/<id>/workspace/`,
the files named in `secret_files` (and `--secret` globs) into `<out>/<id>/secret/` instead,
and a task.toml whose evaluator runs MLGym's evaluation script as MLGym does
(tasks/_common/mlgym_eval.py). The description is MLGym's, with the dataset docs filled in.

MLGym's configs do not say which metric ranks the runs or which way is better: the importer
takes them from a task of ours with the same id (or the id it extends, e.g. `...L1`), else
the first baseline metric, higher is better unless its name reads as an error, a loss or a
time; `--metric NAME[:max|min]` decides.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import tomli_w
import yaml

from mlgym.tasks import registry
from mlgym.tasks.spec import (Baseline, Evaluation, Files, Limits, Metric, TaskSpec, TaskSpecError,
                              load_spec)

EVALUATOR = '''"""Evaluator of a task imported from MLGym: runs its MLGym evaluation script as MLGym
does (tasks/_common/mlgym_eval.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))

import mlgym_eval  # noqa: E402
from evalkit import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(mlgym_eval.evaluate))
'''
LOWER_IS_BETTER = re.compile(r"loss|error|rmse|mse|mae|time|perplexity|ppl|regret", re.I)
SUBMISSION = {  # task_entrypoint -> (artefact, kind) in the workspace
    "CSVSubmissionTasks": ("submission.csv", "file"),
    "ModelSubmissionTasks": (".", "dir"),
    "LMSubmissionTasks": (".", "dir"),
    "PythonSubmissionTasks": (".", "dir"),
}


class MlgymImportError(ValueError):
    """An MLGym config that cannot be imported; the message names the file."""


@dataclass
class Imported:
    task_id: str
    path: Path
    notes: list[str] = field(default_factory=list)


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MlgymImportError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise MlgymImportError(f"{path}: not a YAML mapping")
    return data


def task_configs(checkout: Path) -> dict[str, Path]:
    """Task id -> config file, for every configs/tasks/*.yaml of the checkout. The id is the
    config's `id`; where several configs share one (MLGym's `imageClassificationCifar10L1.yaml`
    reuses `imageClassificationCifar10`), the others are known by their file name."""
    folder = checkout / "configs" / "tasks"
    if not folder.is_dir():
        raise MlgymImportError(f"{checkout}: no configs/tasks/ folder (is it an MLGym checkout?)")
    entries = [(path, _yaml(path).get("id")) for path in sorted(folder.glob("*.y*ml"))]
    entries = [(path, tid) for path, tid in entries if isinstance(tid, str) and tid]
    ids = [tid for _, tid in entries]
    return {tid if ids.count(tid) == 1 or path.stem == tid else path.stem: path
            for path, tid in entries}


def _inside(checkout: Path, rel: str, what: str, config: Path) -> Path:
    path = (checkout / rel).resolve()
    if not path.is_relative_to(checkout.resolve()):
        raise MlgymImportError(f"{config}: {what} {rel!r} lies outside the checkout")
    if not path.exists():
        raise MlgymImportError(f"{config}: {what} {rel!r} not found in {checkout}")
    return path


def _known_metric(task_id: str, names: list[str]) -> tuple[str, str] | None:
    """Priority metric and direction from a task of ours with this id, or one it extends."""
    candidates = [t for t in registry.task_ids(registry.TASKS_ROOT) if task_id.startswith(t)]
    for tid in sorted(candidates, key=len, reverse=True):
        spec = registry.load_task(tid, registry.TASKS_ROOT).spec
        by_lower = {n.lower(): n for n in names}
        if spec.priority_metric.lower() in by_lower:
            return by_lower[spec.priority_metric.lower()], spec.priority.direction
    return None


def _metrics(task_id: str, scores: dict[str, float], choice: str | None,
             config: Path) -> tuple[list[Metric], str]:
    names = list(scores)
    direction = {n: "min" if LOWER_IS_BETTER.search(n) else "max" for n in names}
    if choice:
        name, _, how = choice.partition(":")
        if name not in scores:
            raise MlgymImportError(f"{config}: --metric {name!r} is not a baseline metric "
                                   f"({names})")
        if how:
            if how not in ("max", "min"):
                raise MlgymImportError(f"--metric {choice!r}: the direction is max or min")
            direction[name] = how
        priority = name
    elif known := _known_metric(task_id, names):
        priority, direction[known[0]] = known
    else:
        priority = names[0]
    metrics = [Metric(name=n, direction=direction[n]) for n in names]  # type: ignore[arg-type]
    return metrics, priority


def _copy(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def _matches(rel: Path, globs: list[str]) -> bool:
    return any(rel.match(g) or rel.as_posix() == g.rstrip("/")
               or any(p.as_posix() == g.rstrip("/") for p in rel.parents) for g in globs)


def import_task(checkout: Path, config: Path, out_root: Path, *, name: str | None = None,
                metric: str | None = None, secret: tuple[str, ...] = (), prefix: str = "",
                force: bool = False) -> Imported:
    """One MLGym task config -> `<out_root>/<prefix><name or its id>/`, checked by load_spec."""
    cfg = _yaml(config)
    for key in ("id", "name", "description"):
        if not isinstance(cfg.get(key), str) or not cfg[key].strip():
            raise MlgymImportError(f"{config}: `{key}` is missing")
    task_id = prefix + (name or cfg["id"])
    if task_id in registry.task_ids(registry.TASKS_ROOT):
        raise MlgymImportError(f"{config}: {task_id!r} is a built-in task; import with --prefix "
                           "(e.g. --prefix mlgym_) to keep both")
    entry = cfg.get("task_entrypoint", "CSVSubmissionTasks")
    if entry not in SUBMISSION:
        raise MlgymImportError(f"{config}: unknown task_entrypoint {entry!r}")
    baselines = cfg.get("baseline_scores") or []
    if not baselines or not isinstance(baselines[0], dict) or not baselines[0]:
        raise MlgymImportError(f"{config}: no baseline_scores; run the baseline in MLGym first "
                               "(the score is the reference AUP needs)")
    scores = {str(k): float(v) for k, v in baselines[0].items()}
    metrics, priority = _metrics(task_id, scores, metric, config)

    dest = out_root / task_id
    if dest.exists() and not force:
        raise MlgymImportError(f"{dest} exists; use --force to replace it")
    work = out_root / f".importing-{task_id}"  # built aside; replaces dest only when valid
    shutil.rmtree(work, ignore_errors=True)
    try:
        notes = _build(checkout, config, cfg, work / task_id, task_id, entry, scores, metrics,
                       priority, secret)
        load_spec(work / task_id)
        if dest.exists():
            os.replace(dest, work / "old")
        os.replace(work / task_id, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Imported(task_id, dest, notes)


def _build(checkout: Path, config: Path, cfg: dict[str, Any], staging: Path, task_id: str,
           entry: str, scores: dict[str, float], metrics: list[Metric], priority: str,
           secret: tuple[str, ...]) -> list[str]:
    """Write the task folder at `staging`; returns notes for the user."""
    ws = staging / "workspace"
    ws.mkdir(parents=True)
    notes: list[str] = []
    docs, read_only = "", []
    for rel in cfg.get("dataset_configs") or []:
        ds = _yaml(_inside(checkout, f"configs/{rel}", "dataset config", config))
        docs += f"{str(ds.get('name', rel)).upper()}:\n{ds.get('description', '')}\n\n"
        if ds.get("is_local"):
            _copy(_inside(checkout, str(ds["data_path"]), "data_path", config), ws / "data")
            read_only = ["data"]
        else:
            notes.append(f"dataset {ds.get('name')!r} is not local ({ds.get('data_path')}): the "
                         "agent's code must fetch it, and the sandbox has no network by default")
    for rel in cfg.get("starter_code") or []:
        src = _inside(checkout, str(rel), "starter_code", config)
        _copy(src, ws / src.name)
    evaluation = [str(p) for p in cfg.get("evaluation_paths") or []]
    if not evaluation:
        raise MlgymImportError(f"{config}: no evaluation_paths")
    for rel in evaluation:
        if not (ws / rel).is_file():
            raise MlgymImportError(f"{config}: evaluation script {rel!r} is not among the "
                                   "starter files")
    if cfg.get("evaluation_read_only"):
        read_only += evaluation
    hidden = [str(p) for p in cfg.get("secret_files") or []] + list(secret)
    for path in sorted(ws.rglob("*")):
        rel = path.relative_to(ws)
        if path.is_file() and _matches(rel, hidden):
            _copy(path, staging / "secret" / rel)
            path.unlink()
    if hidden and not (staging / "secret").exists():
        notes.append(f"no workspace file matched the secret files {hidden}")
    if cfg.get("requirements_path"):
        req = _inside(checkout, str(cfg["requirements_path"]), "requirements_path", config)
        shutil.copyfile(req, staging / "requirements.txt")
        notes.append(f"{task_id} lists its Python requirements in requirements.txt beside its "
                     "task.toml: install them into the task environment")
    commands = [f"python {p}" for p in cfg.get("baseline_paths") or [] if str(p) not in evaluation]
    artefact, kind = SUBMISSION[entry]
    timeout = float(cfg.get("training_timeout") or 1800)
    description = cfg["description"].replace("{dataset_docs}", docs)
    spec = TaskSpec(
        id=task_id, name=cfg["name"], description=description, suites=["imported"],
        metrics=metrics, priority_metric=priority,
        baseline=Baseline(scores=scores, commands=commands,
                          source=f"MLGym config {config.name}: baseline_scores"),
        files=Files(read_only=read_only, secret=["secret"] if (staging / "secret").exists() else [],
                    submission=artefact, submission_kind=kind),  # type: ignore[arg-type]
        evaluation=Evaluation(timeout_s=timeout, workspace_mount=True),
        limits=Limits(training_timeout_s=timeout),
        params={"mlgym_entrypoint": entry, "mlgym_evaluation_script": evaluation[0],
                "mlgym_evaluation_timeout_s": timeout, "mlgym_config": config.name},
    )
    (staging / "evaluator.py").write_text(EVALUATOR)
    raw = {k: v for k, v in msgspec.to_builtins(spec).items() if v not in ("", [], {}, None)}
    (staging / "task.toml").write_text(
        f"# Imported from MLGym ({config.name}) by `mlgym tasks import-mlgym`.\n"
        + tomli_w.dumps(raw, multiline_strings=True))
    return notes


def import_tasks(checkout: Path, ids: list[str], out_root: Path,
                 **kw: Any) -> tuple[list[Imported], dict[str, str]]:
    """Import the named tasks (all of the checkout's when `ids` is empty): the imported ones,
    and task id -> why for the ones that could not be (the others are imported all the same)."""
    configs = task_configs(checkout)
    unknown = [t for t in ids if t not in configs]
    if unknown:
        raise MlgymImportError(f"{checkout}: no task config with id {', '.join(unknown)} "
                               f"(found: {', '.join(configs) or 'none'})")
    out_root.mkdir(parents=True, exist_ok=True)
    builtin = registry.task_ids(registry.TASKS_ROOT)
    chosen = ids or [t for t in configs if kw.get("prefix") or t not in builtin]
    done: list[Imported] = []
    failed: dict[str, str] = {}
    for t in chosen:
        try:
            done.append(import_task(checkout, configs[t], out_root, name=t, **kw))
        except (MlgymImportError, TaskSpecError) as exc:
            failed[t] = str(exc)
    if not ids and len(chosen) < len(configs):
        skipped = sorted(set(configs) - set(chosen))
        failed["(built-in ids)"] = (f"left out, as built-in tasks have these ids (use --prefix to "
                                    f"import them too): {', '.join(skipped)}")
    return done, failed
