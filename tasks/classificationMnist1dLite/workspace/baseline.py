"""Baseline: a multilayer perceptron on the raw 40-point signals.

    python baseline.py [--epochs N]      # a few seconds on a CPU

Trains on data/train.csv, reports accuracy on data/validation.csv and writes
submission.csv (id, label) for data/test.csv.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from torch import nn

SEED = 0
THREADS = 1  # one thread: the same numbers whatever the machine's core count (docs/tasks.md)
EPOCHS = 60
BATCH = 100
LR = 1e-2


def tensors(df: pd.DataFrame) -> torch.Tensor:
    return torch.tensor(df[[c for c in df.columns if c.startswith("x")]].to_numpy(), dtype=torch.float32)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=EPOCHS)
    epochs = p.parse_args().epochs
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    train, val, test = (pd.read_csv(f"data/{n}.csv") for n in ("train", "validation", "test"))
    x, y = tensors(train), torch.tensor(train["label"].to_numpy())
    xv, yv = tensors(val), torch.tensor(val["label"].to_numpy())
    model = nn.Sequential(nn.Linear(x.shape[1], 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            model.eval()
            with torch.no_grad():
                acc = (model(xv).argmax(1) == yv).float().mean().item()
            print(f"epoch {epoch + 1}: train loss {loss.item():.3f}, validation accuracy {acc:.4f}")
    model.eval()
    with torch.no_grad():
        pred = model(tensors(test)).argmax(1).numpy()
    pd.DataFrame({"id": test["id"], "label": pred.astype(np.int64)}).to_csv("submission.csv", index=False)


if __name__ == "__main__":
    main()
