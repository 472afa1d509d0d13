"""Sweep benchmark (`mlgym bench sweep`): how many runs a minute `mlgym sweep` gets through, and
what Ray costs per run, on scripted runs of the lite game tasks (prisonersDilemma,
battleOfSexes, blotto; the first --runs of a seed-major grid). Every run is a whole `mlgym run`
subprocess: its broker, environment server, sandboxes and agents.

  local@C  the local executor at C runs at once (--concurrency, default 1,2,4): runs/minute
  ray      the same runs on a real local Ray cluster: a head and a worker node of 1 CPU each,
           1 CPU per run, so 2 at once (the local@2 comparison). Overhead per run, two ways:
           direct   median of (what the driver sees of an attempt - its `mlgym run`'s own wall
                    time): scheduling, worker start, shipping the run folder back, ray minus
                    local@2 (the target: <= 2 s)
           slots    (ray seconds - local@2 seconds) x 2 / runs: also what Ray's own processes
                    take from the runs' CPU, and the load's noise
  kill     --kill-runs runs on the cluster; the worker node is SIGKILLed once both slots run:
           runs lost (target 0)
  sigint   `mlgym sweep run --limit RUNS` at 2 at once, SIGINT once a quarter are done, then
           the same command to the end: finished runs started again (target 0)

Prints one line per phase, the load average around each, and last one JSON object with runs,
local_runs_per_min ({C: runs/min}), ray_runs_per_min, ray_overhead_s_per_run, failed, and the
rest. Measure on a quiet machine: the runs share its cores with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlgym.env_server.disk import unmount_leftovers
from mlgym.sweep import spec
from mlgym.sweep.executors import LocalExecutor
from mlgym.sweep.folder import Folder
from mlgym.sweep.runner import Sweep

GAMES = ["prisonersDilemma", "battleOfSexes", "blotto"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def sweep_file(root: Path, name: str, runs: int, design: str, extra: str = "") -> Path:
    f = root / f"{name}.toml"
    seeds = -(-runs // len(GAMES))
    f.write_text(f'name = "{name}"\ntasks = {json.dumps(GAMES)}\ndesigns = ["{design}"]\nseeds = {seeds}\n'
                 f'out = "{root / name}"\n[env]\nMLGYM_OFFLINE = "1"\n[retry]\nbackoff_s = 1\n'
                 f'[ray]\nnum_cpus = 1\nmemory_mb = 0\n{extra}')
    return f


def run_phase(name: str, plan: spec.Plan, executor, kill=None) -> dict:
    before = load()
    s = Sweep(plan, executor)
    killer = threading.Thread(target=kill, args=(s,), daemon=True) if kill else None
    if killer:
        killer.start()
    t0 = time.monotonic()
    summary = s.run()
    seconds = time.monotonic() - t0
    per_run = list(s.status.durations)
    out = {"phase": name, "runs": len(plan.runs), "done": summary["done"], "failed": summary["failed"],
           "lost": len(plan.runs) - summary["done"], "retries": summary["retries"], "seconds": round(seconds, 1),
           "runs_per_min": round(summary["done"] / seconds * 60, 3),
           "run_s_median": round(statistics.median(per_run), 2) if per_run else None,
           "overhead_s_median": summary["attempt_overhead_s"], "load_before": before, "load_after": load()}
    print(f"{name:<9} {out['done']:>3}/{out['runs']} runs in {seconds:7.1f} s  {out['runs_per_min']:6.2f} runs/min  "
          f"run median {out['run_s_median']} s  overhead median {out['overhead_s_median']} s  "
          f"failed {out['failed']}  retries {out['retries']}  load {before} -> {out['load_after']}", flush=True)
    return out


def local_phase(root: Path, runs: int, design: str, c: int, tag: str) -> dict:
    f = sweep_file(root, f"local{c}{tag}", runs, design)
    return run_phase(f"local@{c}", spec.plan(f, limit=runs), LocalExecutor(c))


def ray_phases(root: Path, runs: int, design: str, kill_runs: int, tag: str) -> list[dict]:
    from mlgym.sweep.ray_cluster import LocalCluster
    from mlgym.sweep.ray_exec import RayExecutor

    out = []
    t0 = time.monotonic()
    with LocalCluster(head_cpus=1, worker_cpus=[1], env={"TMPDIR": str(root)}, log_dir=root) as cluster:
        print(f"ray cluster (head + 1 worker node) up in {time.monotonic() - t0:.1f} s", flush=True)
        if runs:
            f = sweep_file(root, f"ray{tag}", runs, design)
            out.append(run_phase("ray@2", spec.plan(f, limit=runs), RayExecutor(cluster.address, storage="copy")))
        if kill_runs:
            killed = []

            def kill(s: Sweep) -> None:
                """Once both slots are busy (one run on each node, a scripted run takes 5-10 s),
                kill the worker mid-run."""
                while s.status.done < kill_runs:
                    running = list(s.status.running.values())
                    if len(running) >= 2 and all(time.time() - r.submitted > 2 for r in running):
                        cluster.kill_node(1)
                        killed.append(time.time())
                        print("  worker node killed", flush=True)
                        return
                    time.sleep(0.2)

            f = sweep_file(root, f"kill{tag}", kill_runs, design)
            out.append(run_phase("ray-kill", spec.plan(f, limit=kill_runs),
                                 RayExecutor(cluster.address, storage="copy"), kill=kill))
            out[-1]["worker_killed"] = bool(killed)
            if not killed:
                print("  the worker node was never killed (no moment with both slots busy)",
                      flush=True)
    return out


def sigint_phase(root: Path, runs: int, design: str, tag: str) -> dict:
    f = sweep_file(root, f"sigint{tag}", runs, design)
    folder = Folder(root / f"sigint{tag}")
    argv = [sys.executable, "-m", "mlgym.cli", "sweep", "run", str(f), "--limit", str(runs), "--concurrency", "2",
            "--no-progress", "--no-report"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(root / f"sigint{tag}.log", "w"))
    while proc.poll() is None:
        done = [r for r in folder.journal() if r["event"] == "end" and r.get("outcome") == "done"]
        if len(done) >= runs // 4:
            break
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    first_rc = proc.wait()
    finished = {r["run"] for r in folder.journal() if r["event"] == "end" and r.get("outcome") == "done"}
    interrupted = {r["run"] for r in folder.journal() if r["event"] == "end" and r.get("outcome") == "interrupted"}
    second_rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=open(root / f"sigint{tag}.2.log", "w")).returncode
    journal = folder.journal()
    starts = {}
    for r in journal:
        if r["event"] == "start":
            starts[r["run"]] = starts.get(r["run"], 0) + 1
    done_all = {r["run"] for r in journal if r["event"] == "end" and r.get("outcome") == "done"}
    out = {"phase": "sigint", "runs": runs, "first_rc": first_rc, "second_rc": second_rc,
           "finished_before_sigint": len(finished), "interrupted": len(interrupted),
           "repeated_finished": sum(starts[r] > 1 for r in finished), "done": len(done_all),
           "resumed": sum(1 for r in journal if r["event"] == "start" and r.get("kind") == "resume")}
    print(f"sigint    SIGINT after {len(finished)} done (rc {first_rc}), {len(interrupted)} stopped; the same "
          f"command: rc {second_rc}, {out['done']}/{runs} done, {out['resumed']} resumed, finished runs "
          f"started again: {out['repeated_finished']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--concurrency", default="1,2,4", help="local executor: runs at once, comma-separated")
    ap.add_argument("--design", default="default", help="the team design of every run")
    ap.add_argument("--phases", default="local,ray,kill,sigint")
    ap.add_argument("--kill-runs", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=1, help="repeat the local and ray phases; medians")
    ap.add_argument("--keep", action="store_true", help="keep the sweep folders")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    conc = [int(c) for c in args.concurrency.split(",")]
    root = Path(tempfile.mkdtemp(prefix="mlgym-bench-sweep-"))
    print(f"{args.runs} scripted runs of {', '.join(GAMES)} (team {args.design}); load {load()}; "
          f"{os.cpu_count()} CPUs; folders under {root}", flush=True)
    results: list[dict] = []
    for i in range(args.repeat):
        tag = f"-{i}"
        if "local" in phases:
            results += [local_phase(root, args.runs, args.design, c, tag) for c in conc]
        if "ray" in phases or "kill" in phases:
            results += ray_phases(root, args.runs if "ray" in phases else 0, args.design,
                                  args.kill_runs if "kill" in phases and i == 0 else 0, tag)
    if "sigint" in phases:
        results.append(sigint_phase(root, args.runs, args.design, ""))
    print(json.dumps(summarize(args, results, conc)))
    if not args.keep:
        # the killed node's run left its session disk mounted (its env server died with it)
        unmount_leftovers(root)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def summarize(args: argparse.Namespace, results: list[dict], conc: list[int]) -> dict:
    def med(phase: str, key: str) -> float | None:
        vals = [r[key] for r in results if r["phase"] == phase and r.get(key) is not None and r.get("runs")]
        return round(statistics.median(vals), 3) if vals else None

    local = {c: med(f"local@{c}", "runs_per_min") for c in conc}
    ray_pm = med("ray@2", "runs_per_min")
    out: dict = {"runs": args.runs, "design": args.design, "repeat": args.repeat,
                 "local_runs_per_min": {str(c): v for c, v in local.items()}, "ray_runs_per_min": ray_pm,
                 "failed": sum(r.get("failed", 0) for r in results),
                 "load": [r.get("load_before") for r in results if "load_before" in r]}
    ones = [r["runs_per_min"] for r in results if r["phase"] == "local@1"]
    twos = [r["runs_per_min"] for r in results if r["phase"] == "local@2"]
    if ones and twos:  # the median of each repeat's own ratio: load drifts less within a repeat
        ratios = [b / a for a, b in zip(ones, twos) if a]
        out["speedup_2_vs_1_per_repeat"] = [round(x, 3) for x in ratios]
        out["speedup_2_vs_1"] = round(statistics.median(ratios), 3)
    ray_direct, local_direct = med("ray@2", "overhead_s_median"), med("local@2", "overhead_s_median")
    if ray_direct is not None and local_direct is not None:
        out["ray_overhead_s_per_run"] = round(ray_direct - local_direct, 3)
    ray_s, local_s = med("ray@2", "seconds"), med("local@2", "seconds")
    if ray_s and local_s:
        out["ray_overhead_slot_s_per_run"] = round((ray_s - local_s) * 2 / args.runs, 3)
    kill = [r for r in results if r["phase"] == "ray-kill"]
    if kill:
        out["kill_runs"], out["kill_lost"], out["kill_retries"] = kill[0]["runs"], kill[0]["lost"], kill[0]["retries"]
        out["worker_killed"] = kill[0].get("worker_killed", False)
    sig = [r for r in results if r["phase"] == "sigint"]
    if sig:
        out["sigint_repeated_finished"] = sig[0]["repeated_finished"]
        out["sigint_finished_before"] = sig[0]["finished_before_sigint"]
        out["sigint_done"] = sig[0]["done"]
    out["targets_met"] = {
        "local_2_vs_1_ge_1.6": (out["speedup_2_vs_1"] >= 1.6
                                if out.get("speedup_2_vs_1") is not None else None),
        "ray_overhead_le_2s": (out["ray_overhead_s_per_run"] <= 2
                               if out.get("ray_overhead_s_per_run") is not None else None),
        "kill_lost_0": (out.get("kill_lost") == 0 and out["worker_killed"]) if kill else None,
        "sigint_repeated_0": out.get("sigint_repeated_finished") == 0 if sig else None,
    }
    return out


if __name__ == "__main__":
    main()
