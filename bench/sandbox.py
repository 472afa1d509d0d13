"""The local sandbox without bubblewrap (`mlgym bench sandbox`): what its stand-in (nsbox.py)
and the plain fallback cost against bubblewrap, in one run.

Per mode, a fresh process (each picks its fallback once, as a server does) runs rounds of: a
sandbox start (shell up, with the task venv when built), five `exec("echo hi")`, one
`run_isolated(["python", "-c", "print(1)"])` (an evaluation's launch) and a stop. Rounds are
interleaved across the modes, so load drifting on a shared machine hits each alike. Prints
the medians per mode and their ratios to bubblewrap's; the last line is one JSON object.

Modes: bwrap (needs bubblewrap), stand-in (bwrap hidden: $MLGYM_BWRAP=/nonexistent), plain
(also $MLGYM_NO_BWRAP=plain). Options: --rounds R (default 5), --per-round N (default 4).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"bwrap": {}, "stand-in": {"MLGYM_BWRAP": "/nonexistent"},
         "plain": {"MLGYM_BWRAP": "/nonexistent", "MLGYM_NO_BWRAP": "plain"}}
PHASES = ("start", "exec", "run_isolated", "stop")


async def worker(n: int) -> dict[str, list[float]]:
    """n sandbox lifecycles in this process; seconds per phase."""
    from mlgym.env_server import taskinfo
    from mlgym.env_server.sandbox import SandboxConfig, create

    out: dict[str, list[float]] = {p: [] for p in PHASES}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SandboxConfig(workspace=Path(tmp), python_env=taskinfo.task_python_env())
        for _ in range(n):
            sb = create("local", cfg)
            t = time.perf_counter()
            await sb.start()
            out["start"].append(time.perf_counter() - t)
            for _ in range(5):
                t = time.perf_counter()
                r = await sb.exec("echo hi")
                out["exec"].append(time.perf_counter() - t)
                assert r.output == "hi\n", r.output
            t = time.perf_counter()
            r = await sb.run_isolated(["python", "-c", "print(1)"], timeout=120)
            out["run_isolated"].append(time.perf_counter() - t)
            assert r.exit_code == 0 and r.output.strip() == "1", r.output
            t = time.perf_counter()
            await sb.stop()
            out["stop"].append(time.perf_counter() - t)
        out["stand_in"] = [sb.status().get("stand_in") or "bwrap"]  # type: ignore[list-item]
    return out


def run_mode(mode: str, n: int) -> dict[str, list[float]]:
    env = {**os.environ, **MODES[mode], "MLGYM_LOG_LEVEL": "error"}
    r = subprocess.run([sys.executable, __file__, "--worker", str(n)], env=env,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{mode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=4)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(asyncio.run(worker(a.worker))))
        return
    modes = [m for m in MODES if m != "bwrap" or shutil.which("bwrap")]
    samples: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PHASES} for m in modes}
    chosen: dict[str, str] = {}
    for _ in range(a.rounds):
        for m in modes:
            got = run_mode(m, a.per_round)
            chosen[m] = got.pop("stand_in")[0]  # type: ignore[index]
            for p in PHASES:
                samples[m][p] += got[p]
    medians = {m: {p: round(statistics.median(v) * 1000, 2) for p, v in s.items()}
               for m, s in samples.items()}
    ratios = {m: {p: round(medians[m][p] / medians["bwrap"][p], 2) for p in PHASES}
              for m in modes if "bwrap" in medians}
    for m in modes:
        print(f"{m:<9} ({chosen[m]}): " + ", ".join(f"{p} {medians[m][p]} ms" for p in PHASES)
              + (f"; x bwrap: {ratios[m]}" if m in ratios else ""))
    print(json.dumps({"medians_ms": medians, "ratio_to_bwrap": ratios, "modes": chosen,
                      "samples_per_phase": a.rounds * a.per_round}))


if __name__ == "__main__":
    main()
