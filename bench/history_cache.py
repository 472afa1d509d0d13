"""History policies against a prompt cache (`mlgym bench agents --model SPEC`): how many prompt
tokens a server must process again each turn under `last:5` (MLGym's) and under the
cache-friendly `stable:5`, on the same scripted 30-turn trace.

The trace is real: the single agent's system and instance prompts, and 30 ACI commands (file
viewer, search, edits) run on a local ACI over a task's starting workspace, each observation
with its state lines, each reply in the classic DISCUSSION + command format. For each policy
the conversation is replayed turn by turn: the policy's view goes to the model (the official
`openai` client, max_tokens 8; the trace's own replies, not the model's, continue the
conversation), and the server's usage is recorded: prompt tokens and cached prompt tokens
(`prompt_tokens_details.cached_tokens`).

  uncached      prompt tokens the server computed (prompt - cached)
  appended      the tokens new in this turn (the last reply and observation): what `full`, which
                only ever appends, computes
  re-processed  uncached - appended: tokens the server had seen and computed again

`--model local` starts bench/cacheserver.py (token-level prefix reuse, as llama.cpp's slots);
any OpenAI-compatible URL works (`openai:NAME@http://host:port/v1`). Without cached-token
counts from the server, the cached prefix is estimated client-side (marked in the output).
The last line printed is one JSON object; target: stable:5 re-processes <= 20% of last:5's
after turn 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cacheserver import CacheServer  # noqa: E402

from mlgym.agents import prompts  # noqa: E402
from mlgym.agents.history import Entry, HistoryPolicy  # noqa: E402
from mlgym.agents.llm import Message, Price, PriceTable, create, parse_spec  # noqa: E402
from mlgym.agents.parsing import format_reply  # noqa: E402
from mlgym.agents.tools import role_tools  # noqa: E402
from mlgym.tools.aci import ACI  # noqa: E402

WORKSPACE = "/home/agent/workspace"
# (why, command): a researcher reading and changing a small training script
SCRIPT = [
    ("Start with the baseline script to see how training is set up.", 'open "baseline.py"'),
    ("Now the model definition it imports.", 'open "model.py"'),
    ("Find every function in the model file.", 'search_file "def "'),
    ("Look at the attention block more closely.", "goto 40"),
    ("Where is the learning rate set?", 'search_dir "lr"'),
    ("Back to the training loop.", 'open "baseline.py" 60'),
    ("Check the batch size and the number of steps.", 'search_file "batch"'),
    ("List the Python files in the workspace.", 'find_file "*.py"'),
    ("Read the rest of the training loop.", "scroll_down"),
    ("Look at the evaluation part again.", "scroll_up"),
    ("Try a smaller learning rate: change the optimizer line.", "EDIT_LR"),
    ("Check how the dataset is read.", 'search_file "open("'),
    ("Look at the embedding and output layers.", 'open "model.py" 1'),
    ("Search for dropout in the whole workspace.", 'search_dir "dropout"'),
    ("Read the forward pass.", "goto 90"),
]


def _edit_command(view: str) -> str:
    """An edit of the first line that mentions the learning rate (or line 1)."""
    for line in view.splitlines():
        head, _, text = line.partition(":")
        if head.strip().isdigit() and "lr" in text:
            n = int(head)
            name = text.split("=")[0].rstrip() if "=" in text else text.rstrip()
            return f"edit {n}:{n}\n{name} = 3e-4\nend_of_edit"
    return "edit 1:1\n# tuned learning rate\nend_of_edit"


async def build_trace(task: str, turns: int) -> tuple[str, str, list[tuple[str, str]]]:
    """(system prompt, instance prompt, [(reply, observation)] * turns), from a local ACI over the
    task's starting workspace."""
    from mlgym.tasks import registry

    t = registry.load_task(task)
    tools = role_tools("single")
    system = prompts.system_prompt("single", tools)
    instance = prompts.instance_prompt("single", t.spec.full_description(), step=0, remaining=50)
    out: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(t.dir / t.spec.files.workspace, tmp, dirs_exist_ok=True)

        async def no_shell(cmd: str, timeout: float | None = None):  # noqa: ARG001
            raise RuntimeError("the trace uses no shell commands")

        aci = ACI(tmp, shell=no_shell)
        last = ""
        for i in range(turns):
            why, command = SCRIPT[i % len(SCRIPT)]
            if command == "EDIT_LR":
                command = _edit_command(last)
            thought = (f"{why} This is step {i + 1}; the previous output showed "
                       f"{len(last.splitlines())} lines, so I continue from there.")
            res = await aci.run(command)
            state = aci.state()
            obs = prompts.observation_prompt(res.output, step=i + 1, remaining=50 - i - 1,
                                             open_file=state.open_file or "n/a", cwd=WORKSPACE)
            out.append((format_reply(thought, command), obs))
            last = res.output
    return system, instance, out


async def replay(spec: str, policy_spec: str, system: str, instance: str,
                 trace: list[tuple[str, str]]) -> list[dict]:
    """The conversation under one policy; per turn the server's prompt and cached tokens."""
    policy = HistoryPolicy(policy_spec)
    entries = [Entry(Message.system(system)), Entry(Message.user(instance))]
    rows = []
    prev_view: list[Message] = []
    free = PriceTable({parse_spec(spec)[1]: Price(0.0, 0.0)})  # tokens are counted, not dollars
    async with create(spec, prices=free, max_retries=2, timeout_s=600) as llm:
        for reply, obs in trace:
            view = policy.view(entries)
            t0 = time.perf_counter()
            out = await llm.complete(view, max_tokens=8, stream=True)
            rows.append({"prompt": out.usage.prompt_tokens, "cached": out.usage.cached_tokens,
                         "seconds": time.perf_counter() - t0,
                         "chars": sum(len(m.content) for m in view),
                         "shared_chars": _shared_chars(prev_view, view)})
            prev_view = view
            entries.append(Entry(Message.assistant(reply)))
            entries.append(Entry(Message.user(obs), observation=True))
    return rows


def _shared_chars(before: list[Message], after: list[Message]) -> int:
    """Characters of the leading messages the two views share (a client-side cache estimate)."""
    n = 0
    for a, b in zip(before, after):
        if a != b:
            break
        n += len(a.content)
    return n


def uncached(rows: list[dict], estimated: bool) -> list[float]:
    if not estimated:
        return [r["prompt"] - r["cached"] for r in rows]
    return [r["prompt"] * (1 - r["shared_chars"] / max(r["chars"], 1)) for r in rows]


def measure(results: dict[str, list[dict]], after: int) -> dict:
    estimated = not any(r["cached"] for rows in results.values() for r in rows)
    base = uncached(results["full"], estimated)
    out: dict = {"estimated": estimated, "after_turn": after, "policies": {}}
    for name, rows in results.items():
        unc = uncached(rows, estimated)
        re = [max(u - b, 0.0) for u, b in zip(unc, base)]
        tail = re[after:]
        out["policies"][name] = {
            "reprocessed_per_turn": [round(x) for x in re],
            "reprocessed_mean": round(statistics.mean(tail), 1),
            "reprocessed_median": round(statistics.median(tail), 1),
            "prompt_mean": round(statistics.mean(r["prompt"] for r in rows[after:]), 1),
            "cached_share": round(sum(r["cached"] for r in rows[after:])
                                  / max(sum(r["prompt"] for r in rows[after:]), 1), 3),
            "uncached_mean": round(statistics.mean(unc[after:]), 1),
            "seconds_mean": round(statistics.mean(r["seconds"] for r in rows[after:]), 4),
            # input cost in full-price prompt tokens when cached ones cost 50% (gpt-4o), 25%
            # (gpt-4.1, Gemini 2.5) or 10% (gpt-5) of the price
            "input_cost": {f"cached_at_{int(f * 100)}pct": round(statistics.mean(
                r["prompt"] - r["cached"] + f * r["cached"] for r in rows[after:]), 1)
                for f in (0.5, 0.25, 0.1)},
        }
    return out


async def main_async(args: argparse.Namespace) -> dict:
    system, instance, trace = await build_trace(args.task, args.turns)
    policies = ["full", "last:5", *args.policy]
    with ExitStack() as stack:
        spec = args.model
        if spec == "local":
            srv = stack.enter_context(CacheServer(slots=args.slots, block=args.block,
                                                  min_cached=args.min_cached,
                                                  prefill_tps=args.prefill_tps))
            spec = f"openai:local@{srv.url}"
        results = {}
        for p in policies:
            results[p] = await replay(spec, p, system, instance, trace)
    out = measure(results, args.after)
    last5 = out["policies"]["last:5"]["reprocessed_mean"]
    for p in args.policy:
        mean = out["policies"][p]["reprocessed_mean"]
        out["policies"][p]["ratio_to_last5"] = round(mean / last5, 4) if last5 else None
    out.update({"model": args.model, "task": args.task, "turns": args.turns, "target_ratio": 0.2,
                "observation_chars_mean": round(statistics.mean(len(o) for _, o in trace)),
                "reply_chars_mean": round(statistics.mean(len(r) for r, _ in trace))})
    return out


def report(r: dict) -> None:
    how = "client-side estimate (the server reports no cached tokens)" if r["estimated"] else \
        "from the server's usage (prompt_tokens_details.cached_tokens)"
    print(f"prompt tokens re-processed per turn, {r['turns']}-turn scripted trace on {r['task']}, "
          f"model {r['model']}; {how}; turns {r['after_turn'] + 1}-{r['turns']}:")
    for name, p in r["policies"].items():
        ratio = f"   {p['ratio_to_last5']:.3f} of last:5's" if "ratio_to_last5" in p else ""
        print(f"  {name:12} re-processed mean {p['reprocessed_mean']:7.1f}  median "
              f"{p['reprocessed_median']:7.1f}  prompt {p['prompt_mean']:7.1f}  cached "
              f"{p['cached_share']:.0%}{ratio}")
    base = r["policies"]["last:5"]["input_cost"]
    print("  input cost against last:5's, cached tokens at 50% / 25% / 10% of the price:")
    for name, p in r["policies"].items():
        rel = " / ".join(f"{p['input_cost'][k] / base[k]:.2f}" for k in base)
        print(f"  {name:12} {rel}")
    for name, p in r["policies"].items():
        print(f"  per turn {name:10} " + " ".join(str(x) for x in p["reprocessed_per_turn"]))
    print(f"  (target: the cache-friendly policy <= {r['target_ratio']:.0%} of last:5's)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="local",
                    help="openai:NAME@URL, or `local` (bench/cacheserver.py)")
    ap.add_argument("--task", default="languageModelingCharLite")
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--after", type=int, default=10, help="measure the turns after this one")
    ap.add_argument("--policy", action="append", default=None,
                    help="cache-friendly policies to compare (repeatable; default stable:5)")
    ap.add_argument("--slots", type=int, default=4, help="local server: cache slots")
    ap.add_argument("--block", type=int, default=1,
                    help="local server: count cached tokens in whole blocks (OpenAI: 128)")
    ap.add_argument("--min-cached", type=int, default=0,
                    help="local server: prompts shorter than this are not cached (OpenAI: 1024)")
    ap.add_argument("--prefill-tps", type=float, default=0.0,
                    help="local server: sleep for uncached tokens at this rate (tokens/s)")
    args = ap.parse_args(argv)
    args.policy = args.policy or ["stable:5"]
    r = asyncio.run(main_async(args))
    report(r)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
