"""The prompt-cache bench: bench/cacheserver.py reports prefix reuse the way llama.cpp's slots
(and, with blocks, OpenAI's cache) do, through the official `openai` client; `mlgym bench
agents --model local` replays a scripted trace under each history policy and reports the prompt
tokens re-processed per turn (the target itself is the bench's to report, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from cacheserver import CacheServer, render, tokenize  # noqa: E402

from mlgym.agents.llm import Message, Price, PriceTable, create  # noqa: E402

FREE = PriceTable({"local": Price(0.0, 0.0)})


async def test_cache_server_reports_the_shared_prefix_through_the_openai_client():
    first = [Message.system("You are an ML researcher. " * 20), Message.user("Read train.py")]
    second = [*first, Message.assistant("DISCUSSION\nok\n```\nopen train.py\n```"),
              Message.user("1: import torch\n2: import numpy")]
    changed = [first[0], Message.user("Read model.py"), *second[2:]]
    with CacheServer(slots=1) as srv:
        async with create(f"openai:local@{srv.url}", prices=FREE, max_retries=0) as llm:
            a = await llm.complete(first, max_tokens=8)
            b = await llm.complete(second, max_tokens=8, stream=True)
            c = await llm.complete(changed, max_tokens=8, stream=True)
    n_first = len(tokenize(render([{"role": m.role, "content": m.content} for m in first])))
    assert (a.usage.prompt_tokens, a.usage.cached_tokens) == (n_first, 0)
    # the second prompt extends the first (the assistant's turn it ended with included): all of
    # the first is reused
    assert b.usage.prompt_tokens > n_first and b.usage.cached_tokens == n_first
    # a change in the second message: only the system prompt (and a little) is reused
    assert 0 < c.usage.cached_tokens < n_first - 2
    assert c.usage.cached_tokens < b.usage.cached_tokens


async def test_cache_server_blocks_and_minimum_like_openai():
    long = [Message.system("word " * 3000), Message.user("go")]
    short = [Message.system("word " * 100), Message.user("go")]
    with CacheServer(slots=2, block=128, min_cached=1024) as srv:
        async with create(f"openai:local@{srv.url}", prices=FREE, max_retries=0) as llm:
            await llm.complete(long, max_tokens=8)
            again = await llm.complete(long, max_tokens=8)
            await llm.complete(short, max_tokens=8)
            short_again = await llm.complete(short, max_tokens=8)
    assert again.usage.cached_tokens % 128 == 0 and again.usage.cached_tokens > 2800
    assert short_again.usage.cached_tokens == 0  # under 1024 tokens: never cached


def test_bench_agents_with_a_model_reports_reprocessed_tokens_per_policy():
    out = subprocess.run([sys.executable, "-m", "mlgym.cli", "bench", "agents", "--model", "local",
                          "--turns", "16", "--after", "6"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["estimated"] is False and r["turns"] == 16
    full, last5, stable = (r["policies"][p] for p in ("full", "last:5", "stable:5"))
    assert full["reprocessed_per_turn"] == [0] * 16  # `full` only appends
    # last:5 starts stubbing at the 7th turn and re-processes every turn from then on
    assert last5["reprocessed_per_turn"][:6] == [0] * 6
    assert all(x > 0 for x in last5["reprocessed_per_turn"][6:])
    # stable:5 stubs 10 at once when 15 observations are in: the 16th turn only
    assert [i for i, x in enumerate(stable["reprocessed_per_turn"]) if x] == [15]
    assert stable["ratio_to_last5"] < 1 and stable["cached_share"] > last5["cached_share"]
    assert "re-processed" in out.stdout and "of last:5's" in out.stdout
