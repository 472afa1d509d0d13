"""Worker-side host for the repeated games: keeps one history per game and calls the agent's
`row_strategy(history)` once per game per round, in the confined worker.

The parent sends the column moves of the previous round and gets the row moves of this
round; moves are checked here for a precise message, and again by the parent (which trusts
nothing that crosses the pipe).
"""

from __future__ import annotations

import numbers
import random
import traceback

import numpy as np
from calltimer import CallTimeout, timed_call
from evalkit import EvalError

state: dict = {}


def setup(agent_module, config: dict) -> None:
    fn = getattr(agent_module, "row_strategy", None)
    if not callable(fn):
        raise EvalError("strategy_import_error", "strategy.py must define a function row_strategy(history)")
    random.seed(config["seed"])
    np.random.seed(config["seed"] % 2**32)
    state.update(fn=fn, kind=config["move_kind"], per_call=float(config["per_call_timeout_s"]),
                 fields=int(config.get("battlefields", 6)), soldiers=int(config.get("soldiers", 120)))


def _int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EvalError("illegal_move", f"{where}: expected an integer, got {type(value).__name__} {value!r}"[:300])
    return int(value)


def check_move(move, where: str):
    """The move in canonical form (int, or list of ints for Blotto), or an illegal_move error."""
    if state["kind"] == "binary":
        if isinstance(move, bool):
            move = int(move)
        m = _int(move, where)
        if m not in (0, 1):
            raise EvalError("illegal_move", f"{where}: move must be 0 or 1, got {m}")
        return m
    # Blotto, as MLGym's evaluator validates: every allocation a Python int (numpy integers
    # and arrays of them are refused, as there), none negative, at most `soldiers` in all
    fields, soldiers = state["fields"], state["soldiers"]
    if isinstance(move, np.ndarray):
        move = list(move)
    if not isinstance(move, (list, tuple)) or len(move) != fields:
        raise EvalError("illegal_move", f"{where}: expected a list of {fields} integers, got {move!r}"[:300])
    if not all(isinstance(x, int) and x >= 0 for x in move):
        kinds = sorted({type(x).__name__ for x in move})
        raise EvalError("illegal_move", f"{where}: All allocations must be non-negative integers "
                        f"(got {move!r}, of {', '.join(kinds)}; convert with int())"[:300])
    m = [int(x) for x in move]
    if sum(m) > soldiers:
        raise EvalError("illegal_move", f"{where}: Total number of soldiers must not exceed {soldiers} "
                        f"(allocation {m} uses {sum(m)})")
    return m


def handle(op: str, args: dict):
    if op == "new_games":
        state["hist"] = [[] for _ in range(int(args["n"]))]
        state["last_row"] = None
        state["round"] = 0
        return len(state["hist"])
    if op == "play":
        hist, fn, limit = state["hist"], state["fn"], state["per_call"]
        last_col = args.get("last_col")
        if last_col is not None:
            for h, r, c in zip(hist, state["last_row"], last_col, strict=True):
                h.append((r, c))
        rnd = state["round"]
        moves = []
        for g, h in enumerate(hist):
            where = f"game {g + 1}, round {rnd + 1}"
            try:
                move, _ = timed_call(fn, (list(h),), limit)
            except CallTimeout:
                raise EvalError("strategy_timeout", f"row_strategy took longer than {limit:g} s ({where})") from None
            except Exception as exc:
                tb = "".join(traceback.format_exception(exc, limit=-6))
                raise EvalError("strategy_exception", f"row_strategy raised {type(exc).__name__}: {exc} ({where})\n{tb}") from None
            moves.append(check_move(move, where))
        state["last_row"] = moves
        state["round"] = rnd + 1
        return moves
    raise EvalError("evaluator_crash", f"unknown op {op!r}")
