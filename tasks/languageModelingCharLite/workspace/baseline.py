"""Baseline: a small character-level GPT trained on data/train.txt.

    python baseline.py [--steps N]   # about 35 s of CPU (one thread)

Saves model/model.safetensors and model/model_config.json: the submission. The evaluator
rebuilds the GPT of model.py from model_config.json (its own copy: edits to model.py are
not scored) and measures the loss on held-out plays. Characters map to ids by their
position in data/vocab.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from model import GPT, GPTConfig

SEED = 0
THREADS = 1  # one thread: the same numbers whatever the machine's core count
SEQ_LEN = 128
BATCH = 16
STEPS = 300
LR = 3e-3
WARMUP = 50
EVAL_TOKENS = 65_536


def encode(text: str, chars: str) -> np.ndarray:
    table = {c: i for i, c in enumerate(chars)}
    return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))


def batch(data: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(data) - SEQ_LEN - 1, (BATCH,), generator=gen)
    w = torch.stack([data[s: s + SEQ_LEN + 1] for s in starts.tolist()])
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model: GPT, data: torch.Tensor) -> float:
    model.eval()
    n = min(EVAL_TOKENS, len(data) - 1) // SEQ_LEN
    w = data[: n * SEQ_LEN + 1]
    x, y = w[:-1].view(n, SEQ_LEN), w[1:].view(n, SEQ_LEN)
    losses = [model(x[i: i + 64], y[i: i + 64])[1].item() * len(x[i: i + 64]) for i in range(0, n, 64)]
    model.train()
    return sum(losses) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=STEPS)
    steps = p.parse_args().steps
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    chars = json.loads(Path("data/vocab.json").read_text())["chars"]
    train = torch.from_numpy(encode(Path("data/train.txt").read_text(), chars))
    val = torch.from_numpy(encode(Path("data/validation.txt").read_text(), chars))
    cfg = GPTConfig(vocab_size=len(chars), n_layer=2, n_head=4, n_embd=96, mlp_ratio=4)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    t0 = time.time()
    for step in range(steps):
        x, y = batch(train, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    print(f"validation loss {evaluate(model, val):.4f} nats/char", flush=True)
    out = Path("model")
    out.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "model_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


if __name__ == "__main__":
    main()
