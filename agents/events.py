"""Reading a run's event log (the broker's events.sqlite) after the fact: trajectories, replay,
resume and results are all derived from it, so it is the one record of a run."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from mlgym.bus import protocol as P
from mlgym.bus.broker import LOG_FILE
from mlgym.bus.eventlog import LogReader


def log_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOG_FILE


def iter_events(run_dir: str | Path, prefixes: Sequence[str] = ("",), from_seq: int = 1) -> Iterator[P.Envelope]:
    """Every logged message under `prefixes`, in sequence order, seq and epoch filled in.
    Rows whose body this version cannot read (a newer kind) are skipped."""
    path = log_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no event log at {path}")
    reader = LogReader(path)
    try:
        for rows in reader.read(from_seq, prefixes=list(prefixes)):
            for seq, epoch, _ts, _topic, enc, payload in rows:
                try:
                    env = P.decode(payload, enc.encode())
                except P.ProtocolError:
                    continue
                env.seq, env.epoch = seq, epoch
                yield env
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise  # else: the broker has created the file but not its table yet
    finally:
        reader.close()


def events(run_dir: str | Path, prefixes: Sequence[str] = ("",), from_seq: int = 1) -> list[P.Envelope]:
    return list(iter_events(run_dir, prefixes, from_seq))


def gaps(run_dir: str | Path) -> list[tuple[int, int]]:
    """Missing sequence ranges in the log (there should be none): [(first missing, last missing)]."""
    reader = LogReader(log_path(run_dir))
    try:
        seqs = [r[0] for rows in reader.read(1) for r in rows]
    finally:
        reader.close()
    out = []
    expected = 1
    for s in seqs:
        if s > expected:
            out.append((expected, s - 1))
        expected = s + 1
    return out
