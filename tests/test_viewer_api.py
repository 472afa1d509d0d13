"""`mlgym view`'s server over real run folders (scripted offline runs), through a real socket:
the run list, event pages by sequence range against the event log itself, bad ranges, unknown
runs and path traversal, links, artefact diffs, server-sent events (resume by seq, a live log
written by a real broker), the token off loopback, the Host check, files that are missing or
malformed, and the outputs of `mlgym analyze` / `mlgym score` when they are there."""

from __future__ import annotations

import asyncio
import difflib
import http.client
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pytest
from viewer_support import ViewServer, copy_runs, finished_runs, wait_until

from mlgym.agents.events import events
from mlgym.bus import protocol as P
from mlgym.bus.eventlog import EventLog, LogReader
from mlgym.viewer.synth import copy_run
from mlgym.viewer.timeline import KNOWN_KINDS

DEFAULT = "battleOfSexes-default"
SINGLE = "prisonersDilemma-single"


@pytest.fixture(scope="module")
def runs() -> Path:
    return finished_runs()


@pytest.fixture(scope="module")
def server(runs):
    with ViewServer(runs) as s:
        yield s


def get(server: ViewServer, path: str, **params) -> httpx.Response:
    return httpx.get(server.base + path, params=params, timeout=60)


def raw(server: ViewServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """A request with the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, {"raw": body[:200]}


def log_head(run_dir: Path) -> int:
    reader = LogReader(run_dir / "events.sqlite")
    try:
        return reader.head()
    finally:
        reader.close()


def all_summaries(server: ViewServer, run: str, page: int = 37) -> list[dict]:
    head = get(server, f"/api/run/{run}").json()["head"]
    out = []
    for lo in range(1, head + 1, page):
        r = get(server, f"/api/events/{run}", **{"from": lo, "to": min(head, lo + page - 1)})
        assert r.status_code == 200, r.text
        out += r.json()["events"]
    return out


def test_every_kind_the_timeline_reads_is_a_protocol_kind():
    tags = {t.__struct_config__.tag for t in P.body_types()}
    assert KNOWN_KINDS <= tags, KNOWN_KINDS - tags


def test_the_list_shows_every_run_with_its_result(server, runs):
    rows = {r["name"]: r for r in get(server, "/api/runs").json()["runs"]}
    assert set(rows) == {DEFAULT, SINGLE}
    for name, (task, team) in (
        (DEFAULT, ("battleOfSexes", "default")),
        (SINGLE, ("prisonersDilemma", "single")),
    ):
        result = json.loads((runs / name / "result.json").read_text())
        row = rows[name]
        metric = result["metric"]["name"]
        assert (row["task"], row["team"], row["status"], row["live"]) == (
            task,
            team,
            "finished",
            False,
        )
        assert row["models"] == ["scripted:auto"]
        assert row["score"] == result["final_submission"]["scores"][metric]
        assert row["baseline"] == result["baseline"][metric]
        assert row["vs_baseline"] == pytest.approx(
            (row["score"] - row["baseline"]) / abs(row["baseline"])
        )
        assert (row["steps"], row["tokens"], row["cost_usd"]) == (
            result["steps"],
            result["tokens"],
            result["cost_usd"],
        )
        assert row["seconds"] == result["seconds"] and row["errors"] == []


def test_event_pages_match_the_event_log(server, runs):
    run_dir = runs / DEFAULT
    meta = get(server, f"/api/run/{DEFAULT}").json()
    assert meta["head"] == log_head(run_dir) > 50 and meta["first"] == 1
    assert [lane["name"] for lane in meta["lanes"]][:3] == ["planner", "coder", "literature"]
    logged = events(run_dir)
    summaries = all_summaries(server, DEFAULT)
    assert (
        [s["seq"] for s in summaries] == [e.seq for e in logged] == list(range(1, meta["head"] + 1))
    )
    assert [s["kind"] for s in summaries] == [e.kind for e in logged]
    asked: dict[str, str] = {}
    for s, e in zip(summaries, logged, strict=True):
        b = e.body
        if isinstance(b, P.AgentStep):
            assert (s["lane"], s["turn"]) == (b.agent, b.step)
            line = next(x.strip() for x in b.action.splitlines() if x.strip())
            assert s["title"] == line or (
                s["title"].endswith("…") and line.startswith(s["title"][:-1])
            )
        elif isinstance(b, P.CommandEvent):
            assert (s["lane"], s["from"], s["step"]) == ("env", b.agent, b.step)
        elif isinstance(b, P.ScoreEvent):
            assert s["scores"] == b.scores and s["action"] == b.action
        elif isinstance(b, P.WorkItem):
            assert (s["lane"], s["to"]) == (e.sender, [b.assignee])
        elif isinstance(b, P.Question):
            asked[b.question_id] = b.asker
            assert (s["lane"], s["to"]) == (b.asker, ["literature"])
        elif isinstance(b, P.Answer):
            assert (s["lane"], s["to"]) == ("literature", [asked[b.question_id]])
        elif isinstance(b, P.WorkResult):
            assert (s["lane"], s["to"]) == ("coder", ["planner"])
        elif isinstance(b, (P.RunInfo, P.RunEnd)):
            assert s["lane"] == "supervisor"
    overview = get(server, f"/api/overview/{DEFAULT}").json()
    assert overview["turns"] == [e.seq for e in logged if isinstance(e.body, P.AgentStep)]
    assert [s["seq"] for s in overview["scores"]] == [
        e.seq for e in logged if isinstance(e.body, P.ScoreEvent)
    ]
    result = json.loads((run_dir / "result.json").read_text())
    assert (
        overview["totals"]["steps"] == result["steps"]
        and overview["totals"]["tokens"] == result["tokens"]
    )
    assert overview["series"][-1][1:3] == [result["steps"], result["tokens"]]


@pytest.mark.parametrize(
    "params, code",
    [
        ({"from": 0, "to": 5}, "bad_range"),
        ({"from": 9, "to": 4}, "bad_range"),
        ({"from": -3, "to": 4}, "bad_range"),
        ({"from": 1, "to": 2001}, "bad_range"),
        ({"from": "x", "to": 4}, "bad_request"),
        ({"from": "1.5", "to": 4}, "bad_request"),
        ({"to": 4}, "bad_request"),
        ({"from": 1}, "bad_request"),
    ],
)
def test_bad_ranges_are_refused_with_a_typed_error(server, params, code):
    r = get(server, f"/api/events/{DEFAULT}", **params)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code


def test_a_range_past_the_head_returns_what_there_is(server, runs):
    head = log_head(runs / DEFAULT)
    r = get(server, f"/api/events/{DEFAULT}", **{"from": head - 2, "to": head + 500}).json()
    assert [s["seq"] for s in r["events"]] == [head - 2, head - 1, head] and r["head"] == head
    assert (
        get(server, f"/api/events/{DEFAULT}", **{"from": head + 1, "to": head + 10}).json()[
            "events"
        ]
        == []
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/events/../../../etc/passwd?from=1&to=1",
        "/api/events/%2e%2e/%2e%2e/etc/passwd?from=1&to=1",
        "/api/events/..%2f..%2fetc?from=1&to=1",
        "/api/run//etc/passwd",
        "/api/run/" + DEFAULT + "/../" + SINGLE,
        "/api/run/./" + DEFAULT,
        "/api/run/no-such-run",
        "/api/config/" + DEFAULT + "%00",
        "/api/artefacts/~root",
    ],
)
def test_unknown_runs_and_path_traversal_are_refused(server, path):
    status, body = raw(server, path)
    assert status == 404, (path, status, body)
    assert body["error"]["code"] in ("unknown_run", "not_found")


def test_links_out_of_the_root_and_inside_a_run_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    copy_runs(outside)
    secret = tmp_path / "secret.txt"
    secret.write_text("the answer key")
    root = copy_runs(tmp_path / "root")
    (root / "escape").symlink_to(outside / DEFAULT)  # a run folder that lives outside the root
    run = root / DEFAULT
    (run / "trajectories" / "leak.traj").symlink_to(secret)
    leak_dir = run / "artefacts" / "step-9-99"
    leak_dir.mkdir()
    (leak_dir / "strategy.py").symlink_to(secret)
    with ViewServer(root) as s:
        names = {r["name"] for r in get(s, "/api/runs").json()["runs"]}
        assert names == {DEFAULT, SINGLE}
        assert raw(s, "/api/run/escape")[0] == 404
        assert get(s, f"/api/file/{DEFAULT}", name="trajectories/leak.traj").status_code == 404
        assert (
            get(s, f"/api/file/{DEFAULT}", name="trajectories/coder.traj").json()["environment"]
            == "mlgym_bus"
        )
        for name in (
            "events.sqlite",
            "../../secret.txt",
            "/etc/passwd",
            "artefacts/best/strategy.py",
        ):
            assert get(s, f"/api/file/{DEFAULT}", name=name).status_code == 400, name
        shown = get(s, f"/api/artefact/{DEFAULT}", label="step-9-99").json()
        assert shown["files"] == []  # the link is not listed, never read
        assert "the answer key" not in get(s, f"/api/artefact/{DEFAULT}", label="step-9-99").text


def test_event_detail_and_links(server, runs):
    logged = events(runs / DEFAULT)
    step = next(e for e in logged if isinstance(e.body, P.AgentStep) and e.body.thought)
    d = get(server, f"/api/event/{DEFAULT}", seq=step.seq).json()
    assert d["seq"] == step.seq and d["topic"] == step.topic and d["sender"] == step.sender
    assert d["body"] == msgspec.to_builtins(step.body)  # every field, as logged
    question = next(e for e in logged if isinstance(e.body, P.Question))
    answer = next(
        e
        for e in logged
        if isinstance(e.body, P.Answer) and e.body.question_id == question.body.question_id
    )
    assert get(server, f"/api/follow/{DEFAULT}", seq=question.seq).json()["linked"] == [
        question.seq,
        answer.seq,
    ]
    cmd = next(
        e for e in logged if isinstance(e.body, P.CommandEvent) and e.body.command == "validate"
    )
    linked = get(server, f"/api/follow/{DEFAULT}", seq=cmd.seq).json()["linked"]
    kinds = [next(e for e in logged if e.seq == s).kind for s in linked]
    assert kinds == ["command_event", "score_event", "observation_event", "agent_step"]
    assert get(server, f"/api/event/{DEFAULT}", seq=10**6).json()["error"]["code"] == "no_event"
    assert get(server, f"/api/event/{DEFAULT}", seq=0).status_code == 400


def test_search_finds_titles_in_any_case_after_a_seq_then_from_the_start(server, runs):
    summaries = all_summaries(server, DEFAULT)
    want = [x["seq"] for x in summaries if "validate" in x["title"].lower()]
    assert len(want) >= 4
    r = get(server, f"/api/search/{DEFAULT}", q="VaLiDaTe", after=0, limit=1000).json()
    assert (r["seqs"], r["total"]) == (want, len(want))
    r = get(server, f"/api/search/{DEFAULT}", q="validate", after=want[1], limit=1000).json()
    assert r["seqs"] == want[2:] + want[:2]  # after the selected event, then from the start
    assert get(server, f"/api/search/{DEFAULT}", q="validate", limit=2).json()["seqs"] == want[:2]
    assert get(server, f"/api/search/{DEFAULT}", q="no such text anywhere").json() == {
        "q": "no such text anywhere",
        "seqs": [],
        "total": 0,
    }
    assert get(server, f"/api/search/{DEFAULT}", q="").json()["error"]["code"] == "bad_request"
    assert get(server, f"/api/search/{DEFAULT}", q="x" * 201).status_code == 400


def test_artefacts_in_order_with_a_diff_to_the_previous_validation(server, runs):
    run_dir = runs / DEFAULT
    labels = get(server, f"/api/artefacts/{DEFAULT}").json()["labels"]
    steps = sorted(
        (p.name for p in (run_dir / "artefacts").glob("step-*")), key=lambda n: int(n.split("-")[2])
    )
    assert labels == steps + ["best", "latest"] and len(steps) >= 2
    shown = get(server, f"/api/artefact/{DEFAULT}", label=steps[-1]).json()
    assert shown["previous"] == steps[-2]
    (f,) = shown["files"]
    before = (run_dir / "artefacts" / steps[-2] / f["name"]).read_text()
    after = (run_dir / "artefacts" / steps[-1] / f["name"]).read_text()
    assert f["text"] == after
    assert f["diff"] == "".join(
        difflib.unified_diff(
            before.splitlines(True),
            after.splitlines(True),
            fromfile=f"{steps[-2]}/{f['name']}",
            tofile=f"{steps[-1]}/{f['name']}",
        )
    )
    assert (
        get(server, f"/api/artefact/{DEFAULT}", label="../../etc").json()["error"]["code"]
        == "no_artefact"
    )
    # the score event that produced a copy names it
    scored = [s for s in get(server, f"/api/overview/{DEFAULT}").json()["scores"] if s["artefact"]]
    assert [s["artefact"] for s in scored] == steps


def sse(
    url: str,
    after: int | None = None,
    last_event_id: int | None = None,
    stop_at: int = 0,
    timeout: float = 60,
) -> list[tuple[int, dict]]:
    """(id, data) of a stream's events until the one with seq `stop_at`."""
    out = []
    headers = {"last-event-id": str(last_event_id)} if last_event_id is not None else {}
    params = {"after": after} if after is not None else {}
    with httpx.stream("GET", url, params=params, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        ident = None
        for line in r.iter_lines():
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                out.append((ident, data))
                if data["seq"] >= stop_at:
                    break
    return out


def test_the_stream_resumes_after_a_seq_or_the_last_event_id(server, runs):
    head = log_head(runs / DEFAULT)
    got = sse(f"{server.base}/api/stream/{DEFAULT}", after=10, stop_at=head)
    assert [i for i, _ in got] == [d["seq"] for _, d in got] == list(range(11, head + 1))
    got = sse(f"{server.base}/api/stream/{DEFAULT}", after=3, last_event_id=40, stop_at=head)
    assert got[0][0] == 41  # the header wins: an EventSource reconnecting sends it
    assert get(server, f"/api/stream/{DEFAULT}", after=-1).status_code == 400


def test_a_live_log_written_by_a_real_broker_reaches_the_stream_in_order(tmp_path, runs):
    from mlgym.bus.broker import spawn
    from mlgym.viewer.synth import Replayer

    root = tmp_path / "runs"
    run_dir = root / "live"
    broker = spawn(run_dir)
    try:
        replayer = Replayer(runs / DEFAULT, run_dir, rate=300)
        replayer.start_run_files()
        with ViewServer(root) as s:
            row = get(s, "/api/runs").json()["runs"][0]
            assert (row["status"], row["live"]) == ("running", True)
            got: list = []
            reader = threading.Thread(
                target=lambda: got.extend(sse(f"{s.base}/api/stream/live", after=0, stop_at=400))
            )
            reader.start()
            sent = asyncio.run(replayer.publish(400))
            reader.join(60)
            assert sent == 400
            assert [d["seq"] for _, d in got] == list(range(1, 401))  # none missed, none twice
            assert get(s, "/api/run/live").json()["head"] == 400
            replayer.finish_run_files()
            row = get(s, "/api/runs").json()["runs"][0]
            assert (row["status"], row["live"], row["steps"]) == (
                "finished",
                False,
                get(s, "/api/overview/live").json()["totals"]["steps"],
            )
    finally:
        broker.stop()


def test_off_loopback_a_token_is_required(runs):
    with ViewServer(runs, "--host", "0.0.0.0") as s:
        assert "?token=" in s.url
        token = s.url.split("?token=")[1].split("#")[0]
        base = f"http://127.0.0.1:{s.port}"
        for url in (
            f"{base}/api/runs",
            f"{base}/",
            f"{base}/static/app.js",
            f"{base}/api/runs?token=wrong",
        ):
            r = httpx.get(url, timeout=30)
            assert r.status_code == 401 and r.json()["error"]["code"] == "token_required", url
        r = httpx.get(f"{base}/?token={token}", timeout=30)
        assert r.status_code == 200 and "mlgym_view=" in r.headers["set-cookie"]
        assert (
            "HttpOnly" in r.headers["set-cookie"] and r.headers["referrer-policy"] == "no-referrer"
        )
        assert (
            httpx.get(f"{base}/api/runs", cookies={"mlgym_view": token}, timeout=30).status_code
            == 200
        )
        assert (
            httpx.get(
                f"{base}/api/runs", cookies={"mlgym_view": token + "x"}, timeout=30
            ).status_code
            == 401
        )


def test_on_loopback_only_loopback_host_names_are_served(server):
    for host, status in (
        ("evil.example", 421),
        ("evil.example:80", 421),
        (f"127.0.0.1.evil.example:{server.port}", 421),
        (f"localhost:{server.port}", 200),
        (f"127.0.0.1:{server.port}", 200),
    ):
        got, _ = raw(server, "/api/runs", headers={"Host": host})
        assert got == status, host
    r = get(server, "/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert (
        r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    )


def test_missing_and_malformed_files_are_said_not_fatal(tmp_path, runs):
    root = tmp_path / "runs"
    broken = root / "broken"
    broken.mkdir(parents=True)
    (broken / "run.json").write_text("{not json")
    copy_run(runs / DEFAULT, root / "no-result", skip=("result.json",))
    starting = root / "starting"
    starting.mkdir()
    (starting / "run.json").write_text(
        json.dumps({"task": "blotto", "status": "starting", "team": {"name": "x"}})
    )
    with ViewServer(root) as s:
        rows = {r["name"]: r for r in get(s, "/api/runs").json()["runs"]}
        assert rows["broken"]["status"] == "unknown" and "run.json" in rows["broken"]["errors"][0]
        assert rows["no-result"]["final"] is None and rows["no-result"]["status"] == "finished"
        # a run without its result (its supervisor died) gets its figures from the event log
        row = wait_until(
            lambda: (
                (r := {x["name"]: x for x in get(s, "/api/runs").json()["runs"]}["no-result"])[
                    "best"
                ]
                is not None
                and r
            ),
            what="figures from the log",
        )
        assert row["score"] == row["best"] and row["steps"] > 0
        assert (rows["starting"]["task"], rows["starting"]["status"]) == ("blotto", "starting")
        meta = get(s, "/api/run/starting").json()
        assert meta["head"] == 0 and meta["files"]["log"] is False
        assert get(s, "/api/events/starting", **{"from": 1, "to": 100}).json()["events"] == []
        assert get(s, "/api/overview/starting").json()["count"] == 0
        assert get(s, "/api/artefacts/starting").json()["labels"] == []
        assert get(s, "/api/analysis/starting").json()["present"] is False


def test_kinds_from_a_newer_protocol_garbage_and_holes_get_rows(tmp_path):
    run = tmp_path / "runs" / "odd"
    log = EventLog(run / "events.sqlite")
    enc = msgspec.msgpack.encode
    try:
        log.append(
            [
                (
                    1,
                    1,
                    1.0,
                    "team/vote",
                    "msgpack",
                    enc(
                        {
                            "body": {"kind": "vote", "choice": "a", "to": ["judge"]},
                            "sender": "coder-2",
                            "topic": "team/vote",
                        }
                    ),
                ),
                (2, 1, 1.5, "team/x", "msgpack", b"\xc1 not msgpack"),
                (
                    5,
                    2,
                    2.0,
                    "team/note",
                    "json",
                    json.dumps(
                        {"body": {"kind": "note", "text": "after a hole"}, "sender": "judge"}
                    ).encode(),
                ),
            ]
        )
    finally:
        log.close()
    with ViewServer(tmp_path / "runs") as s:
        got = get(s, "/api/events/odd", **{"from": 1, "to": 5}).json()["events"]
    assert [(e["seq"], e["kind"], e["lane"]) for e in got] == [
        (1, "vote", "coder-2"),
        (2, "unreadable", "team"),
        (3, "missing", "?"),
        (4, "missing", "?"),
        (5, "note", "judge"),
    ]
    assert got[0]["to"] == ["judge"] and got[4]["title"] == "after a hole" and got[4]["ep"] == 2
    with ViewServer(tmp_path / "runs") as s:
        assert get(s, "/api/overview/odd").json()["epochs"] == [
            [1, 1],
            [5, 2],
        ]  # the broker restarted at 5


def test_analysis_and_sweep_outputs_are_shown(tmp_path, runs):
    sweep = copy_runs(tmp_path / "sweep")
    (sweep / "sweep.json").write_text(json.dumps({"name": "lite games", "runs": 2}))
    analysis = sweep / DEFAULT / "analysis"
    analysis.mkdir()
    report = {
        "members": {
            "planner": {"turns": 9, "messages_sent": 4},
            "coder": {"turns": 10, "messages_sent": 2},
        },
        "graph": {
            "nodes": ["planner", "coder"],
            "edges": [{"from": "planner", "to": "coder", "count": 2}],
        },
    }
    (analysis / "analysis.json").write_text(json.dumps(report))
    (analysis / "graph.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    )
    with ViewServer(sweep) as s:
        got = get(s, "/api/sweep").json()
        assert got["sweep"]["name"] == "lite games"
        assert got["report_source"].startswith("computed")
        assert set(got["report"]["methods"]) == {
            "Baseline",
            "default/scripted:auto",
            "single/scripted:auto",
        }
        assert set(got["report"]["tasks"]) == {"battleOfSexes", "prisonersDilemma"}
        a = get(s, f"/api/analysis/{DEFAULT}").json()
        assert a["data"]["analysis.json"] == report and a["images"] == ["analysis/graph.svg"]
        img = get(s, f"/api/image/{DEFAULT}", name="analysis/graph.svg")
        assert (
            img.headers["content-type"] == "image/svg+xml"
            and "sandbox" in img.headers["content-security-policy"]
        )
        assert get(s, f"/api/image/{DEFAULT}", name="run.json").status_code == 404
        assert get(s, f"/api/image/{DEFAULT}", name="../../x.svg").status_code == 404
        assert get(s, "/api/run/" + DEFAULT).json()["files"]["analysis"] is True
    out = subprocess.run(
        [sys.executable, "-m", "mlgym.cli", "score", str(sweep), "--out", str(sweep / "score")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    with ViewServer(sweep) as s:
        got = get(s, "/api/sweep").json()
        assert got["report_source"] == "score/report.json"
        assert got["report"] == json.loads((sweep / "score" / "report.json").read_text())
        assert "score/profile_best_attempt.svg" in got["images"]
        assert (
            get(s, "/api/sweep-image", name="score/profile_best_attempt.png").headers[
                "content-type"
            ]
            == "image/png"
        )
    with ViewServer(tmp_path / "sweep" / DEFAULT) as s:  # a run folder on its own
        assert s.url.endswith(f"#/run/{DEFAULT}")
        assert get(s, "/api/sweep").json()["error"]["code"] == "not_a_sweep"
        assert [r["name"] for r in get(s, "/api/runs").json()["runs"]] == [DEFAULT]


def test_the_command_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mlgym.cli", "view", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "no folder" in out.stderr
    with ViewServer(tmp_path, "--port", "0") as s:
        assert s.url == f"http://127.0.0.1:{s.port}/"
        assert get(s, "/api/runs").json()["runs"] == []
        assert "mlgym view" in get(s, "/").text
        assert get(s, "/api/nothing-here").json()["error"]["code"] == "not_found"
        start = time.monotonic()
        s.stop()
        assert s.proc.returncode == 0 or s.proc.returncode < 0
        assert time.monotonic() - start < 10


def test_the_demo_ends_by_printing_the_view_command_for_its_run(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlgym.cli",
            "demo",
            "--task",
            "battleOfSexes",
            "--run-dir",
            str(tmp_path / "demo run"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert lines[-2] == f"  watch it in a browser: {summary['view']}"
    argv = shlex.split(summary["view"])
    assert argv[:2] == ["mlgym", "view"] and Path(argv[2]) == Path(summary["run_dir"])
    with ViewServer(Path(argv[2])) as s:  # the command as printed (a path with a space in it)
        (row,) = get(s, "/api/runs").json()["runs"]
        assert row["status"] == "finished" and row["score"] == summary["score"]


def test_a_turn_logged_after_its_next_command_is_still_linked_to_its_own(tmp_path):
    # an agent's AgentStep is acked without being waited for: it can reach the log after the
    # events of the agent's next command
    bodies = [
        P.CommandEvent(session="s1", step=1, command="ls", agent="coder"),
        P.ObservationEvent(session="s1", step=1, output="a.py", exit_code=0),
        P.CommandEvent(session="s1", step=2, command="validate", agent="coder"),
        P.AgentStep(
            agent="coder", role="coder", step=1, action="ls", observation="a.py", env_step=1
        ),
        P.ScoreEvent(session="s1", step=2, action="validate", scores={"Score": 1.5}),
        P.ObservationEvent(session="s1", step=2, output="scored", exit_code=0),
        P.AgentStep(
            agent="coder", role="coder", step=2, action="validate", observation="scored", env_step=2
        ),
    ]
    log = EventLog(tmp_path / "runs" / "r" / "events.sqlite")
    try:
        log.append(
            [
                (
                    i,
                    1,
                    10.0 + i,
                    "x",
                    "msgpack",
                    P.encode(P.make(b, topic="x", sender="coder" if i in (4, 7) else "env")),
                )
                for i, b in enumerate(bodies, 1)
            ]
        )
    finally:
        log.close()
    with ViewServer(tmp_path / "runs") as s:
        assert get(s, "/api/follow/r", seq=1).json()["linked"] == [1, 2, 4]
        assert get(s, "/api/follow/r", seq=3).json()["linked"] == [3, 5, 6, 7]
        (score,) = get(s, "/api/overview/r").json()["scores"]
        assert (score["agent"], score["scores"]) == ("coder", {"Score": 1.5})
