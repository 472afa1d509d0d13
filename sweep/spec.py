"""The sweep file (TOML) and its expansion into runs, each with an id derived from its grid point.

    name = "lite-games"
    tasks = ["prisonersDilemma", "lite"]      # task ids or suites (`mlgym tasks list`)
    exclude_tasks = ["languageModelingCharLite"]
    designs = ["default", "single", "teams/pair.toml"]   # team names or TOML paths
    models = ["scripted:auto", {name = "mix", "*" = "openai:gpt-4o", coder = "openai:gpt-4.1"}]
    seeds = 2                                 # or a list: [0, 7, 42]
    repeats = 1
    concurrency = 2
    [budget]                                  # per run, over the team file's
    steps = 30

Decoded with msgspec, so a misspelt key is named instead of ignored. See docs/sweeps.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import msgspec

from mlgym.agents import config as C
from mlgym.agents.llm import ModelError, parse_spec

ALL = "*"  # the key of a model set that gives every agent its model
LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


class SweepError(ValueError):
    """A sweep file that cannot be run; the message names the file and the problem."""


class Design(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    team: str  # a team name (`default`) or a TOML path, relative to the sweep file


class BudgetOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-run budgets over the team file's (`mlgym run --steps/--tokens/--dollars/--wall-clock`)."""

    steps: int | None = None
    tokens: int | None = None
    dollars: float | None = None
    wall_clock_s: float | None = None

    def args(self) -> list[str]:
        flags = (("--steps", self.steps), ("--tokens", self.tokens), ("--dollars", self.dollars),
                 ("--wall-clock", self.wall_clock_s))
        return [x for flag, v in flags if v is not None for x in (flag, str(v))]


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Attempts per run when it fails for an infrastructure reason (docs/sweeps.md); a run that
    ends on its merits is never run again."""

    max_attempts: int = 3
    backoff_s: float = 10.0


class RayOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Ray executor. Resources per run default to the task spec's [limits] (cpus, memory_mb,
    gpus); set them here to override for every task."""

    address: str = ""  # what --ray gives when it is passed without a value
    num_cpus: float | None = None
    memory_mb: int | None = None
    num_gpus: float | None = None
    storage: Literal["copy", "shared"] = "copy"  # runs come back through Ray, or a shared path


class Estimate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What `mlgym sweep plan` assumes per environment step to estimate the cost."""

    prompt_tokens_per_step: int = 8000
    completion_tokens_per_step: int = 500


class SweepFile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    tasks: list[str]
    exclude_tasks: list[str] = []
    designs: list[str | Design] = msgspec.field(default_factory=lambda: ["default"])
    models: list[str | dict[str, str]] = msgspec.field(default_factory=lambda: ["scripted:auto"])
    seeds: int | list[int] = 1
    repeats: int = 1
    backend: Literal["local", "docker"] = "local"
    concurrency: int = 2
    max_dollars: float = 0.0  # the sweep's spend cap: no run starts once it is reached (0: none)
    out: str = ""  # the sweep folder (default sweeps/<name>), relative to the working directory
    env: dict[str, str] = {}  # environment of every run (e.g. MLGYM_OFFLINE = "1")
    run_args: list[str] = []  # more `mlgym run` options, e.g. ["--call-timeout", "120"]
    budget: BudgetOverride = BudgetOverride()
    retry: RetryPolicy = RetryPolicy()
    ray: RayOptions = RayOptions()
    estimate: Estimate = Estimate()


class RunPoint(msgspec.Struct, frozen=True):
    """One run of the grid: what `mlgym run` is given, and the id of its folder."""

    id: str
    task: str
    design: str
    team: str  # the team name or the TOML file's absolute path
    team_toml: str  # the file's text when `team` is a path (shipped to workers without it)
    models: str
    model_args: list[str]  # `--model` values
    seed: int
    repeat: int
    fingerprint: str  # of everything that shapes the run: a changed sweep file is noticed
    resources: dict[str, float]  # cpus, memory_mb, gpus (the Ray executor reserves them)
    dollars_cap: float = 0.0  # the run's dollar budget
    est_usd: float | None = None  # None: a model without a known price


class Plan(msgspec.Struct):
    sweep: SweepFile
    source: str  # the sweep file's absolute path
    out: str  # the sweep folder's absolute path
    runs: list[RunPoint]

    def point(self, run_id: str) -> RunPoint:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise KeyError(run_id)

    def run_args(self, p: RunPoint) -> list[str]:
        """`mlgym run` options of a point, but --team, --run-dir and --seed."""
        args = [f"--model={m}" for m in p.model_args]
        return args + ["--backend", self.sweep.backend, *self.sweep.budget.args(), *self.sweep.run_args]


def label(text: str) -> str:
    return LABEL_BAD.sub("-", text).strip("-.") or "x"


def load(path: str | Path) -> SweepFile:
    path = Path(path)
    try:
        sweep = msgspec.toml.decode(path.read_bytes(), type=SweepFile)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    except msgspec.ValidationError as exc:
        raise SweepError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    if not sweep.tasks:
        raise SweepError(f"{path}: `tasks` is empty")
    if sweep.concurrency < 1 or sweep.repeats < 1 or sweep.retry.max_attempts < 1:
        raise SweepError(f"{path}: concurrency, repeats and retry.max_attempts must be >= 1")
    return sweep


def plan(path: str | Path, out: str | Path | None = None, limit: int | None = None) -> Plan:
    """Read a sweep file and expand its grid (tasks x designs x models x seeds x repeats);
    `limit`: only the first runs (a smoke test; the ids are the same)."""
    path = Path(path).resolve()
    sweep = load(path)
    where = str(path)
    tasks = expand_tasks(sweep, where)
    designs = [_design(d, path.parent, where) for d in sweep.designs]
    models = [_model_set(m, where) for m in sweep.models]
    _check_unique([d[0] for d in designs], "design", where)
    _check_unique([m[0] for m in models], "model set", where)
    _check_model_keys(models, [d[3] for d in designs], where)
    seeds = list(range(sweep.seeds)) if isinstance(sweep.seeds, int) else list(sweep.seeds)
    if not seeds or any(s < 0 for s in seeds):
        raise SweepError(f"{where}: seeds: a count >= 1 or a list of seeds >= 0")
    _check_unique([str(s) for s in seeds], "seed", where)
    from mlgym.tasks import registry

    specs_of = {t: registry.load_task(t).spec for t in tasks}
    teams = {(d[0], m[0]): _effective_team(d[3], m[1], sweep) for d in designs for m in models}
    runs = []
    # seed-major: the first runs cover every cell of the table once (a partial sweep, or
    # --limit, already gives a whole table)
    for seed in seeds:
        for rep in range(sweep.repeats):
            for task in tasks:
                for dname, team_ref, toml_text, _ in designs:
                    for mname, specs in models:
                        runs.append(_point(sweep, task, specs_of[task], dname, team_ref, toml_text,
                                           teams[(dname, mname)], mname, specs, seed, rep))
    _check_unique([r.id for r in runs], "run id", where)
    runs = runs[:limit] if limit else runs
    out_dir = Path(out or sweep.out or Path("sweeps") / label(sweep.name)).resolve()
    return Plan(sweep=sweep, source=str(path), out=str(out_dir), runs=runs)


def expand_tasks(sweep: SweepFile, where: str) -> list[str]:
    from mlgym.tasks import registry
    from mlgym.tasks.spec import SUITES

    out: list[str] = []
    for entry in sweep.tasks:
        if entry in SUITES:
            out += [t.id for t in registry.list_tasks(entry)]
            continue
        try:
            registry.load_task(entry)
        except registry.UnknownTask as exc:
            raise SweepError(f"{where}: tasks: {exc} (or a suite: {', '.join(SUITES)})") from None
        except registry.TaskSpecError as exc:
            raise SweepError(f"{where}: tasks: {exc}") from None
        out.append(entry)
    unknown = set(sweep.exclude_tasks) - set(out)
    if unknown:
        raise SweepError(f"{where}: exclude_tasks names tasks the sweep does not have: {sorted(unknown)}")
    tasks = [t for t in dict.fromkeys(out) if t not in sweep.exclude_tasks]
    if not tasks:
        raise SweepError(f"{where}: no task left to run")
    return tasks


def _design(entry: str | Design, base: Path, where: str) -> tuple[str, str, str, C.TeamConfig]:
    """(label, team reference for `mlgym run --team`, the TOML text of a file, the team)."""
    ref = entry.team if isinstance(entry, Design) else entry
    is_path = ref.endswith(".toml") or "/" in ref
    if is_path:
        p = Path(ref).expanduser()
        ref = str(p if p.is_absolute() else (base / p).resolve())
    try:
        team = C.load_team(ref)
    except C.ConfigError as exc:
        raise SweepError(f"{where}: designs: {exc}") from None
    name = entry.name if isinstance(entry, Design) else (Path(ref).stem if is_path else ref)
    text = Path(ref).read_text() if is_path else ""
    return label(name), ref, text, team


def _model_set(entry: str | dict[str, str], where: str) -> tuple[str, dict[str, str]]:
    """(label, {"*" or agent name or role: model spec})."""
    if isinstance(entry, str):
        specs = {ALL: entry}
        name = entry
        try:
            prefix, model, _ = parse_spec(entry)
            name = f"{prefix}-{model}"
        except ModelError:
            pass
    else:
        specs = {k: v for k, v in entry.items() if k != "name"}
        name = entry.get("name") or "+".join(f"{k}={v}" for k, v in sorted(specs.items()))
        if not specs:
            raise SweepError(f"{where}: models: a model set needs at least one spec ({entry})")
    for key, spec in specs.items():
        try:
            parse_spec(spec)
        except ModelError as exc:
            raise SweepError(f"{where}: models: {key} = {spec!r}: {exc.message}") from None
    return label(name), specs


def _check_unique(names: list[str], what: str, where: str) -> None:
    seen: set[str] = set()
    dup = sorted({n for n in names if n in seen or seen.add(n)})
    if dup:
        raise SweepError(f"{where}: two entries get the same {what} {dup}; give them distinct names")


def _check_model_keys(models: list[tuple[str, dict[str, str]]], teams: list[C.TeamConfig], where: str) -> None:
    known = {ALL} | {x for t in teams for a in t.agents for x in (a.name, a.role)}
    for name, specs in models:
        bad = sorted(set(specs) - known)
        if bad:
            raise SweepError(f"{where}: model set {name!r}: {bad} is no agent or role of any design "
                             f"(known: {sorted(known - {ALL})})")


def _effective_team(team: C.TeamConfig, specs: dict[str, str], sweep: SweepFile) -> C.TeamConfig:
    per = {k: v for k, v in specs.items() if k != ALL}
    cfg = C.override_models(team, specs.get(ALL), per)
    b, o = cfg.budget, sweep.budget
    budget = C.Budget(steps=b.steps if o.steps is None else o.steps,
                      tokens=b.tokens if o.tokens is None else o.tokens,
                      dollars=b.dollars if o.dollars is None else o.dollars,
                      wall_clock_s=b.wall_clock_s if o.wall_clock_s is None else o.wall_clock_s)
    return msgspec.structs.replace(cfg, budget=budget)


def _point(sweep: SweepFile, task: str, spec, design: str, team_ref: str, toml_text: str, cfg: C.TeamConfig,
           models: str, specs: dict[str, str], seed: int, rep: int) -> RunPoint:
    shape = {"task": task, "team": json.loads(C.team_json(cfg)), "backend": sweep.backend,
             "run_args": sweep.run_args, "seed": seed}
    fingerprint = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
    model_args = [v if k == ALL else f"{k}={v}" for k, v in specs.items()]
    lim = spec.limits
    o = sweep.ray
    resources = {"cpus": float(lim.cpus if o.num_cpus is None else o.num_cpus),
                 "memory_mb": float(lim.memory_mb if o.memory_mb is None else o.memory_mb),
                 "gpus": float(lim.gpus if o.num_gpus is None else o.num_gpus)}
    from mlgym.sweep.cost import estimate_run

    return RunPoint(id=f"{task}.{design}.{models}.s{seed}.r{rep}", task=task, design=design, team=team_ref,
                    team_toml=toml_text, models=models, model_args=model_args, seed=seed, repeat=rep,
                    fingerprint=fingerprint, resources=resources, dollars_cap=cfg.budget.dollars,
                    est_usd=estimate_run(cfg, sweep.estimate))
