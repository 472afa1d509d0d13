"""Analysis benchmark (`mlgym bench analyze`): how long `mlgym analyze` takes on a run of
10,000 events (target: <= 2 s).

The run is written into a real event log (the broker's EventLog) as a six-member team would
leave it: a planner and five coders, each coder in a session of its own; every turn an
`agent_step` (the prompt messages it added: the system and task prompts on a member's first
turn, an observation of about 1.5 KB after that), an `agent_status`, the command and its
observation events; a validation every eighth turn of a coder, a work item and its result
every tenth, output chunks of long commands. Then, each repeated (medians):

  read_s       reading the analysed fields of every event (agents/analyze/log.py)
  analyse_s    read_s + every measure (agents/analyze/metrics.py)
  write_s      analyse_s + analysis.json, report.md and both figures as PNG and SVG
  cli_s        `mlgym analyze RUN --json` as a new process: imports, matplotlib, everything
  decode_all_s the baseline: decoding every event with the full protocol decoder, as a
               reader of the log that does not pick its fields would

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlgym.agents.analyze import read
from mlgym.agents.analyze import report
from mlgym.agents.analyze.metrics import analyse
from mlgym.bus import protocol as P
from mlgym.bus.broker import LOG_FILE
from mlgym.bus.eventlog import EventLog, LogReader

SYSTEM = "SETTING: You are the coder of a small research team. " + "COMMANDS: ... " * 400
OBS = "[File: /home/agent/workspace/strategy.py (40 lines total)]\n" + "1: x = 1\n" * 160


def build(run_dir: Path, events: int) -> int:
    """Write a team's run of exactly `events` events; returns how many were written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(run_dir / LOG_FILE)
    coders = [f"coder-{i}" for i in range(1, 6)]
    members = {"planner": "planner", **{c: "coder" for c in coders}}
    sessions = {c: P.MemberSession(f"s{i + 2}", f"t{i}") for i, c in enumerate(coders)}
    rows: list[tuple] = []
    ts = 1_000_000.0

    def add(topic: str, sender: str, body: P.Body) -> None:
        nonlocal ts
        ts += 0.05
        env = P.Envelope(body=body, id=P.new_id(), topic=topic, sender=sender, ts=ts)
        rows.append((len(rows) + 1, 1, ts, topic, "msgpack", P.encode(env)))

    add(
        "run/info",
        "supervisor",
        P.RunInfo(
            run="bench",
            task="prisonersDilemma",
            session="s1",
            env="ipc://x",
            team="bench-6",
            members=members,
            baseline={"Score": 2.37},
            directions={"Score": "max"},
            metric="Score",
            sessions=sessions,
            submission="strategy.py",
        ),
    )
    turn: dict[str, int] = {m: 0 for m in members}
    step: dict[str, int] = {c: 0 for c in coders}
    score = 2.0
    k = 0
    while len(rows) < events - 2:
        who = coders[k % len(coders)] if k % 6 else "planner"
        k += 1
        turn[who] += 1
        n = turn[who]
        msgs = (
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "task"}]
            if n == 1
            else []
        )
        msgs += [
            {"role": "assistant", "content": "DISCUSSION\nnext\n\n```\ngoto 3\n```\n"},
            {"role": "user", "content": OBS, "_obs": True},
        ]
        if who == "planner":
            if n % 10 == 1:
                c = coders[(n // 10) % len(coders)]
                add(
                    "team/work",
                    "planner",
                    P.WorkItem(item=f"w{n}", title="try", instructions="do it", assignee=c, to=[c]),
                )
            add(
                f"agents/{who}/step",
                who,
                P.AgentStep(
                    agent=who,
                    role="planner",
                    step=n,
                    action="wait",
                    observation=OBS,
                    messages=msgs,
                    execution_time=0.4,
                    prompt_tokens=3000,
                    completion_tokens=60,
                ),
            )
            add(
                f"status/{who}",
                who,
                P.AgentStatus(agent=who, role="planner", state="working", step=n),
            )
            continue
        sess = sessions[who].session
        step[who] += 1
        command = (
            "validate"
            if n % 8 == 0
            else (f"edit 1:3\nx = {n}\nend_of_edit" if n % 8 == 7 else "goto 3")
        )
        add(
            f"env/{sess}/command",
            "env",
            P.CommandEvent(session=sess, step=step[who], command=command, agent=who),
        )
        if n % 16 == 5:
            add(
                f"env/{sess}/output",
                "env",
                P.OutputChunk(session=sess, job="j", offset=0, data="x" * 2000),
            )
        if command == "validate":
            score += 0.01 if n % 3 else -0.02
            add(
                f"env/{sess}/score",
                "env",
                P.ScoreEvent(
                    session=sess,
                    step=step[who],
                    action="validate",
                    scores={"Score": round(score, 4)},
                ),
            )
        add(
            f"env/{sess}/observation",
            "env",
            P.ObservationEvent(session=sess, step=step[who], output=OBS, exit_code=0),
        )
        add(
            f"agents/{who}/step",
            who,
            P.AgentStep(
                agent=who,
                role="coder",
                step=n,
                action=command,
                observation=OBS,
                messages=msgs,
                prompt_tokens=4000,
                completion_tokens=80,
                execution_time=0.01,
            ),
        )
        add(f"status/{who}", who, P.AgentStatus(agent=who, role="coder", state="working", step=n))
        if n % 10 == 0:
            add(
                "team/result",
                who,
                P.WorkResult(
                    item=f"w{n}",
                    status="done",
                    summary="ok",
                    to=["planner"],
                    session=sess,
                    step=step[who],
                    scores={"Score": score},
                ),
            )
    rows = rows[: events - 2]
    add(
        "env/s1/command",
        "env",
        P.CommandEvent(session="s1", step=1, command="submit", agent="planner"),
    )
    add(
        "env/s1/score",
        "env",
        P.ScoreEvent(session="s1", step=1, action="submit", scores={"Score": score}),
    )
    for i in range(0, len(rows), 500):
        log.append(rows[i : i + 500])
    log.close()
    return len(rows)


def decode_all(run_dir: Path) -> int:
    reader = LogReader(run_dir / LOG_FILE)
    n = 0
    try:
        for rows in reader.read(1, chunk=4096):
            for _seq, _epoch, _ts, _topic, enc, payload in rows:
                P.decode(payload, enc.encode())
                n += 1
    finally:
        reader.close()
    return n


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlgym-bench-analyze-"))
    run = tmp / "run"
    try:
        n = build(run, args.events)
        size = sum(p.stat().st_size for p in run.iterdir())
        a = analyse(read(run), str(run))
        assert a.events == n, (a.events, n)
        r = {
            "events": n,
            "log_mb": round(size / 2**20, 1),
            "validations": len(a.validations),
            "members": len(a.members),
            "target_s": 2.0,
        }
        r["decode_all_s"] = round(timed(lambda: decode_all(run), args.repeats), 3)
        r["read_s"] = round(timed(lambda: read(run), args.repeats), 3)
        r["analyse_s"] = round(timed(lambda: analyse(read(run), str(run)), args.repeats), 3)
        r["write_s"] = round(
            timed(
                lambda: report.write_run(analyse(read(run), str(run)), tmp / "out"), args.repeats
            ),
            3,
        )
        cmd = [
            sys.executable,
            "-m",
            "mlgym.cli",
            "analyze",
            str(run),
            "--json",
            "--out",
            str(tmp / "cli"),
        ]
        r["cli_s"] = round(
            timed(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeats), 3
        )
        r["analyse_vs_decode_all"] = round(r["analyse_s"] / r["decode_all_s"], 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"mlgym analyze on {r['events']} events ({r['log_mb']} MB log, {r['members']} members, "
        f"{r['validations']} validations), medians of {args.repeats}:"
    )
    print(
        f"  read {r['read_s']:.3f} s, measures {r['analyse_s']:.3f} s (decoding every event fully: "
        f"{r['decode_all_s']:.3f} s, ratio {r['analyse_vs_decode_all']})"
    )
    print(
        f"  with the report and figures {r['write_s']:.3f} s; `mlgym analyze` as a command "
        f"{r['cli_s']:.3f} s (target <= 2 s)"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
