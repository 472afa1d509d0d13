"""The declarative task spec: `tasks/<id>/task.toml`, decoded and validated with msgspec.

A spec says everything the framework needs to run a task without reading its code: what the
agent is told, which files it gets (and may not change), what stays secret, how to prepare the
data, how to evaluate, which metrics count and what the baseline scored. Errors always name the
file and the field (`tasks/x/task.toml: field `$.metrics[0].direction`: ...`) so a broken spec
is fixed in one look. The format is documented in docs/tasks.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec

SUITES = ("full", "lite", "imported")  # imported: made by `mlgym tasks import-mlgym`
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TaskSpecError(ValueError):
    """A task spec that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, field: str, message: str):
        self.path = str(path)
        self.field = field
        super().__init__(f"{path}: field `{field}`: {message}")


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Metric(_Base, kw_only=True):
    """One number the evaluator reports. `direction` says which way is better."""

    name: str
    direction: Literal["max", "min"]
    description: str = ""


REPRODUCE_TOLERANCE = 1e-4  # relative: the float noise of another thread count in evaluation


class Baseline(_Base, kw_only=True):
    """The published baseline (the reference for scoring) and how to reproduce it.

    `commands` run in the workspace (shell, in order) and leave the submission artefact
    behind; empty when the starter files already are the baseline artefact (the games)."""

    scores: dict[str, float]
    commands: list[str] = []
    source: str = ""
    # How far a re-run of `commands` may land from `scores` and still reproduce them, per
    # metric, relative (0.01 = within 1%); a metric not named here: REPRODUCE_TOLERANCE.
    tolerance: dict[str, float] = {}

    def reproduces(self, measured: dict[str, float]) -> dict[str, bool]:
        """Per published metric: does `measured` reproduce it (`mlgym bench tasks`)?"""
        out = {}
        for name, published in self.scores.items():
            got = measured.get(name)
            tol = self.tolerance.get(name, REPRODUCE_TOLERANCE)
            out[name] = got is not None and abs(got - published) <= tol * max(abs(published), 1e-12)
        return out


class Files(_Base, kw_only=True):
    """Paths are relative to the task folder (`workspace`, `secret`) or to the agent's
    workspace (`read_only`, `submission`)."""

    workspace: str = "workspace"  # folder whose contents start the agent's workspace
    read_only: list[str] = []  # workspace globs the agent may read but not change
    secret: list[str] = []  # task-folder paths that never enter the workspace
    submission: str  # the artefact the evaluator scores, relative to the workspace
    submission_kind: Literal["file", "dir"] = "file"


class Evaluation(_Base, kw_only=True):
    """`python <entry> --submission P --secret D --task-dir D --out F --seed N` runs with the
    task venv's python in the evaluation sandbox; it writes `{"scores": {...}}` or
    `{"error": {"code", "message"}}` to `--out`."""

    entry: str = "evaluator.py"
    timeout_s: float = 600.0
    seed: int = 0
    memory_mb: int = 4096
    # the evaluation sandbox also gets an empty, writable /home/agent/workspace (MLGym's
    # evaluation scripts, run by imported tasks, name files by that absolute path)
    workspace_mount: bool = False


class Prepare(_Base, kw_only=True):
    """`python <entry> --task-dir D --public D --secret D [--data-file NAME=PATH ...]` runs once
    with the framework's python and is cached under ~/.mlgym/prepared/<id>/."""

    entry: str = "prepare.py"
    timeout_s: float = 600.0


class DataSource(_Base, kw_only=True):
    """One input file. It is looked up as `<root>/<dir>/<file>` (then `<root>/<task id>/<file>`)
    in each data root (docs/tasks.md) and checked against `sha256`."""

    file: str
    sha256: str
    dir: str = ""  # defaults to the task id
    source: str = ""  # a source id, e.g. "kaggle:titanic"
    url: str = ""
    description: str = ""


class Limits(_Base, kw_only=True):
    """Agent-side budgets and sandbox resources (the paper's defaults unless a task says)."""

    training_timeout_s: float = 1800.0
    max_steps: int = 50
    cost_limit_usd: float = 4.0
    memory_mb: int = 8192
    cpus: float = 2.0
    gpus: int = 0


class TaskSpec(_Base, kw_only=True):
    id: str
    name: str
    description: str  # what the agent is told (markdown)
    dataset_docs: str = ""  # appended to the description under "Data"
    suites: list[str]
    metrics: list[Metric]
    priority_metric: str
    baseline: Baseline
    files: Files
    evaluation: Evaluation = msgspec.field(default_factory=Evaluation)
    prepare: Prepare | None = None
    data: list[DataSource] = []
    requirements: list[str] = []  # import names the task venv must provide (tasks/requirements.txt)
    limits: Limits = msgspec.field(default_factory=Limits)
    params: dict[str, Any] = {}  # task-specific knobs, read by prepare/evaluator from task.toml

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def priority(self) -> Metric:
        return self.metric(self.priority_metric)

    @property
    def baseline_score(self) -> float:
        """The baseline value of the priority metric: the reference for scoring."""
        return self.baseline.scores[self.priority_metric]

    def full_description(self) -> str:
        """The description the agent sees, with the dataset documentation appended."""
        if not self.dataset_docs.strip():
            return self.description.strip() + "\n"
        return f"{self.description.strip()}\n\n## Data\n\n{self.dataset_docs.strip()}\n"


def _inside(base: Path, rel: str) -> bool:
    """True when `rel` is a relative path that stays inside `base` (no `..` escape)."""
    if not rel or Path(rel).is_absolute():
        return False
    return (base / rel).resolve().is_relative_to(base.resolve())


def _check(spec: TaskSpec, path: Path, task_dir: Path) -> None:
    """Checks that need more than types: cross-references and files that must exist."""

    def fail(field: str, message: str) -> None:
        raise TaskSpecError(path, field, message)

    if not TASK_ID.match(spec.id):
        fail("id", f"{spec.id!r} is not a valid task id (letters, digits, _ and -)")
    if spec.id != task_dir.name:
        fail("id", f"{spec.id!r} differs from the folder name {task_dir.name!r}")
    if not spec.name.strip():
        fail("name", "must not be empty")
    if not spec.description.strip():
        fail("description", "must not be empty")
    if not spec.suites:
        fail("suites", "name at least one suite")
    for i, suite in enumerate(spec.suites):
        if suite not in SUITES:
            fail(f"suites[{i}]", f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    if not spec.metrics:
        fail("metrics", "declare at least one metric")
    seen: set[str] = set()
    for i, m in enumerate(spec.metrics):
        if not m.name:
            fail(f"metrics[{i}].name", "must not be empty")
        if m.name in seen:
            fail(f"metrics[{i}].name", f"duplicate metric {m.name!r}")
        seen.add(m.name)
    if spec.priority_metric not in seen:
        fail("priority_metric", f"{spec.priority_metric!r} is not one of the metrics {sorted(seen)}")
    for name in spec.baseline.scores:
        if name not in seen:
            fail(f"baseline.scores.{name}", f"{name!r} is not a declared metric")
    if spec.priority_metric not in spec.baseline.scores:
        fail("baseline.scores", f"missing the priority metric {spec.priority_metric!r}")
    for name, tol in spec.baseline.tolerance.items():
        if name not in spec.baseline.scores:
            fail(f"baseline.tolerance.{name}", f"{name!r} has no baseline score")
        elif not 0 <= tol < float("inf"):
            fail(f"baseline.tolerance.{name}", f"must be a finite number >= 0, got {tol}")
    f = spec.files
    if not _inside(task_dir, f.workspace) or not (task_dir / f.workspace).is_dir():
        fail("files.workspace", f"{f.workspace!r} is not a folder inside {task_dir}")
    if not f.submission or Path(f.submission).is_absolute() or ".." in Path(f.submission).parts:
        fail("files.submission", f"{f.submission!r} must be a relative path inside the workspace")
    for i, rel in enumerate(f.secret):
        if not _inside(task_dir, rel) or not (task_dir / rel).exists():
            fail(f"files.secret[{i}]", f"{rel!r} does not exist inside {task_dir}")
        if (task_dir / rel).resolve().is_relative_to((task_dir / f.workspace).resolve()):
            fail(f"files.secret[{i}]", f"{rel!r} lies inside the workspace folder")
    for i, pattern in enumerate(f.read_only):
        if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            fail(f"files.read_only[{i}]", f"{pattern!r} must be a relative glob")
    if not _inside(task_dir, spec.evaluation.entry) or not (task_dir / spec.evaluation.entry).is_file():
        fail("evaluation.entry", f"{spec.evaluation.entry!r} is not a file in {task_dir}")
    if spec.evaluation.timeout_s <= 0:
        fail("evaluation.timeout_s", "must be positive")
    if spec.prepare is not None:
        if not _inside(task_dir, spec.prepare.entry) or not (task_dir / spec.prepare.entry).is_file():
            fail("prepare.entry", f"{spec.prepare.entry!r} is not a file in {task_dir}")
    names: set[str] = set()
    for i, d in enumerate(spec.data):
        if not SHA256.match(d.sha256):
            fail(f"data[{i}].sha256", "must be 64 lowercase hex digits")
        if not d.file or "/" in d.file or d.file in (".", ".."):
            fail(f"data[{i}].file", f"{d.file!r} must be a plain file name")
        if d.file in names:
            fail(f"data[{i}].file", f"duplicate data file {d.file!r}")
        names.add(d.file)
        if d.dir and (Path(d.dir).is_absolute() or ".." in Path(d.dir).parts):
            fail(f"data[{i}].dir", f"{d.dir!r} must be a relative folder")
    if spec.data and spec.prepare is None:
        fail("prepare", "a task with data sources needs a prepare entry")


def load_spec(task_dir: Path | str) -> TaskSpec:
    """Decode and check `<task_dir>/task.toml`; raise TaskSpecError naming file and field."""
    task_dir = Path(task_dir)
    path = task_dir / "task.toml"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskSpecError(path, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    try:
        spec = msgspec.toml.decode(raw, type=TaskSpec)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = re.search(r" - at `\$\.?(.*)`$", msg)
        field = m.group(1) if m and m.group(1) else "(top level)"
        if m:
            msg = msg[: m.start()]
        named = re.match(r"Object (?:contains unknown|missing required) field `(.+)`", msg)
        if named:  # msgspec puts the offending key in the message, not in the path
            field = f"{field}.{named.group(1)}" if field != "(top level)" else named.group(1)
        raise TaskSpecError(path, field, msg) from exc
    except msgspec.DecodeError as exc:
        raise TaskSpecError(path, "(syntax)", f"invalid TOML: {exc}") from exc
    _check(spec, path, task_dir)
    return spec
