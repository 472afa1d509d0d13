"""Agent benchmark (`mlgym bench agents`): the framework's overhead per agent step.

A real run (`mlgym run`: broker, environment server, memory service, supervisor, in a
subprocess) with one external agent, which this script runs in-process so it can time each
turn. The model is `scripted:bench` (answers at once) and every command is `goto N`, an ACI
file-viewer command that costs the environment server microseconds. Per turn:

  total     the whole turn: history view, model call, reply parsing, the environment round
            trip (RPC to the server, session bookkeeping, its events on the bus), and the
            turn's record on the bus (acked AgentStep, AgentStatus)
  overhead  total - model time - the command's own time (`goto` run on a local ACI, median)

Warm-up turns are dropped. The last line printed is one JSON object with overhead_p50_ms and
overhead_p99_ms (target: p50 <= 5 ms).

With `--members N` (N > 1) the timed agent works in a team of N (docs/teams.md): N - 1 more
members run as the supervisor's processes, each in a session of its own, doing the same
`goto` turns with a model that thinks `--member-latency` seconds (default 0.2 s) and sending a
team message to the others every third turn, so the broker, the environment server and the
timed agent's subscription carry a busy team's traffic. The same run first measures the timed
agent alone in the same kind of team (the baseline) and prints the ratio; the target
(p50 <= 5 ms) holds for the team of N.

With `--mqtt URL` the same run is then made over that MQTT broker (`mlgym run --bus URL`)
and reported under "mqtt", with its p50 over ZeroMQ's.

With `--model SPEC` (an OpenAI-compatible server, `openai:NAME@http://host:port/v1`, or `local`
for bench/cacheserver.py) it measures instead what the history policies cost a prompt cache:
prompt tokens re-processed per turn under last:5 and stable:5 (bench/history_cache.py, whose
options follow: --turns, --after, --policy, --slots, --prefill-tps).
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

from mlgym.agents.runtime import Agent, Options
from mlgym.tools.aci import ACI


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def command_cost(task: str, n: int = 500) -> float:
    """Median seconds of `goto` on a local ACI over the task's starting workspace."""
    from mlgym.tasks import registry

    t = registry.load_task(task)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(t.dir / t.spec.files.workspace, tmp, dirs_exist_ok=True)

        async def no_shell(cmd: str, timeout: float | None = None):  # noqa: ARG001
            raise RuntimeError("not used")

        aci = ACI(tmp, shell=no_shell)
        await aci.run(f'open "{t.spec.files.submission}"')
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await aci.run(f"goto {1 + i % 3}")
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_team(path: Path, steps: int, members: int = 1, latency_s: float = 0.2) -> None:
    if members <= 1 and latency_s < 0:  # the classic measurement: one MLGym-style agent
        path.write_text(
            'name = "bench"\n[budget]\n'
            f"steps = {steps}\ntokens = 0\ndollars = 0\nwall_clock_s = 900\n"
            '[[agents]]\nname = "agent"\nrole = "single"\nmodel = "scripted:bench"\n'
            'history = "last:5"\nexternal = true\n'
        )
        return
    # a team of peers, each in its own session; the others talk among themselves
    others = (f'[[agents]]\nname = "bg"\nrole = "bg"\ncount = {members - 1}\nhistory = "last:5"\n'
              f'model = "scripted:bench?latency_s={latency_s}&chatter=3"\n') if members > 1 else ""
    path.write_text(
        'name = "bench-team"\nmerge = "best"\n[budget]\n'
        f"steps = {steps * members * 4}\ntokens = 0\ndollars = 0\nwall_clock_s = 900\n"
        '[topology]\nkind = "none"\n'
        + ('[[topology.channels]]\nfrom = "bg"\nto = ["bg"]\nkinds = ["message"]\n'
           if members > 1 else "")
        + '[roles.bg]\nextends = "peer"\n'
        '[[agents]]\nname = "agent"\nrole = "peer"\nmodel = "scripted:bench"\nhistory = "last:5"\n'
        f"external = true\n[agents.budget]\nsteps = {steps}\n" + others
    )


async def timed_run(args: argparse.Namespace, bus: str | None = None, members: int = 1
                    ) -> tuple[list[dict], float, str]:
    """One run with the external agent timed in-process: its turn timings, wall clock, exit.
    `bus`: an MQTT broker's URL (`mlgym run --bus`); the agent finds it in the run's mqtt.json.
    `members`: the size of the team around it (the others busy, see --members)."""
    tmp = Path(tempfile.mkdtemp(prefix="mlgym-bench-agents-"))
    run_dir = tmp / "run"
    team = tmp / "bench.toml"
    latency = args.member_latency if args.members > 1 else -1.0
    write_team(team, args.steps + args.warmup, members, latency)
    env = {**os.environ, "MLGYM_OFFLINE": "1"}
    sup = subprocess.Popen(
        [sys.executable, "-m", "mlgym.cli", "run", "--task", args.task, "--team", str(team), "--run-dir",
         str(run_dir), "--no-progress", "--json", *(["--bus", bus] if bus else [])],
        stdout=subprocess.PIPE, stderr=open(tmp / "supervisor.log", "wb"), env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "run.json").exists() or json.loads((run_dir / "run.json").read_text()).get(
                "status") != "running":
            if sup.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the run did not start; see {tmp / 'supervisor.log'}")
            await asyncio.sleep(0.05)
        agent = Agent(Options(name="agent", role="", run="", bus=str(run_dir),
                              model="scripted:bench", history="last:5"))
        t0 = time.perf_counter()
        status = await agent.run()
        wall = time.perf_counter() - t0
        if latency >= 0:  # the other members go on: stop the run (a clean stop)
            sup.terminate()
        await asyncio.to_thread(sup.communicate, timeout=300)
    finally:
        if sup.poll() is None:
            sup.terminate()
            sup.wait(30)
    shutil.rmtree(tmp, ignore_errors=True)
    return agent.timings, wall, status


def figures(args: argparse.Namespace, timings: list[dict], wall: float, status: str,
            cmd_s: float, members: int = 1) -> dict:
    turns = timings[1 + args.warmup:]  # the first turn opens the file
    if len(turns) < 10:
        raise SystemExit(f"only {len(turns)} timed turns (agent ended: {status})")
    overhead = [max(t["total"] - t["model"] - cmd_s, 0.0) * 1000 for t in turns]
    env_rt = [max(t["env"] - cmd_s, 0.0) * 1000 for t in turns]
    publish = [t["publish"] * 1000 for t in turns]
    model = [t["model"] * 1000 for t in turns]
    return {
        "task": args.task,
        "turns": len(turns),
        "members": members,
        "overhead_p50_ms": round(pct(overhead, 50), 3),
        "overhead_p99_ms": round(pct(overhead, 99), 3),
        "overhead_mean_ms": round(statistics.mean(overhead), 3),
        "env_round_trip_p50_ms": round(pct(env_rt, 50), 3),
        "publish_p50_ms": round(pct(publish, 50), 3),
        "model_p50_ms": round(pct(model, 50), 3),
        "command_ms": round(cmd_s * 1000, 4),
        "steps_per_s": round(len(timings) / wall, 1),
        "agent_exit": status,
        "target_p50_ms": 5.0,
    }


async def main_async(args: argparse.Namespace, members: int = 1) -> dict:
    cmd_s = await command_cost(args.task)
    result = figures(args, *await timed_run(args, members=members), cmd_s, members)
    if args.mqtt:  # the same run over MQTT, against the ZeroMQ run above as its baseline
        over = figures(args, *await timed_run(args, args.mqtt, members), cmd_s, members)
        result["mqtt"] = over
        ratio = over["overhead_p50_ms"] / result["overhead_p50_ms"]
        result["mqtt_overhead_p50_ratio"] = round(ratio, 2)
    return result


def main() -> None:
    if "--model" in sys.argv[1:] or any(a.startswith("--model=") for a in sys.argv[1:]):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import history_cache

        history_cache.main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="prisonersDilemma")
    ap.add_argument("--steps", type=int, default=300, help="timed turns")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--model", help="measure history policies against this model's prompt cache")
    ap.add_argument("--mqtt", metavar="URL",
                    help="also run over this MQTT broker (`mlgym run --bus URL`; the password "
                         "from $MLGYM_MQTT_PASSWORD) and compare with the ZeroMQ run")
    ap.add_argument("--members", type=int, default=1, help="team size (the timed agent included)")
    ap.add_argument("--member-latency", type=float, default=0.2,
                    help="--members: the other members' model think time per turn, seconds")
    args = ap.parse_args()
    runs = [1, args.members] if args.members > 1 else [1]
    results = [asyncio.run(main_async(args, n)) for n in runs]
    for r in results:
        who = "alone" if r["members"] == 1 else f"in a team of {r['members']}"
        print(f"agent step overhead over {r['turns']} turns, {who} ({r['task']}, scripted model, "
              "`goto` commands):")
        print(f"  overhead p50 {r['overhead_p50_ms']:.3f} ms   p99 {r['overhead_p99_ms']:.3f} ms   "
              f"mean {r['overhead_mean_ms']:.3f} ms   (target p50 <= 5 ms)")
        print(f"  environment round trip p50 {r['env_round_trip_p50_ms']:.3f} ms, turn record on "
              f"the bus p50 {r['publish_p50_ms']:.3f} ms, model p50 {r['model_p50_ms']:.3f} ms, "
              f"command {r['command_ms']:.4f} ms")
    r = results[-1]
    if len(results) > 1:
        base = results[0]["overhead_p50_ms"]
        r = {**r, "alone_overhead_p50_ms": base,
             "ratio_p50": round(r["overhead_p50_ms"] / base, 2) if base else None}
        print(f"  team of {r['members']} / alone, p50: {r['ratio_p50']}")
    if "mqtt" in r:
        m = r["mqtt"]
        print(f"  over MQTT: overhead p50 {m['overhead_p50_ms']:.3f} ms "
              f"({r['mqtt_overhead_p50_ratio']}x ZeroMQ's)   p99 {m['overhead_p99_ms']:.3f} ms   "
              f"env round trip p50 {m['env_round_trip_p50_ms']:.3f} ms, turn record p50 "
              f"{m['publish_p50_ms']:.3f} ms, {m['steps_per_s']} steps/s")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
