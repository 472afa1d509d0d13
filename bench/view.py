"""Viewer benchmark (`mlgym bench view`): `mlgym view` in headless Chromium on a 50,000-event run.

The run: a real one first (`mlgym run --task battleOfSexes --team default` with the offline
scripted model: broker, environment server, three agent processes, real evaluations; about 90
events), or --template DIR. `mlgym.viewer.synth.grow` then writes a fresh run folder whose
event log (written with the bus's own `EventLog`) repeats that run's team cycle until it
holds --events messages: turn and step numbers, tokens, item and question ids and timestamps
go on from cycle to cycle (a run of about two hours), scores drift, each validation gets its
artefact copy. The live run is a real broker (`mlgym bus serve`) to which the same messages
are published at --live-rate per second, each stamped with its send time.

Measured in Debian's /usr/bin/chromium driven by Playwright (medians of --repeats):
  first_paint_ms  navigation start -> the first timeline rows painted, with `mlgym view`
                  started afresh for each try (nothing of the run read yet); the template
                  run's, measured the same way in the same repeats, is the baseline (ratio)
  jump_ms         End key -> the last event's row painted, on a run page that has finished
                  loading (its overview is in); jump_cold_ms: End pressed as soon as the first
                  rows are painted, while the viewer is still reading the log
  memory_mb       the page's renderer process, resident (from /proc), after jumping to the
                  end, back, to the middle and expanding turns; js_heap_mb from the DevTools
                  protocol
  live_lag_ms     publication of an event -> its row painted on a live run page following
                  the run, --live-rate events/s for --live-seconds (median; p95 too), with
                  every event counted: lost and duplicated must be 0

The last line is one JSON object. --screenshots DIR saves the list, a run page and the live
run page (docs/img/ holds the ones in docs/viewer.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGETS = {"first_paint_ms": 1500, "jump_ms": 300, "memory_mb": 300, "live_lag_ms": 1000}


def log(msg: str) -> None:
    print(msg, flush=True)


def real_run(runs: Path, task: str = "battleOfSexes", team: str = "default") -> Path:
    """A real scripted run (offline): the template, or one more run for the list's picture."""
    run_dir = runs / f"{task}-{team}-template"
    env = {**os.environ, "MLGYM_OFFLINE": "1"}
    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlgym.cli",
            "run",
            "--task",
            task,
            "--team",
            team,
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"the run of {task} by {team} failed:\n{out.stderr[-3000:]}")
    log(f"  real run: {run_dir.name} in {time.monotonic() - t0:.0f} s")
    return run_dir


class Viewer:
    """`mlgym view ROOT` as a subprocess; its URL from its first line."""

    def __init__(self, root: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlgym.cli", "view", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise SystemExit("mlgym view did not print its URL")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def renderer_rss_mb(user_data_dir: str) -> float:
    """Resident memory of the largest renderer process of the browser using `user_data_dir`."""
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(
                f"/proc/{pid}/cmdline"
            ).read_bytes()  # zygote children rewrite it: one string
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        procs[int(pid)] = (ppid, cmd)
    roots = {p for p, (_, cmd) in procs.items() if user_data_dir.encode() in cmd}
    family, grew = set(roots), True
    while grew:
        grew = False
        for p, (ppid, _) in procs.items():
            if ppid in family and p not in family:
                family.add(p)
                grew = True
    return max((rss_mb(p) for p in family if b"--type=renderer" in procs[p][1]), default=0.0)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 1) if s else float("nan")


def first_paint(context, url: str, name: str) -> float:
    page = context.new_page()
    try:
        page.goto(f"{url}#/run/{name}")
        page.wait_for_function(
            "window.viewerStats && viewerStats.firstPaint != null", timeout=60_000
        )
        return page.evaluate("viewerStats.firstPaint")
    finally:
        page.close()


def settled_page(context, url: str, name: str):
    page = context.new_page()
    page.goto(f"{url}#/run/{name}")
    page.wait_for_function("window.viewerStats && viewerStats.overviewAt != null", timeout=120_000)
    page.wait_for_timeout(300)
    return page


def press_end(page) -> float:
    n = page.evaluate("viewerStats.jumps.length")
    page.locator(".tl-scroll").focus()
    page.keyboard.press("End")
    page.wait_for_function(f"viewerStats.jumps.length > {n}", timeout=60_000)
    return page.evaluate("viewerStats.jumps[viewerStats.jumps.length - 1]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--live-rate", type=float, default=200.0)
    ap.add_argument("--live-seconds", type=float, default=15.0)
    ap.add_argument(
        "--template", type=Path, help="a finished run folder to grow from (default: make one)"
    )
    ap.add_argument("--screenshots", type=Path, help="save list, run and live run pages here (PNG)")
    ap.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (default: a temporary one)"
    )
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from mlgym.bus.broker import spawn
    from mlgym.viewer.synth import CHROMIUM, Replayer, copy_run, grow, launch_chromium

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="mlgym-bench-view-"))
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    log(
        f"mlgym bench view: {args.events} events, {args.repeats} repeats, "
        f"live {args.live_rate:g}/s "
        f"for {args.live_seconds:g} s (load average {load_before:.1f})"
    )
    template = args.template.resolve() if args.template else real_run(runs)
    if args.screenshots:
        real_run(runs, "prisonersDilemma", "single")
    if args.template:
        template = copy_run(template, runs / template.name)
    big_name = f"grown-{args.events}"
    t0 = time.perf_counter()
    grow(template, runs / big_name, args.events)
    log(f"  grown run: {big_name} ({args.events} events) in {time.perf_counter() - t0:.1f} s")

    result: dict = {"events": args.events}
    user_data = tempfile.mkdtemp(prefix="mlgym-bench-chromium-")
    with sync_playwright() as pw:
        context = launch_chromium(pw, user_data)
        try:
            blank = context.new_page()
            blank.goto("about:blank")
            result["blank_page_mb"] = round(renderer_rss_mb(user_data), 1)  # Chromium's own floor
            blank.close()
            # -------------------------------------------------------- first paint, cold
            big, small = [], []
            for r in range(args.repeats):
                for name, out in ((big_name, big), (template.name, small)):
                    viewer = Viewer(runs)
                    try:
                        out.append(first_paint(context, viewer.url, name))
                    finally:
                        viewer.stop()
                log(
                    f"  first paint #{r + 1}: {big[-1]:.0f} ms ({args.events} events), "
                    f"{small[-1]:.0f} ms (template)"
                )
            result.update(
                first_paint_ms=median(big),
                baseline_first_paint_ms=median(small),
                first_paint_ratio=round(median(big) / median(small), 2),
            )

            viewer = Viewer(runs)
            try:
                # ---------------------------------------------------- jump to the end
                page = context.new_page()
                page.goto(f"{viewer.url}#/run/{big_name}")
                page.wait_for_function(
                    "window.viewerStats && viewerStats.firstPaint != null", timeout=60_000
                )
                result["jump_cold_ms"] = round(press_end(page), 1)
                page.close()
                jumps, overview = [], []
                for r in range(args.repeats):
                    page = settled_page(context, viewer.url, big_name)
                    overview.append(page.evaluate("viewerStats.overviewAt"))
                    jumps.append(press_end(page))
                    if r < args.repeats - 1:
                        page.close()
                log(
                    f"  jump to the last event: {', '.join(f'{j:.0f}' for j in jumps)} ms "
                    f"(cold, while the log is still being read: {result['jump_cold_ms']:.0f} ms)"
                )
                result.update(jump_ms=median(jumps), overview_ms=median(overview))

                # ---------------------------------------------------- memory after use
                for key in ("Home", "End", "Home"):
                    page.keyboard.press(key)
                    page.wait_for_timeout(200)
                page.evaluate(
                    "document.querySelector('.tl-scroll').scrollTop = "
                    "document.querySelector('.tl-scroll').scrollHeight / 2"
                )
                page.wait_for_timeout(500)
                for _ in range(5):
                    page.keyboard.press("j")
                    page.keyboard.press("Enter")
                    page.wait_for_timeout(300)
                page.wait_for_timeout(1000)
                cdp = context.new_cdp_session(page)
                cdp.send("Performance.enable")
                metrics = {
                    m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                }
                result.update(
                    memory_mb=round(renderer_rss_mb(user_data), 1),
                    server_rss_mb=round(rss_mb(viewer.proc.pid), 1),
                    js_heap_mb=round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
                    dom_nodes=int(metrics.get("Nodes", 0)),
                    dom_rows=page.evaluate("document.querySelectorAll('.row').length"),
                )
                log(
                    f"  memory: renderer {result['memory_mb']} MB resident "
                    f"(an empty page: {result['blank_page_mb']} MB), "
                    f"JS heap {result['js_heap_mb']} MB, "
                    f"{result['dom_nodes']} DOM nodes, {result['dom_rows']} rows in the DOM; "
                    f"the viewer's server {result['server_rss_mb']} MB with the run read"
                )
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    shot_pages(context, viewer.url, template.name, args.screenshots)
                page.close()

                # ---------------------------------------------------- live
                result.update(live(context, viewer.url, runs, template, args, spawn, Replayer))
            finally:
                viewer.stop()
        finally:
            context.close()
            shutil.rmtree(user_data, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    result["targets"] = TARGETS
    result["targets_met"] = (
        all(result.get(k, float("inf")) <= v for k, v in TARGETS.items())
        and result.get("lost") == 0
        and result.get("duplicated") == 0
    )
    log("")
    log(f"  {'figure':<16} {'measured':>10} {'target':>8}")
    for k, v in TARGETS.items():
        log(f"  {k:<16} {result.get(k):>10} {'<= ' + str(v):>8}")
    print(json.dumps(result), flush=True)


def shot_pages(context, url: str, run_name: str, out: Path) -> None:
    """A run page with a validation expanded."""
    page = context.new_page()
    page.goto(f"{url}#/run/{run_name}")
    page.wait_for_function("window.viewerStats && viewerStats.overviewAt != null")
    page.locator(".tl-scroll").focus()
    page.keyboard.press("n")
    page.keyboard.press("n")  # the second validation: its artefact has a diff
    page.keyboard.press("Enter")
    page.wait_for_selector(".detail pre.diff, .detail .artefact p.muted", timeout=20_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(out / "viewer-run.png"))
    page.close()


def live(context, url: str, runs: Path, template: Path, args, spawn, Replayer) -> dict:
    """A live run: a real broker, messages published at the live rate, the page following."""
    run_dir = runs / "live-run"
    broker = spawn(run_dir)
    replayer = Replayer(template, run_dir, args.live_rate)
    replayer.start_run_files()
    count = int(args.live_rate * args.live_seconds)
    page = context.new_page()
    try:
        page.goto(f"{url}#/run/live-run")
        page.wait_for_function(
            "window.viewerStats && document.querySelector('.tl-scroll')", timeout=60_000
        )
        page.wait_for_timeout(500)
        done: dict = {}
        thread = threading.Thread(
            target=lambda: done.setdefault("sent", asyncio.run(replayer.publish(count)))
        )
        thread.start()
        if args.screenshots:
            time.sleep(min(args.live_seconds / 2, 8))
            page.screenshot(path=str(args.screenshots / "viewer-live.png"))
            listing = context.new_page()  # the list, with the live run in it
            listing.goto(f"{url}#/")
            listing.wait_for_selector("table.runs tbody tr.live")
            listing.screenshot(path=str(args.screenshots / "viewer-list.png"))
            listing.close()
        thread.join()
        sent = done.get("sent", 0)
        deadline = time.monotonic() + 30
        while page.evaluate("viewerStats.received.length") < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        page.wait_for_timeout(500)
        received = page.evaluate("viewerStats.received")
        lags = page.evaluate("viewerStats.lags")
    finally:
        page.close()
        replayer.finish_run_files()
        broker.stop()
    unique = set(received)
    out = {
        "live_events": sent,
        "live_rate": args.live_rate,
        "live_lag_ms": median(lags),
        "live_lag_p95_ms": pct(lags, 95),
        "live_rows_painted": len(lags),
        "lost": sent - len(unique),
        "duplicated": len(received) - len(unique),
        "reconnects": 0,
    }
    log(
        f"  live: {sent} events at {args.live_rate:g}/s, lag median {out['live_lag_ms']} ms, "
        f"p95 {out['live_lag_p95_ms']} ms; lost {out['lost']}, duplicated {out['duplicated']}"
    )
    return out


if __name__ == "__main__":
    main()
