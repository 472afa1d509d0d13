"""Codec benchmark (`mlgym bench codec`): what decoding envelopes costs, in one process.

The broker decodes every published envelope to validate it, a whole batch per call
(`list[Envelope]`), and clients decode every message they receive. The protocol's Structs are
declared gc=False (not tracked by Python's cyclic garbage collector); the baseline is the same
module compiled again with gc=True, so both sides run the same schema in the same process,
alternating, and the machine's drift moves both. Payloads are the bus benchmark's 1 KiB notes.
Prints microseconds per envelope (medians of the rounds) and the ratio; the last line is one
JSON object.

It also times the broker's own batch check (`_batch_valid` in bus/broker.py) as it is, decoding
envelope heads (`EnvelopeHead`: the body only as far as its `kind`), against the same function
decoding whole envelopes, which is what the broker did before it left bodies to receivers.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import msgspec

from mlgym.bus import protocol as P


def bus_bench() -> types.ModuleType:
    """bench/bus.py, loaded by path (a plain `import bus` could find the repository's bus/)."""
    path = Path(__file__).resolve().parent / "bus.py"
    spec = importlib.util.spec_from_file_location("mlgym_bench_bus", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tracked_protocol() -> types.ModuleType:
    """bus/protocol.py compiled again with every Struct tracked by the cyclic GC."""
    source = Path(P.__file__).read_text()
    if "gc=False" not in source:
        raise SystemExit("bus/protocol.py declares no gc=False Struct: nothing to compare")
    mod = types.ModuleType("mlgym_bench_protocol_tracked")
    sys.modules[mod.__name__] = mod  # msgspec resolves annotations through sys.modules
    exec(compile(source.replace("gc=False", "gc=True"), P.__file__, "exec"), mod.__dict__)
    assert mod.Envelope.__struct_config__.gc and not P.Envelope.__struct_config__.gc
    return mod


def per_envelope_us(fn: Any, calls: int, per_call: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / (calls * per_call) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512, help="envelopes per batch decode")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=40, help="decode calls per round (single: --batch decodes each)")
    ap.add_argument("--gen0", type=int, default=gc.get_threshold()[0],
                    help="the collector's youngest-generation threshold (Python's default; "
                         "the broker's own process runs at 20000)")
    a = ap.parse_args()
    gc.set_threshold(a.gen0, *gc.get_threshold()[1:])

    tracked = tracked_protocol()
    payload = bus_bench().payload  # the same 1 KiB messages as the bus benchmark
    msgs = [payload(i) for i in range(a.batch)]
    packed = msgspec.msgpack.encode([msgspec.Raw(m) for m in msgs])
    sides = {"untracked": P, "tracked": tracked}
    batch = {k: msgspec.msgpack.Decoder(list[m.Envelope]) for k, m in sides.items()}
    single = {k: msgspec.msgpack.Decoder(m.Envelope) for k, m in sides.items()}
    same = [msgspec.to_builtins(batch[k].decode(packed)) for k in sides]
    assert same[0] == same[1], "the two sides decode to different values"
    results: dict[str, dict[str, list[float]]] = {k: {"batch": [], "single": []} for k in sides}
    for r in range(a.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for k in order:
            dec_b, dec_s = batch[k].decode, single[k].decode
            results[k]["batch"].append(per_envelope_us(lambda: dec_b(packed), a.calls, a.batch))
            m0 = msgs[r % len(msgs)]
            results[k]["single"].append(
                per_envelope_us(lambda: [dec_s(m0) for _ in range(a.batch)], a.calls, a.batch))
    summary: dict[str, Any] = {"gen0_threshold": a.gen0}
    check = batch_check(msgs, a.rounds, a.calls)
    for w in ("batch", "single"):
        untracked = statistics.median(results["untracked"][w])
        tracked_us = statistics.median(results["tracked"][w])
        print(f"{w:6} decode of a 1 KiB envelope: untracked {untracked:.3f} us, "
              f"tracked {tracked_us:.3f} us, ratio {untracked / tracked_us:.2f}"
              f" (medians of {a.rounds} rounds, gen0 threshold {a.gen0})")
        summary.update({f"{w}_untracked_us": round(untracked, 4),
                        f"{w}_tracked_us": round(tracked_us, 4),
                        f"{w}_ratio": round(untracked / tracked_us, 3)})
    head, whole = (statistics.median(check[k]) for k in ("head", "whole"))
    print(f"broker batch check of a 1 KiB envelope: heads {head:.3f} us, whole envelopes "
          f"{whole:.3f} us, ratio {head / whole:.2f} (medians of {a.rounds} rounds)")
    summary.update({"check_head_us": round(head, 4), "check_whole_us": round(whole, 4),
                    "check_ratio": round(head / whole, 3)})
    print(json.dumps(summary))


def batch_check(msgs: list[bytes], rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per envelope of the broker's `_batch_valid` on one batch, rounds
    alternating between its own decoder (envelope heads) and one for whole envelopes."""
    from mlgym.bus import broker as B

    packed = msgspec.msgpack.encode([msgspec.Raw(m) for m in msgs])
    topics, lens = [P.decode(m).topic for m in msgs], [len(m) for m in msgs]
    decoders = {"head": B._ENVELOPE_LIST, "whole": msgspec.msgpack.Decoder(list[P.Envelope])}
    out: dict[str, list[float]] = {k: [] for k in decoders}
    try:
        for r in range(rounds):
            for k in (list(decoders) if r % 2 == 0 else list(reversed(decoders))):
                B._ENVELOPE_LIST = decoders[k]
                assert B._batch_valid(topics, lens, packed)
                out[k].append(per_envelope_us(lambda: B._batch_valid(topics, lens, packed),
                                              calls, len(msgs)))
    finally:
        B._ENVELOPE_LIST = decoders["head"]
    return out


if __name__ == "__main__":
    main()
