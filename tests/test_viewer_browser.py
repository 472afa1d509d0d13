"""`mlgym view` in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
the run list (sort, filter, compare), a run page (lanes, a turn expanded, an arrow followed,
keys, the score chart, an artefact's diff, the tabs), hostile text shown as text, a big run
kept virtualised, a live `mlgym run` followed as it goes, and a page that reconnects after
the viewer's server restarts without missing or repeating an event.

A screenshot of each page goes to test-output/viewer/ ($MLGYM_TEST_OUTPUT/viewer/), for CI to
keep as an artefact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import require
from viewer_support import ViewServer, chromium_ok, finished_runs, wait_until

from mlgym.agents.events import events
from mlgym.bus import protocol as P
from mlgym.bus.eventlog import LogReader
from mlgym.viewer.synth import launch_chromium

DEFAULT = "battleOfSexes-default"
SINGLE = "prisonersDilemma-single"
SHOTS = (
    Path(
        os.environ.get("MLGYM_TEST_OUTPUT")
        or Path(__file__).resolve().parent.parent / "test-output"
    )
    / "viewer"
)


@pytest.fixture(scope="module")
def browser():
    ok, why = chromium_ok()
    require(ok, why)
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlgym-chromium-") as profile, sync_playwright() as pw:
        context = launch_chromium(pw, profile)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def server():
    with ViewServer(finished_runs()) as s:
        yield s


@pytest.fixture
def page(browser):
    p = browser.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    p.close()
    assert not errors, errors


def open_run(page, base: str, name: str, settle: bool = True, empty: bool = False) -> None:
    page.goto(f"{base}/#/run/{name}")
    if empty:  # a run with no event yet: nothing to paint
        page.wait_for_selector(".tl-scroll", timeout=60_000)
        return
    page.wait_for_function("window.viewerStats && viewerStats.firstPaint != null", timeout=60_000)
    if settle:
        page.wait_for_function("viewerStats.overviewAt != null", timeout=60_000)


def selected(page) -> int | None:
    seq = page.evaluate("document.querySelector('.row.sel')?.dataset.seq")
    return int(seq) if seq else None


def scroll_to(page, seq: int) -> None:
    page.evaluate(f"document.querySelector('.tl-scroll').scrollTop = ({seq} - 1) * 26 - 100")
    page.wait_for_selector(f'.row[data-seq="{seq}"]:not(.loading)')


def in_view(page, seq: int) -> bool:
    return page.evaluate(f"""(() => {{
        const r = document.querySelector('.row[data-seq="{seq}"]');
        const s = document.querySelector('.tl-scroll');
        if (!r) return false;
        const a = r.getBoundingClientRect(), b = s.getBoundingClientRect();
        return a.top >= b.top - 1 && a.top + 26 <= b.bottom + 1; }})()""")


def test_the_run_list_sorts_filters_and_compares(page, server):
    page.goto(server.base + "/")
    page.wait_for_selector("table.runs tbody tr")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 2
    assert set(page.locator("table.runs tbody td.name a").all_inner_texts()) == {DEFAULT, SINGLE}
    page.screenshot(path=str(SHOTS / "list.png"))
    runs = finished_runs()
    scores = {
        n: json.loads((runs / n / "result.json").read_text())["final_submission"]["scores"]["Score"]
        for n in (DEFAULT, SINGLE)
    }
    page.locator('th[data-key="score"]').click()  # descending first
    first = page.locator("table.runs tbody tr").first.get_attribute("data-run")
    assert first == max(scores, key=scores.get)
    page.locator('th[data-key="score"]').click()
    assert page.locator("table.runs tbody tr").first.get_attribute("data-run") == min(
        scores, key=scores.get
    )
    page.fill("input.filter", "single")
    assert rows.count() == 1 and rows.first.get_attribute("data-run") == SINGLE
    page.fill("input.filter", "")
    assert rows.count() == 2
    compare = page.locator("button.compare")
    assert compare.is_disabled()
    for box in page.locator("table.runs tbody input[type=checkbox]").all():
        box.check()
    assert compare.is_enabled()
    compare.click()
    page.wait_for_selector("table.compare")
    assert set(page.locator("table.compare th a").all_inner_texts()) == {DEFAULT, SINGLE}
    assert page.locator(".chart-box svg.chart path.series").count() == 2
    page.screenshot(path=str(SHOTS / "compare.png"))


def test_a_run_page_lanes_turns_arrows_keys_and_scores(page, server):
    run_dir = finished_runs() / DEFAULT
    logged = events(run_dir)
    open_run(page, server.base, DEFAULT)
    lanes = page.locator(".tl-head .lane-name b").all_inner_texts()
    assert lanes == ["planner", "coder", "literature", "env", "supervisor"]

    # a turn, expanded: its thought, command and observation as logged
    turn = next(
        e
        for e in logged
        if isinstance(e.body, P.AgentStep) and e.body.agent == "coder" and e.body.thought
    )
    scroll_to(page, turn.seq)
    page.locator(f'.row[data-seq="{turn.seq}"] .blk').click()
    detail = page.locator(f'.row[data-seq="{turn.seq}"] .detail')
    detail.locator("pre.command").wait_for()
    assert detail.locator("pre.thought").inner_text() == turn.body.thought
    assert detail.locator("pre.command").inner_text() == turn.body.action
    assert detail.locator("pre.observation").inner_text() == turn.body.observation
    row_after = page.locator(f'.row[data-seq="{turn.seq + 1}"]')
    box = detail.bounding_box()
    assert row_after.bounding_box()["y"] >= box["y"] + box["height"] - 1  # the rows below made room
    page.locator(f'.row[data-seq="{turn.seq}"] .blk').click()  # collapsed again
    detail.wait_for(state="detached")

    # an arrow, followed: the question to the literature agent leads to its answer
    question = next(e for e in logged if isinstance(e.body, P.Question))
    answer = next(
        e
        for e in logged
        if isinstance(e.body, P.Answer) and e.body.question_id == question.body.question_id
    )
    scroll_to(page, question.seq)
    arrow = page.locator(f'.row[data-seq="{question.seq}"] .arrow.msg')
    assert arrow.count() == 1
    arrow.click()
    wait_until(lambda: selected(page) == answer.seq, what="the answer selected")
    assert in_view(page, answer.seq)

    # keys: g to the start, n/p through scores, j/k through turns, f follows
    scores = [e.seq for e in logged if isinstance(e.body, P.ScoreEvent)]
    turns = [e.seq for e in logged if isinstance(e.body, P.AgentStep)]
    page.locator(".tl-scroll").focus()
    page.keyboard.press("g")
    wait_until(lambda: selected(page) == 1, what="the first event")
    page.keyboard.press("n")
    wait_until(lambda: selected(page) == scores[0], what="the first score")
    page.keyboard.press("n")
    wait_until(lambda: selected(page) == scores[1], what="the second score")
    page.keyboard.press("p")
    wait_until(lambda: selected(page) == scores[0], what="back to the first score")
    page.keyboard.press("j")
    wait_until(
        lambda: selected(page) == next(t for t in turns if t > scores[0]), what="the next turn"
    )
    page.keyboard.press("k")
    wait_until(
        lambda: (
            selected(page) == max(t for t in turns if t < next(t for t in turns if t > scores[0]))
        ),
        what="the previous turn",
    )
    page.keyboard.press("G")
    wait_until(lambda: selected(page) == len(logged), what="the last event")
    assert in_view(page, len(logged))

    # find: / then text, Enter for the next match
    page.keyboard.press("g")
    wait_until(lambda: selected(page) == 1, what="the first event")
    page.keyboard.press("/")
    page.keyboard.type("validate")
    page.keyboard.press("Enter")
    first = wait_until(lambda: selected(page) if selected(page) != 1 else None, what="a match")
    assert "validate" in page.locator(f'.row[data-seq="{first}"] .blk').inner_text().lower()
    page.keyboard.press("Enter")
    wait_until(lambda: (selected(page) or 0) > first, what="the next match")
    assert "matches" in page.locator(".search-info").inner_text()
    page.keyboard.press("Escape")

    # the score chart: one mark per scored evaluation, the baseline; a mark leads to its event
    marks = page.locator(".score-chart .pt.score")
    assert marks.count() == len(scores)
    assert page.locator(".score-chart line.hline.baseline").count() == 1
    marks.nth(1).click()
    wait_until(lambda: selected(page) == scores[1], what="the clicked score selected")

    # the validation's artefact, with its diff to the one before
    validations = [
        e for e in logged if isinstance(e.body, P.ScoreEvent) and e.body.action == "validate"
    ]
    second = validations[1]
    page.keyboard.press("g")
    page.keyboard.press("n")
    page.keyboard.press("n")
    wait_until(lambda: selected(page) == second.seq, what="the second validation")
    page.keyboard.press("Enter")
    diff = page.locator(f'.row[data-seq="{second.seq}"] pre.diff')
    diff.wait_for()
    added = diff.locator("span.da").all_inner_texts()
    label = f"step-1-{second.body.step}"
    content = next((run_dir / "artefacts" / label).iterdir()).read_text().splitlines()
    assert added and all(line[1:] in content for line in added)
    page.screenshot(path=str(SHOTS / "run.png"))

    # the other tabs
    page.locator('.tab[data-tab="artefacts"]').click()
    page.wait_for_selector("ul.labels li")
    labels = page.locator("ul.labels li").evaluate_all("l => l.map(x => x.dataset.label)")
    assert labels[-2:] == ["best", "latest"] and label in labels
    page.locator('.tab[data-tab="config"]').click()
    page.wait_for_selector(".other-pane table.mini")
    assert "scripted:auto" in page.locator(".other-pane").inner_text()
    page.locator('.tab[data-tab="files"]').click()
    page.wait_for_selector('.other-pane a[href*="trajectories%2Fcoder.traj"]')
    page.locator('.tab[data-tab="timeline"]').click()
    page.wait_for_selector(".tl-scroll .row")


def test_hostile_text_is_shown_as_text(page, tmp_path, server):
    from mlgym.bus.eventlog import EventLog

    run = tmp_path / "runs" / "hostile"
    attack = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    log = EventLog(run / "events.sqlite")
    body = P.AgentStep(
        agent="evil<b>", role="coder", step=1, action=attack, observation=attack, thought=attack
    )
    log.append(
        [
            (
                1,
                1,
                time.time(),
                "agents/evil/step",
                "msgpack",
                P.encode(P.make(body, topic="agents/evil/step", sender="evil<b>")),
            )
        ]
    )
    log.close()
    (run / "run.json").write_text(
        json.dumps({"task": attack, "status": "finished", "team": {"name": attack}})
    )
    with ViewServer(tmp_path / "runs") as s:
        page.goto(s.base + "/")
        page.wait_for_selector("table.runs tbody tr")
        assert attack in page.locator("table.runs tbody").inner_text()
        open_run(page, s.base, "hostile")
        page.locator('.row[data-seq="1"] .blk').click()
        page.locator('.row[data-seq="1"] pre.command').wait_for()
        assert page.locator('.row[data-seq="1"] pre.command').inner_text() == attack
        assert page.locator('.row[data-seq="1"] .blk .tx').inner_text() == attack
        assert page.locator(".lane-name b").first.inner_text() == "evil<b>"
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img[src=x]").count() == 0 and page.locator("main script").count() == 0


def test_a_big_run_stays_virtualised(page, tmp_path):
    from mlgym.viewer.synth import grow

    grow(finished_runs() / DEFAULT, tmp_path / "runs" / "big", 20_000)
    pages: list[str] = []
    page.on("request", lambda r: pages.append(r.url) if "/api/events/" in r.url else None)
    with ViewServer(tmp_path / "runs") as s:
        open_run(page, s.base, "big")
        assert page.locator(".row").count() < 120
        page.locator(".tl-scroll").focus()
        page.keyboard.press("End")
        page.wait_for_selector('.row[data-seq="20000"]:not(.loading)')
        assert selected(page) == 20_000 and in_view(page, 20_000)
        assert page.locator(".row").count() < 120
        page.keyboard.press("Home")
        page.wait_for_selector('.row[data-seq="1"]:not(.loading)')
        page.evaluate("document.querySelector('.tl-scroll').scrollTop = 10000 * 26")
        page.wait_for_selector('.row[data-seq="10000"]:not(.loading)')
        assert page.locator(".row").count() < 120
        assert len(pages) <= 6, pages  # a few pages of 500 fetched, not the run
        page.screenshot(path=str(SHOTS / "big.png"))


def log_head(run_dir: Path) -> int:
    if not (run_dir / "events.sqlite").exists():
        return 0
    reader = LogReader(run_dir / "events.sqlite")
    try:
        return reader.head()
    finally:
        reader.close()


def received(page) -> list[int]:
    return page.evaluate("viewerStats.received")


def test_a_live_run_is_followed_as_it_goes(page, tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "live"
    root.mkdir()
    env = {**os.environ, "MLGYM_OFFLINE": "1"}
    with ViewServer(root) as s:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlgym.cli",
                "run",
                "--task",
                "battleOfSexes",
                "--team",
                "default",
                "--run-dir",
                str(run_dir),
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "run.log", "wb"),
        )
        try:
            wait_until(lambda: log_head(run_dir) > 0, timeout=120, what="the run's first event")
            open_run(page, s.base, "live", settle=False)
            start = page.evaluate("document.querySelectorAll('.fig b')[10].textContent")  # events
            assert "live" in page.locator(".run-head .badge").inner_text()
            wait_until(lambda: len(received(page)) >= 10, timeout=120, what="live events")
            page.screenshot(path=str(SHOTS / "live.png"))
            assert run.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-3000:]
        finally:
            if run.poll() is None:
                run.kill()
        head = log_head(run_dir)
        wait_until(
            lambda: (received(page) or [0])[-1] == head,
            timeout=30,
            what="the last event on the page",
        )
        got = received(page)
        assert got == list(range(got[0], head + 1)) and got[0] <= int(start.replace(",", "")) + 1
        page.wait_for_selector(f'.row[data-seq="{head}"]:not(.loading)')
        assert in_view(page, head)  # the page followed the run to its end
        wait_until(
            lambda: "finished" in page.locator(".run-head .badge").inner_text(),
            timeout=30,
            what="the run shown finished",
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_page_reconnects_after_the_server_restarts_without_a_gap_or_a_repeat(page, tmp_path):
    from mlgym.bus.broker import spawn
    from mlgym.viewer.synth import Replayer

    root = tmp_path / "runs"
    run_dir = root / "replayed"
    broker = spawn(run_dir)
    port = free_port()
    server = ViewServer(root, "--port", str(port))
    try:
        replayer = Replayer(finished_runs() / DEFAULT, run_dir, rate=60)
        replayer.start_run_files()
        open_run(page, server.base, "replayed", empty=True)
        done: dict = {}
        thread = threading.Thread(
            target=lambda: done.setdefault("sent", asyncio.run(replayer.publish(600)))
        )
        thread.start()
        wait_until(lambda: len(received(page)) >= 100, timeout=60, what="events before the restart")
        os.kill(server.proc.pid, signal.SIGKILL)  # no goodbye: the stream just breaks
        server.proc.wait()
        time.sleep(1.5)
        before = len(received(page))
        server = ViewServer(root, "--port", str(port))
        thread.join(120)
        assert done.get("sent") == 600
        wait_until(
            lambda: len(received(page)) >= 600, timeout=60, what="every event after the restart"
        )
        time.sleep(1)
        got = received(page)
        assert got == list(range(1, 601))  # nothing missed, nothing twice
        assert before < 600 and page.evaluate("viewerStats.reconnects") >= 1
        page.wait_for_selector('.row[data-seq="600"]:not(.loading)')
        page.screenshot(path=str(SHOTS / "reconnected.png"))
    finally:
        server.stop()
        broker.stop()


def test_the_benchmark_runs_every_phase_and_ends_with_its_json(tmp_path):
    ok, why = chromium_ok()
    require(ok, why)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlgym.cli",
            "bench",
            "view",
            "--events",
            "3000",
            "--repeats",
            "1",
            "--live-seconds",
            "2",
            "--live-rate",
            "100",
            "--template",
            str(finished_runs() / DEFAULT),
            "--screenshots",
            str(tmp_path / "shots"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("events", "first_paint_ms", "jump_ms", "memory_mb", "live_lag_ms"):
        assert summary[key] > 0, key  # figures are the benchmark's to judge, not this test's
    assert summary["events"] == 3000 and summary["live_events"] == 200
    assert (summary["lost"], summary["duplicated"]) == (0, 0)
    assert {p.name for p in (tmp_path / "shots").iterdir()} == {
        "viewer-list.png",
        "viewer-run.png",
        "viewer-live.png",
    }
