"""Task benchmark (`mlgym bench tasks`): how long each task of a suite (default: lite) takes to
run its baseline and to be evaluated.

For each task:
  prepare_s   the task's data preparation (downloads, splits), cached after the first run; done
              before the baseline so that baseline_s does not include it
  baseline_s  commands.run_baseline, i.e. `mlgym baseline TASK`: an environment server in this
              process, a real session on the chosen backend, the task's baseline commands, then
              `validate` (scored in the evaluation sandbox). Wall time of the whole call.
  load        the 1-minute load average before and after the baseline (a shared machine)
  evaluate_s  commands.evaluate_path, i.e. `mlgym evaluate TASK ARTEFACT`: one evaluation alone,
              in a fresh evaluation sandbox, of the artefact the baseline produced (copied out
              of the session's workspace just before `validate`), or of the starter artefact
              when the baseline produced none.
  reproduced  the baseline's scores match the published ones in task.toml, within
              `[baseline] tolerance` (relative, per metric; default tasks.spec.REPRODUCE_TOLERANCE)
Failures (an invalid spec, a baseline command failing, an evaluation error, a timeout) are
reported per task and do not stop the others.

Options: --only ID,ID  --suite NAME  --backend local|docker  --timeout S (per task).
The last line printed is one JSON object:
  {"tasks": {id: {"baseline_s", "evaluate_s", "scores", "published", "reproduced", ...}},
   "total_s": ..., "targets_met": {"each_baseline", "suite", "reproduced"}}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

TARGET_BASELINE_S = 120.0  # each lite baseline
TARGET_SUITE_S = 900.0  # the whole lite suite


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def suite_tasks(suite: str, only: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(task ids to run, {task id: why it cannot run}) — invalid specs that claim the suite are
    reported instead of silently left out."""
    from mlgym.tasks import registry

    broken: dict[str, str] = {}
    wanted: list[str] = []
    for tid in registry.task_ids():
        try:
            task = registry.load_task(tid)
        except Exception as exc:  # noqa: BLE001 - an invalid spec is a per-task error
            with contextlib.suppress(Exception):
                raw = tomllib.loads((registry.TASKS_ROOT / tid / "task.toml").read_text())
                if (only and tid in only) or (not only and suite in raw.get("suites", [])):
                    broken[tid] = f"invalid task spec: {exc}"
            continue
        if (only and tid in only) or (not only and suite in task.spec.suites):
            wanted.append(tid)
    for tid in only or []:
        if tid not in wanted and tid not in broken:
            broken[tid] = "unknown task"
    return wanted, broken


class ArtefactKeeper:
    """Copies a session's submission artefact out of its workspace just before `validate`.

    run_baseline deletes its session folder when it returns, so the bench hands it an
    embedded server whose client does this copy on the way; everything else passes through
    unchanged (the baseline's timing is exactly `mlgym baseline`'s, plus one file copy)."""

    def __init__(self, dest: Path, submission: str) -> None:
        self.dest, self.submission = dest, submission
        self.kept: Path | None = None

    def wrap(self, original: Any) -> Any:
        keeper = self

        @contextlib.asynccontextmanager
        async def embedded_server(*args: Any, **kwargs: Any):
            async with original(*args, **kwargs) as client:
                yield _KeepingClient(client, keeper)

        return embedded_server

    def keep(self, workdir: str) -> None:
        src = Path(workdir) / self.submission
        dst = self.dest / Path(self.submission).name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copyfile(src, dst)
        else:
            return
        self.kept = dst


class _KeepingClient:
    def __init__(self, client: Any, keeper: ArtefactKeeper) -> None:
        self._client, self._keeper = client, keeper
        self._workdirs: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def request(self, service: str, body: Any, **kw: Any) -> Any:
        from mlgym.bus import protocol as p

        validating = isinstance(body, p.Act) and body.command.strip() == "validate"
        if validating and body.session in self._workdirs:
            await asyncio.to_thread(self._keeper.keep, self._workdirs[body.session])
        reply = await self._client.request(service, body, **kw)
        if isinstance(reply, p.SessionOpened):
            self._workdirs[reply.info.session] = reply.info.workdir
        return reply


def starter_artefact(task_id: str) -> Path | None:
    from mlgym.tasks import registry

    task = registry.load_task(task_id)
    path = task.dir / task.spec.files.workspace / task.spec.files.submission
    return path if path.exists() else None


async def bench_task(task_id: str, backend: str, timeout: float, scratch: Path) -> dict[str, Any]:
    from mlgym.env_server import commands
    from mlgym.tasks import registry

    task = registry.load_task(task_id)
    spec = task.spec
    out: dict[str, Any] = {"baseline_s": None, "evaluate_s": None, "scores": {},
                           "published": dict(spec.baseline.scores), "reproduced": False}
    t0 = time.monotonic()
    try:  # one-time data preparation (cached afterwards) is timed apart from the baseline
        await asyncio.to_thread(registry.prepare, task)
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"data preparation: {exc}"[:2000]
        return out
    finally:
        out["prepare_s"] = round(time.monotonic() - t0, 2)
    keeper = ArtefactKeeper(scratch, spec.files.submission)
    original = commands.embedded_server
    commands.embedded_server = keeper.wrap(original)
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        result = await asyncio.wait_for(commands.run_baseline(task_id, backend), timeout)
        out["scores"] = result["scores"]
        per_metric = spec.baseline.reproduces(out["scores"])
        out["reproduced"] = all(per_metric.values())
        if not out["reproduced"]:
            out["not_reproduced"] = sorted(m for m, ok in per_metric.items() if not ok)
    except TimeoutError:
        out["error"] = f"baseline: timed out after {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - ClickException and friends: report per task
        out["error"] = f"baseline: {getattr(exc, 'message', None) or exc}"[:2000]
    finally:
        commands.embedded_server = original
        out["baseline_s"] = round(time.monotonic() - t0, 2)
        # the 1-minute load average before and after the baseline: the machine is shared
        out["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    artefact, source = keeper.kept, "baseline"
    if artefact is None:
        artefact, source = starter_artefact(task_id), "starter"
    if artefact is None:
        out["evaluate_error"] = "no artefact to evaluate (the baseline made none and the task ships none)"
        return out
    out["evaluated"] = source
    t0 = time.monotonic()
    try:
        ev = await asyncio.wait_for(commands.evaluate_path(task_id, artefact, backend), timeout)
        out["evaluate_s"] = round(time.monotonic() - t0, 2)
        out["evaluate_scores"] = ev["scores"]
        if "error" in ev:
            out["evaluate_error"] = f"{ev['error'].get('code')}: {ev['error'].get('message', '')}"[:2000]
    except TimeoutError:
        out["evaluate_error"] = f"timed out after {timeout:g} s"
    except Exception as exc:  # noqa: BLE001
        out["evaluate_error"] = f"{type(exc).__name__}: {exc}"[:2000]
    return out


def short(error: str, width: int = 110) -> str:
    """One line for a table: the first line of an error and, for a traceback, its last line."""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    text = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
    return text if len(text) <= width else text[: width - 3] + "..."


def fmt_scores(scores: dict[str, float], published: dict[str, float]) -> str:
    parts = []
    for k, v in scores.items():
        ref = published.get(k)
        parts.append(f"{k}={v:.4g}" + (f" (pub {ref:.4g})" if ref is not None else ""))
    return ", ".join(parts)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    only = [t.strip() for t in a.only.split(",") if t.strip()] if a.only else None
    wanted, broken = suite_tasks(a.suite, only)
    started = datetime.datetime.now(datetime.UTC)
    say(f"bench tasks: suite {a.suite if not only else '(--only)'}, {len(wanted)} runnable, "
        f"{len(broken)} not, backend {a.backend}, {os.cpu_count()} CPUs, load "
        f"{[round(x, 2) for x in os.getloadavg()]}, {started:%Y-%m-%d %H:%M} UTC")
    results: dict[str, Any] = {
        tid: {"baseline_s": None, "evaluate_s": None, "scores": {}, "published": {},
              "reproduced": False, "error": why} for tid, why in broken.items()}
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlgym-bench-tasks-") as tmp:
        for tid in wanted:
            say(f"... {tid}")
            scratch = Path(tmp) / tid
            scratch.mkdir()
            results[tid] = await bench_task(tid, a.backend, a.timeout, scratch)
            r = results[tid]
            say(f"    baseline {r['baseline_s']} s (load {r.get('load')}), "
                f"evaluate {r['evaluate_s']} s"
                + (f", error: {short(r['error'], 300)}" if "error" in r else "")
                + (f", evaluate error: {short(r['evaluate_error'], 300)}" if "evaluate_error" in r else ""))
    total = round(time.monotonic() - t_all, 2)

    say("")
    say(f"{'task':<30} {'prepare s':>9} {'baseline s':>10} {'evaluate s':>10}  scores (published)")
    for tid in sorted(results):
        r = results[tid]
        b = f"{r['baseline_s']:.1f}" if r["baseline_s"] is not None else "-"
        e = f"{r['evaluate_s']:.1f}" if r["evaluate_s"] is not None else "-"
        pr = f"{r['prepare_s']:.1f}" if r.get("prepare_s") is not None else "-"
        if r["scores"]:
            tail = (("" if r["reproduced"] else "NOT REPRODUCED ")
                    + fmt_scores(r["scores"], r["published"]))
        else:
            tail = f"ERROR {short(r.get('error', ''))}"
        say(f"{tid:<30} {pr:>9} {b:>10} {e:>10}  {tail}")
    slow = [t for t, r in results.items()
            if r["baseline_s"] is not None and r["baseline_s"] > TARGET_BASELINE_S]
    failed = [t for t, r in results.items() if "error" in r or "evaluate_error" in r]
    differ = [t for t, r in results.items() if r["scores"] and not r["reproduced"]]
    reproduced = sum(r["reproduced"] for r in results.values())
    load = [round(x, 2) for x in os.getloadavg()]
    say(f"total {total:.1f} s (target {TARGET_SUITE_S:.0f} s); reproduced {reproduced} of "
        f"{len(results)}; not reproduced: {', '.join(differ) or 'none'}; baselines over "
        f"{TARGET_BASELINE_S:.0f} s: {', '.join(slow) or 'none'}; "
        f"failed: {', '.join(failed) or 'none'}; load at the end {load}")
    return {"tasks": results, "total_s": total, "suite": a.suite if not only else None,
            "backend": a.backend, "date": started.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
            "load_end": load,
            "targets_met": {"each_baseline": not slow and not failed,
                            "suite": total <= TARGET_SUITE_S,
                            "reproduced": not differ and not failed}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated task ids (instead of the suite)")
    ap.add_argument("--suite", default="lite")
    ap.add_argument("--backend", choices=["local", "docker"], default="local")
    ap.add_argument("--timeout", type=float, default=900.0, help="per task, seconds (baseline; evaluation)")
    a = ap.parse_args()
    say(json.dumps(asyncio.run(run(a))))


if __name__ == "__main__":
    main()
