"""`mlgym bench bus` (and `codec`) end to end at a tiny size: every phase runs and the last line
is the JSON object the issue names. Only counts and keys are checked (rates and latencies are the
benchmark's to report, never a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import zmq

from mlgym.bus import protocol as P


def test_bench_bus_runs_every_phase_and_ends_with_its_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlgym.cli", "bench", "bus", "--count", "3000", "--burst", "3000",
         "--latency-seconds", "1", "--lat-rate", "1000", "--repeats", "1", "--kill-count", "20"],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    required = ("broker_msgs_per_s", "raw_msgs_per_s", "ratio", "p50_ms", "p99_ms", "lost", "duplicated")
    for key in required:
        assert key in summary, key
    assert summary["broker_msgs_per_s"] > 0 and summary["raw_msgs_per_s"] > 0
    assert summary["p99_ms"] > 0
    assert (summary["lost"], summary["duplicated"], summary["throughput_gaps"]) == (0, 0, 0)
    assert summary["kill_acked_lost"] == 0 and summary["kill_resynced"] is True
    assert summary["repeats"] == 1
    throughput = next(line for line in lines if line.startswith("  throughput #1"))
    assert "before" in throughput and "after" in throughput  # the raw pair on both sides


def test_bench_codec_compares_untracked_with_tracked_structs_and_the_batch_checks() -> None:
    out = subprocess.run([sys.executable, "-m", "mlgym.cli", "bench", "codec", "--rounds", "2",
                          "--calls", "2", "--batch", "64"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for side in ("batch", "single"):
        assert summary[f"{side}_untracked_us"] > 0 and summary[f"{side}_tracked_us"] > 0
        assert summary[f"{side}_ratio"] > 0
    assert summary["check_head_us"] > 0 and summary["check_whole_us"] > 0


def test_bench_subscriber_counts_the_seqs_that_did_not_arrive(tmp_path) -> None:
    """The throughput subscriber counts gaps from its first and last stamp and its count: fed
    seqs 1, 2, 4, 5, 8 (3, 6 and 7 missing) by a real XPUB, it reports 3."""
    bench_bus = Path(__file__).resolve().parent.parent / "bench" / "bus.py"
    url = f"ipc://{tmp_path}/feed"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(url)
    sub = subprocess.Popen([sys.executable, str(bench_bus), "--role", "sub", "--endpoint", url,
                            "--count", "5", "--stamped", "--idle", "5"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None and sub.stdout.readline().strip() == "READY"
        assert pub.poll(10_000) and pub.recv()[:1] == b"\x01"  # subscribed
        for seq in (1, 2, 4, 5, 8):
            pub.send_multipart([b"bench/load", P.STAMP.pack(seq, 1), P.MSGPACK, b"\x80"])
        out, _ = sub.communicate(timeout=30)
    finally:
        sub.kill()
        pub.close(0)
        ctx.term()
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["received"], result["gaps"]) == (5, 3)
