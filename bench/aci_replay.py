"""ACI fidelity against MLGym's published runs: replay every file-tool action (open, goto,
scroll_*, create, edit, insert, search_*, find_file) of MLGym's trajectories through this
project's ACI and compare the observation with the one MLGym gave, character for character.

    mlgym bench aci_replay --mlgym PATH_TO_MLGYM_CHECKOUT [--tasks blotto,3SATTime] [--runs 48]

PATH is a clone of facebookresearch/MLGym (its `trajectories/mlgym_bench_v0/` and `data/`).
Each run's workspace starts from MLGym's starter files as that run saw them (rebuilt from the
run's own first full view of the file; else the checkout's copy without the copyright header
added after the runs). Shell actions run (10 s limit) so that the files evolve as they did;
Python runs, validate and submit are skipped (they do not change the files the viewer shows).
Differences are classed: `intentional` (this project refuses on purpose: read-only files,
backwards ranges, an edit naming another file), `beyond the budget` (the step MLGym answered
`Exited (max_steps)` without running it), `starter unknown` (the view depends on a starter
file the run never showed in full) and `different`. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import shutil
import tempfile
from pathlib import Path

from mlgym.tools.aci import ACI
from mlgym.tools.aci.localshell import LocalShell

WS = "/home/agent/workspace"
FILE_TOOLS = ("open", "goto", "scroll_down", "scroll_up", "create", "edit", "insert",
              "search_dir", "search_file", "find_file")
STARTER = {"battleOfSexes": ["strategy.py", "target.py", "evaluate.py"],
           "prisonersDilemma": ["strategy.py", "target.py", "evaluate.py"],
           "blotto": ["strategy.py", "target.py", "evaluate.py"],
           "3SATTime": ["heuristic.py", "evaluate.py", "solver.py"]}
HEADER = re.compile(r'^"""\nCopyright \(c\) Meta Platforms, Inc\. and affiliates\.\n"""\n')


def starter(steps: list[dict], checkout: Path, task: str, name: str) -> tuple[str, bool]:
    """(content, known): the file as the run first showed it whole, before any change."""
    head = re.compile(rf"\[File: {WS}/{re.escape(name)} \((\d+) lines total\)\]\n")
    for step in steps:
        obs, action = step.get("observation") or "", step["action"].strip()
        if "File updated." in obs or action.startswith("create"):
            break
        m = head.match(obs)
        if action.startswith("open") and m and "more lines" not in obs:
            lines = obs[m.end():].split("\n")
            if len(lines) >= int(m.group(1)):
                return "".join(x.split(":", 1)[1] + "\n" for x in lines[: int(m.group(1))]), True
    return HEADER.sub("", (checkout / "data" / task / name).read_text()), False


def classify(want: str, got: str, unknown: set[str]) -> str:
    if got == want:
        return "identical"
    if want.startswith("Exited ("):
        return "beyond the budget"
    if any(s in got for s in ("read-only file", "is before start_line", "works on the open file")):
        return "intentional"
    if any(f"{WS}/{f} (" in want for f in unknown):
        return "starter unknown"
    return "different"


async def replay(traj: Path, checkout: Path, task: str, stats: dict, examples: list) -> bool:
    """Replay one run; False when its trajectory file cannot be read."""
    try:
        steps = json.loads(traj.read_text())["trajectory"]
    except (OSError, ValueError, KeyError):
        return False
    root = Path(tempfile.mkdtemp(prefix="aci-replay-"))
    unknown: set[str] = set()
    try:
        for name in STARTER[task]:
            text, known = starter(steps, checkout, task, name)
            (root / name).write_text(text)
            if not known:
                unknown.add(name)
        (root / "evaluate.py").chmod(0o555)  # MLGym's evaluation_read_only
        aci = ACI(root, shell=LocalShell(root, WS), read_only=["evaluate.py"])
        for step in steps:
            action = step["action"].strip("\n")
            word = action.split()[0] if action.split() else ""
            if word in FILE_TOOLS:
                got = (await aci.run(action)).output.replace(str(root), WS)
                kind = classify((step.get("observation") or "").rstrip("\n"), got, unknown)
                stats[word][kind] += 1
                if kind == "different" and len(examples) < 20:
                    examples.append({"run": traj.parent.name, "action": action[:200]})
            elif word and word not in ("validate", "submit") and "python" not in action:
                try:
                    await asyncio.wait_for(aci.run(action, timeout=10), 20)
                except (asyncio.TimeoutError, OSError):
                    pass
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return True


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mlgym", type=Path, required=True, help="a clone of facebookresearch/MLGym")
    ap.add_argument("--tasks", default=",".join(STARTER))
    ap.add_argument("--runs", type=int, default=48, help="runs per task at most")
    a = ap.parse_args()
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    examples: list[dict] = []
    runs = unreadable = 0
    for task in a.tasks.split(","):
        trajs = sorted(p for p in (a.mlgym / "trajectories" / "mlgym_bench_v0").glob(
            f"*__{task}__*/{task}.traj") if "gemini-20-pro" not in p.parent.name)[: a.runs]
        for traj in trajs:
            if await replay(traj, a.mlgym, task, stats, examples):
                runs += 1
            else:
                unreadable += 1
    total: collections.Counter = collections.Counter()
    for tool, counts in sorted(stats.items()):
        total.update(counts)
        print(f"{tool:<12} " + "  ".join(f"{k}: {v}" for k, v in counts.most_common()))
    print(json.dumps({"runs": runs, "unreadable": unreadable,
                      "file_actions": sum(total.values()), **total,
                      "examples": examples}))


if __name__ == "__main__":
    asyncio.run(main())
