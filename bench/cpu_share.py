"""A busy sandbox against its neighbour (`mlgym bench cpu_share`): how long 0.3 s of CPU
takes in local sandbox B, alone and while sandbox A runs N busy loops, each started with
`setsid` (a session of its own: the kernel's autogroups then give A N shares, not one).

Two modes, interleaved per round: `share` (each sandbox in a cpu cgroup of its own, as the
local backend makes them) and `none` (the cpu hierarchy hidden from limits.py: what a machine
without a writable cpu cgroup gets). Prints medians per mode and the slowdown ratios; the last
line is one JSON object. Options: --rounds R (default 3), --loops N (default 40).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

WORK = ("python3 -c 'import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass'")


async def one_round(loops: int, share: bool) -> tuple[float, float]:
    """B's seconds for the work alone, then beside A's busy loops."""
    from mlgym.env_server.sandbox import SandboxConfig, create
    from mlgym.env_server.sandbox import limits

    real = limits._v1_mounts
    if not share:
        limits._v1_mounts = lambda: {k: v for k, v in real().items() if k != "cpu"}
    try:
        with tempfile.TemporaryDirectory() as ta, tempfile.TemporaryDirectory() as tb:
            a = create("local", SandboxConfig(workspace=Path(ta)))
            b = create("local", SandboxConfig(workspace=Path(tb)))
            await a.start()
            await b.start()
            try:
                if share and not a.status()["limits"]["cpu_share"].startswith("cgroup"):
                    raise SystemExit(f"no cpu cgroup here: {a.status()['limits']['cpu_share']}")
                t = time.perf_counter()
                await b.exec(WORK, timeout=120)
                alone = time.perf_counter() - t
                await a.exec(f"for i in $(seq {loops}); do "
                             "setsid sh -c 'while :; do :; done' & done")
                await asyncio.sleep(1)
                t = time.perf_counter()
                await b.exec(WORK, timeout=300)
                beside = time.perf_counter() - t
            finally:
                await a.stop()
                await b.stop()
    finally:
        limits._v1_mounts = real
    return alone, beside


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loops", type=int, default=40)
    args = ap.parse_args()
    got: dict[str, dict[str, list[float]]] = {m: {"alone": [], "beside": []}
                                              for m in ("share", "none")}
    for r in range(args.rounds):
        for mode in ("share", "none"):
            alone, beside = await one_round(args.loops, mode == "share")
            got[mode]["alone"].append(alone)
            got[mode]["beside"].append(beside)
            print(f"round {r + 1} {mode:5}: alone {alone:.2f} s, beside {args.loops} busy "
                  f"loops {beside:.2f} s", flush=True)
    out: dict[str, object] = {"loops": args.loops, "rounds": args.rounds}
    for mode, v in got.items():
        alone, beside = statistics.median(v["alone"]), statistics.median(v["beside"])
        out[mode] = {"alone_s": round(alone, 3), "beside_s": round(beside, 3),
                     "slowdown": round(beside / alone, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    import structlog
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
