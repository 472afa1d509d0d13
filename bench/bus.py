"""Bus benchmark (`mlgym bench bus`): the broker against raw pyzmq, in one run.

Phases (publisher and subscriber are separate OS processes: this script re-runs itself with
--role):
  throughput  N messages of 1 KiB through the broker (validate, stamp, SQLite WAL commit,
              publish; its C loop when built, MLGYM_BUS_LOOP=python for the Python one) and
              through a raw XPUB->SUB pair with no broker, measured just before and just after
              the broker (the mean of the two is that repeat's baseline, so a machine that
              speeds up or slows down during a repeat moves both sides); msgs/s at the
              subscriber, first to last message. Also through libzmq's own C forwarder
              (zmq.proxy: no stamping, validation or log) between the same publisher and
              subscriber: the ceiling for any second hop on this machine (proxy_ratio).
              Repeated; medians reported.
  latency     10,000 msg/s paced, one-way publisher->subscriber latency p50/p99 (broker and
              raw). Repeated; medians reported.
  burst       100,000 messages as fast as possible at a slow subscriber (the real BusClient)
              on a broker with small queues, so it loses live messages and must refill from
              history; then a late joiner replays the whole burst. Lost and duplicated counts.
  kill        acked publishes, SIGKILL of the broker, restart: acked messages all in history,
              a live subscriber sees the new epoch and resynchronises.
The last line printed is one JSON object. `noisy` in it is true when the raw pair itself was
unsteady (p99 over 2 ms, or its throughput runs more than 1.5x apart): then the machine, not
the broker, moved the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.backend

from mlgym.bus import protocol as P

SIZE = 1024
TOPIC = "bench/load"
# the raw pair, with no broker, is the control: past these the machine itself was unsteady
# (quiet runs here: p99 0.2-0.4 ms, repeats within 1.3x of each other)
NOISY_RAW_P99_MS = 2.0
NOISY_RAW_SPREAD = 1.5


# --------------------------------------------------------------------------- message bodies


def payload(i: int = 0, t_ns: int = 0, size: int = SIZE) -> bytes:
    """An encoded envelope of exactly `size` bytes (msgpack), carrying index and send time."""
    env = P.Envelope(body=P.Note(text="", data={"i": i, "t": t_ns}), id=P.new_id(), topic=TOPIC,
                     sender="bench", ts=1.0)
    pad = size - len(P.encode(env))
    for _ in range(4):  # msgpack str headers grow with length: converge on the exact size
        env.body.text = "x" * max(pad, 0)
        pad += size - len(P.encode(env))
    return P.encode(env)


def index_and_time(data: bytes) -> tuple[int, int]:
    body = P.decode(data).body
    assert isinstance(body, P.Note)
    return int(body.data["i"]), int(body.data["t"])


# --------------------------------------------------------------------------- child roles


def role_pub(a: argparse.Namespace) -> None:
    """XPUB with NODROP (waits instead of dropping); sends when the peer has subscribed."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.XPUB)
    s.sndhwm = 100_000
    s.setsockopt(zmq.XPUB_NODROP, 1)
    s.linger = -1
    (s.bind if a.bind else s.connect)(a.endpoint)
    s.recv()  # the subscription: someone is listening
    print("READY", flush=True)
    sys.stdin.readline()  # go
    topic, enc = TOPIC.encode(), P.MSGPACK
    if a.rate:
        interval = 1e9 / a.rate
        t0 = time.monotonic_ns()
        i = 0
        while i < a.count:
            due = t0 + int(i * interval)
            now = time.monotonic_ns()
            if now < due:
                time.sleep((due - now) / 1e9)
                continue
            while i < a.count and t0 + int(i * interval) <= now:  # catch up in small bursts
                s.send_multipart([topic, enc, payload(i, time.monotonic_ns())])
                i += 1
    elif a.distinct:
        for i in range(a.count):
            s.send_multipart([topic, enc, payload(i)])
    else:
        data = payload(0)
        send = zmq.backend.Socket.send  # integer flags: pyzmq's send_multipart is 5x slower
        more = int(zmq.SNDMORE)
        for _ in range(a.count):
            send(s, topic, more)
            send(s, enc, more)
            send(s, data, 0)
    s.close()
    ctx.term()
    print(json.dumps({"sent": a.count}), flush=True)


def role_sub(a: argparse.Namespace) -> None:
    """Counts messages; with --stamped checks seq contiguity (broker), with --latency decodes
    the send time. Reads the known frame count with the backend's recv (the bench's own
    traffic only), so the subscriber costs little CPU next to what it measures. Gaps are the
    seqs between the first and the last that did not arrive: the same sum as adding up each
    message's jump from the one before, without unpacking every stamp (which made the
    subscriber's work per message heavier through the broker than in the raw pair)."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.rcvhwm = 1_000_000
    s.rcvtimeo = int(a.idle * 1000)
    s.subscribe(TOPIC.encode())
    s.connect(a.endpoint)
    print("READY", flush=True)
    n = gaps = 0
    first_frames = frames = []
    lat: list[int] = []
    first = last = 0
    recv = zmq.backend.Socket.recv
    nframes = 4 if a.stamped else 3
    unpack = P.STAMP.unpack
    while n < a.count:
        try:
            frames = [recv(s, 0) for _ in range(nframes)]
        except zmq.Again:
            break
        now = time.monotonic_ns()
        if n == 0:
            first, first_frames = now, frames
        last = now
        n += 1
        if a.latency:
            _, t = index_and_time(frames[-1])
            lat.append(now - t)
    if a.stamped and n:  # `frames`: the last message read whole
        gaps = unpack(frames[1])[0] - unpack(first_frames[1])[0] + 1 - n
    out: dict[str, Any] = {"received": n, "gaps": gaps, "seconds": (last - first) / 1e9}
    if lat:
        lat.sort()
        out["p50_ms"] = lat[len(lat) // 2] / 1e6
        out["p99_ms"] = lat[int(len(lat) * 0.99)] / 1e6
        out["max_ms"] = lat[-1] / 1e6
    print(json.dumps(out), flush=True)


def role_proxy(a: argparse.Namespace) -> None:
    """libzmq's forwarder in C, XSUB (publishers connect to --endpoint) to XPUB (subscribers
    connect to --url), nothing dropped: the reference for what a second hop costs here."""
    ctx = zmq.Context()
    front = ctx.socket(zmq.XSUB)
    front.rcvhwm = 100_000
    front.bind(a.endpoint)
    back = ctx.socket(zmq.XPUB)
    back.sndhwm = 100_000
    back.setsockopt(zmq.XPUB_NODROP, 1)
    back.bind(a.url)
    print("READY", flush=True)
    zmq.proxy(front, back)  # until killed


def role_client_sub(a: argparse.Namespace) -> None:
    """The real BusClient subscription: slow (sleeps while consuming) or a late joiner."""
    from mlgym.bus import connect

    async def run() -> dict[str, Any]:
        async with connect(a.url, sender="bench-sub", hwm=a.hwm, queue_size=a.queue) as bus:
            sub = bus.subscribe("bench/", from_seq=a.from_seq)
            await sub.ready(30)
            print("READY", flush=True)
            seen: set[int] = set()
            received = 0
            last_seq = 0
            ordered = True
            t0 = time.monotonic()
            while len(seen) < a.count:
                try:
                    env = await sub.get(a.idle)
                except TimeoutError:
                    break
                received += 1
                ordered &= env.seq > last_seq
                last_seq = env.seq
                body = env.body
                assert isinstance(body, P.Note)
                seen.add(int(body.data["i"]))
                if a.slow_every and received % a.slow_every == 0:
                    time.sleep(a.slow_ms / 1000)  # blocks the loop: the socket queues fill and drop
            out = {"received": received, "unique": len(seen), "lost": a.count - len(seen),
                   "duplicated": received - len(seen), "ordered": ordered, "refills": sub.refills,
                   "seconds": time.monotonic() - t0}
            await sub.close()
            return out

    print(json.dumps(asyncio.run(run())), flush=True)


# --------------------------------------------------------------------------- orchestration


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def wait_ready(p: subprocess.Popen) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "READY":
        raise RuntimeError(f"child not ready: {line!r}")


def result(p: subprocess.Popen, timeout: float = 300) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def pair(pub_args: list[str], sub_args: list[str]) -> dict[str, Any]:
    """Start subscriber, then publisher; release the publisher once both are connected."""
    sub = child(*sub_args)
    wait_ready(sub)
    pub = child(*pub_args)
    wait_ready(pub)
    time.sleep(0.2)  # let the subscriber's subscription settle everywhere
    assert pub.stdin is not None
    pub.stdin.write("go\n")
    pub.stdin.flush()
    res = result(sub)
    result(pub)
    return res


def free_ipc(tmp: Path, name: str) -> str:
    return f"ipc://{tmp}/{name}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(broker_url: str, broker_pid: int, tmp: Path, n: int, k: int) -> dict[str, Any]:
    from mlgym.bus.endpoints import from_url

    def raw(tag: str) -> dict[str, Any]:
        raw_ep = free_ipc(tmp, f"raw-{k}-{tag}")
        return pair(["--role", "pub", "--endpoint", raw_ep, "--bind", "--count", str(n)],
                    ["--role", "sub", "--endpoint", raw_ep, "--count", str(n)])

    ep = from_url(broker_url)
    before = raw("before")
    cpu0 = cpu_seconds(broker_pid)
    b = pair(["--role", "pub", "--endpoint", ep.pub, "--count", str(n)],
             ["--role", "sub", "--endpoint", ep.sub, "--count", str(n), "--stamped"])
    broker_cpu = cpu_seconds(broker_pid) - cpu0
    after = raw("after")
    raw_rates = [r["received"] / r["seconds"] for r in (before, after)]
    front, back = free_ipc(tmp, f"proxy-in-{k}"), free_ipc(tmp, f"proxy-out-{k}")
    proxy = child("--role", "proxy", "--endpoint", front, "--url", back)
    try:
        wait_ready(proxy)
        x = pair(["--role", "pub", "--endpoint", front, "--count", str(n)],
                 ["--role", "sub", "--endpoint", back, "--count", str(n)])
    finally:
        proxy.kill()
        proxy.communicate()
    return {"broker_msgs_per_s": b["received"] / b["seconds"], "broker_received": b["received"],
            "broker_gaps": b["gaps"], "broker_cpu_us_per_msg": broker_cpu / n * 1e6,
            "raw_msgs_per_s": statistics.mean(raw_rates), "raw_runs": raw_rates,
            "raw_received": min(before["received"], after["received"]),
            "proxy_msgs_per_s": x["received"] / x["seconds"], "proxy_received": x["received"]}


def latency(broker_url: str, tmp: Path, n: int, rate: int, k: int) -> dict[str, Any]:
    from mlgym.bus.endpoints import from_url

    ep = from_url(broker_url)
    b = pair(["--role", "pub", "--endpoint", ep.pub, "--count", str(n), "--rate", str(rate)],
             ["--role", "sub", "--endpoint", ep.sub, "--count", str(n), "--latency", "--stamped"])
    raw_ep = free_ipc(tmp, f"rawlat-{k}")
    r = pair(["--role", "pub", "--endpoint", raw_ep, "--bind", "--count", str(n), "--rate", str(rate)],
             ["--role", "sub", "--endpoint", raw_ep, "--count", str(n), "--latency"])
    return {"p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"], "max_ms": b["max_ms"], "gaps": b["gaps"],
            "received": b["received"], "raw_p50_ms": r["p50_ms"], "raw_p99_ms": r["p99_ms"]}


def burst(tmp: Path, n: int) -> dict[str, Any]:
    from mlgym.bus.broker import spawn
    from mlgym.bus.endpoints import from_url

    run = tmp / "burst"
    broker = spawn(run, hwm=2000)
    try:
        ep = from_url(broker.url)
        slow = child("--role", "client-sub", "--url", broker.url, "--count", str(n), "--hwm", "1000",
                     "--queue", "1000", "--slow-every", "200", "--slow-ms", "5")
        wait_ready(slow)
        pub = child("--role", "pub", "--endpoint", ep.pub, "--count", str(n), "--distinct")
        wait_ready(pub)
        assert pub.stdin is not None
        pub.stdin.write("go\n")
        pub.stdin.flush()
        slow_res = result(slow)
        result(pub)
        late = child("--role", "client-sub", "--url", broker.url, "--count", str(n), "--from-seq", "1")
        wait_ready(late)
        late_res = result(late)
    finally:
        broker.stop()
    return {"slow": slow_res, "late": late_res}


def kill_restart(tmp: Path, n: int) -> dict[str, Any]:
    """Acked publishes, SIGKILL, restart: nothing acknowledged lost, subscriber resyncs."""
    from mlgym.bus import connect
    from mlgym.bus.broker import spawn

    run = tmp / "kill"
    broker = spawn(run)

    async def phase() -> dict[str, Any]:
        nonlocal broker
        async with connect(broker.url, sender="bench-kill") as bus:
            sub = bus.subscribe("bench/", from_seq=1)
            acked = [await bus.publish(TOPIC, P.Note(text="", data={"i": i, "t": 0}), acked=True)
                     for i in range(n)]
            first_epoch = broker.epoch
            broker.kill()
            broker = spawn(run)
            after = [await bus.publish(TOPIC, P.Note(text="", data={"i": n + i, "t": 0}), acked=True)
                     for i in range(n)]
            got = [await sub.get(30) for _ in range(2 * n)]
            history = await bus.history(1, "bench/")
            logged = {e.seq for e in history}
            return {"acked": len(acked) + len(after),
                    "acked_lost": len([s for s in acked + after if s not in logged]),
                    "epochs": [first_epoch, broker.epoch],
                    "subscriber_epoch": sub.epoch,
                    "resynced": [e.seq for e in got] == sorted(acked + after)}

    try:
        return asyncio.run(phase())
    finally:
        broker.stop()


def main_bench(a: argparse.Namespace) -> None:
    from mlgym.bus.broker import spawn

    load_before = os.getloadavg()[0]
    print(f"bus bench: {a.count} x {SIZE} B throughput, {a.lat_rate}/s latency, {a.burst} burst, "
          f"{a.repeats} repeats, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlgym-bench-bus-") as tmp_s:
        tmp = Path(tmp_s)
        broker = spawn(tmp / "main")
        loop = broker.info.get("loop", "python")
        print(f"  broker loop: {loop}" + ("" if loop == "c" else " (the C loop is not built or MLGYM_BUS_LOOP=python)"),
              flush=True)
        runs_t, runs_l = [], []
        try:
            for k in range(a.repeats):
                t = throughput(broker.url, broker.proc.pid, tmp, a.count, k)
                runs_t.append(t)
                print(f"  throughput #{k + 1}: broker {t['broker_msgs_per_s']:,.0f} msg/s "
                      f"({t['broker_received']} recv, {t['broker_gaps']} gaps, {t['broker_cpu_us_per_msg']:.1f} us CPU/msg), raw "
                      f"{t['raw_msgs_per_s']:,.0f} msg/s (before {t['raw_runs'][0]:,.0f}, after "
                      f"{t['raw_runs'][1]:,.0f}), ratio {t['broker_msgs_per_s'] / t['raw_msgs_per_s']:.2f}; "
                      f"C proxy {t['proxy_msgs_per_s']:,.0f} msg/s ({t['proxy_received']} recv), ratio "
                      f"{t['proxy_msgs_per_s'] / t['raw_msgs_per_s']:.2f}",
                      flush=True)
                lat = latency(broker.url, tmp, a.lat_rate * a.latency_seconds, a.lat_rate, k)
                runs_l.append(lat)
                print(f"  latency #{k + 1} at {a.lat_rate}/s: broker p50 {lat['p50_ms']:.3f} ms, p99 "
                      f"{lat['p99_ms']:.3f} ms (max {lat['max_ms']:.1f}); raw p50 {lat['raw_p50_ms']:.3f} ms, "
                      f"p99 {lat['raw_p99_ms']:.3f} ms", flush=True)
        finally:
            broker.stop()
        b = burst(tmp, a.burst)
        print(f"  burst {a.burst}: slow subscriber got {b['slow']['unique']} unique, lost "
              f"{b['slow']['lost']}, duplicated {b['slow']['duplicated']}, {b['slow']['refills']} history "
              f"refills, ordered {b['slow']['ordered']}; late joiner got {b['late']['unique']}, lost "
              f"{b['late']['lost']}, duplicated {b['late']['duplicated']}", flush=True)
        kr = kill_restart(tmp, a.kill_count)
        print(f"  kill -9: {kr['acked']} acked, {kr['acked_lost']} lost, epochs {kr['epochs']}, "
              f"subscriber epoch {kr['subscriber_epoch']}, resynced {kr['resynced']}", flush=True)
    med = statistics.median
    broker_rate = med(t["broker_msgs_per_s"] for t in runs_t)
    raw_rate = med(t["raw_msgs_per_s"] for t in runs_t)
    ratios = [t["broker_msgs_per_s"] / t["raw_msgs_per_s"] for t in runs_t]
    summary = {
        "broker_msgs_per_s": round(broker_rate),
        "raw_msgs_per_s": round(raw_rate),
        "ratio": round(med(ratios), 3),
        "proxy_msgs_per_s": round(med(t["proxy_msgs_per_s"] for t in runs_t)),
        "proxy_ratio": round(med(t["proxy_msgs_per_s"] / t["raw_msgs_per_s"] for t in runs_t), 3),
        "broker_cpu_us_per_msg": round(med(t["broker_cpu_us_per_msg"] for t in runs_t), 1),
        "broker_loop": loop,
        "p50_ms": round(med(r["p50_ms"] for r in runs_l), 3),
        "p99_ms": round(med(r["p99_ms"] for r in runs_l), 3),
        "raw_p50_ms": round(med(r["raw_p50_ms"] for r in runs_l), 3),
        "raw_p99_ms": round(med(r["raw_p99_ms"] for r in runs_l), 3),
        "throughput_gaps": sum(t["broker_gaps"] for t in runs_t),
        "lost": b["slow"]["lost"] + b["late"]["lost"],
        "duplicated": b["slow"]["duplicated"] + b["late"]["duplicated"],
        "burst_refills": b["slow"]["refills"],
        "kill_acked_lost": kr["acked_lost"],
        "kill_resynced": kr["resynced"],
        "repeats": a.repeats,
        "message_bytes": SIZE,
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
    }
    raw_rates = [rate for t in runs_t for rate in t["raw_runs"]]
    noisy = summary["raw_p99_ms"] > NOISY_RAW_P99_MS or max(raw_rates) > NOISY_RAW_SPREAD * min(raw_rates)
    summary["noisy"] = noisy
    if noisy:
        print(f"  note: the machine was noisy during this run (the raw pair alone: p99 {summary['raw_p99_ms']} ms, "
              f"{min(raw_rates):,.0f}-{max(raw_rates):,.0f} msg/s); its ratios and p99 are unreliable",
              flush=True)
    print(f"bus: broker {summary['broker_msgs_per_s']:,} msg/s vs raw {summary['raw_msgs_per_s']:,} "
          f"(ratio {summary['ratio']}; libzmq's C proxy {summary['proxy_ratio']}); p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms at "
          f"{a.lat_rate}/s; lost {summary['lost']}, duplicated {summary['duplicated']}", flush=True)
    print(json.dumps(summary), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="bench", choices=["bench", "pub", "sub", "client-sub", "proxy"])
    ap.add_argument("--endpoint")
    ap.add_argument("--url")
    ap.add_argument("--bind", action="store_true")
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=0, help="(pub role) pace at this many msg/s")
    ap.add_argument("--lat-rate", type=int, default=10_000, help="latency phase rate")
    ap.add_argument("--latency-seconds", type=int, default=3)
    ap.add_argument("--burst", type=int, default=100_000)
    ap.add_argument("--kill-count", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stamped", action="store_true")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--distinct", action="store_true")
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--hwm", type=int, default=100_000)
    ap.add_argument("--queue", type=int, default=10_000)
    ap.add_argument("--from-seq", type=int, default=None)
    ap.add_argument("--slow-every", type=int, default=0)
    ap.add_argument("--slow-ms", type=float, default=0.0)
    a = ap.parse_args()
    {"bench": main_bench, "pub": role_pub, "sub": role_sub, "client-sub": role_client_sub,
     "proxy": role_proxy}[a.role](a)


if __name__ == "__main__":
    main()
