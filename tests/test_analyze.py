"""`mlgym analyze`: attribution, duplicates, waste and time on a hand-built event log whose
answers are known, the JSON keys viewers rely on (docs/teams.md), and the command on a real
run and a folder of runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from mlgym.agents.analyze import analyse, read
from mlgym.agents.analyze.runs import analyse_folder
from mlgym.bus import protocol as P
from mlgym.bus.broker import LOG_FILE
from mlgym.bus.eventlog import EventLog

TOP_KEYS = {
    "format",
    "run",
    "task",
    "team",
    "run_dir",
    "events",
    "seconds",
    "exit_status",
    "metric",
    "baseline",
    "best",
    "final",
    "steps",
    "tokens",
    "cost_usd",
    "members",
    "communication",
    "validations",
    "final_submission",
    "copies",
    "contribution",
    "first_improvement",
    "waste",
    "files",
}
MEMBER_KEYS = {
    "role",
    "turns",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "tokens",
    "cost_usd",
    "env_steps",
    "edits",
    "messages_sent",
    "messages_received",
    "bytes_sent",
    "bytes_received",
    "refused",
    "model_s",
    "command_s",
    "blocked_s",
    "waiting_s",
    "busy_s",
    "lifetime_s",
    "exit",
    "session",
    "validations",
    "improvements",
    "improvement_share",
    "wrote_final",
}
FOLDER_KEYS = {"format", "folder", "runs", "designs", "problems", "files"}
DESIGN_KEYS = {
    "runs",
    "tasks",
    "beat_baseline",
    "normalised_median",
    "tokens_median",
    "seconds_median",
    "steps_median",
    "cost_usd_median",
    "messages_median",
    "first_improvement_s_median",
    "wasted_steps_median",
    "duplicates_median",
    "aup_best_attempt",
    "aup_best_submission",
}


class LogWriter:
    """Writes envelopes into a real event log, as the broker would, with chosen times."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(run_dir / LOG_FILE)
        self.seq = 0

    def add(self, ts: float, topic: str, sender: str, body: P.Body | dict) -> None:
        self.seq += 1
        if isinstance(body, dict):  # a kind this side does not know (x_<team>_...)
            payload = msgspec.msgpack.encode(
                {
                    "body": body,
                    "v": 1,
                    "id": f"id{self.seq}",
                    "topic": topic,
                    "sender": sender,
                    "ts": ts,
                }
            )
        else:
            env = P.Envelope(body=body, id=f"id{self.seq}", topic=topic, sender=sender, ts=ts)
            payload = P.encode(env)
        self.log.append([(self.seq, 1, ts, topic, "msgpack", payload)])

    def cmd(self, ts: float, session: str, step: int, command: str, agent: str) -> None:
        self.add(
            ts,
            f"env/{session}/command",
            "env",
            P.CommandEvent(session=session, step=step, command=command, agent=agent),
        )

    def score(
        self, ts: float, session: str, step: int, value: float, action: str = "validate"
    ) -> None:
        self.add(
            ts,
            f"env/{session}/score",
            "env",
            P.ScoreEvent(session=session, step=step, action=action, scores={"Score": value}),
        )

    def close(self) -> None:
        self.log.close()


def hand_built(run_dir: Path) -> None:
    """A planner and two coders, each coder in its own session (s1, s2), the team's session
    `main`; baseline 1.0. c1 edits strategy.py and scores 1.5 (the first improvement); c2
    edits notes.md (not the artefact), runs train.py (writes) and scores 1.2, then validates
    again unchanged; c1 validates again unchanged; the planner picks c1's artefact, validates
    it in main and submits it."""
    w = LogWriter(run_dir)
    info = P.RunInfo(
        run="r1",
        task="toyTask",
        session="main",
        env="ipc://x",
        team="lab",
        members={"planner": "planner", "c1": "coder", "c2": "coder"},
        baseline={"Score": 1.0},
        directions={"Score": "max"},
        metric="Score",
        sessions={"c1": P.MemberSession("s1", "t1"), "c2": P.MemberSession("s2", "t2")},
        submission="strategy.py",
    )
    w.add(100.0, "run/info", "supervisor", info)
    for who in ("planner", "c1", "c2"):
        w.add(100.5, f"status/{who}", who, P.AgentStatus(agent=who, role="x", state="working"))
    w.add(
        101.0,
        "team/work",
        "planner",
        P.WorkItem(item="w1", title="a", instructions="i", assignee="c1", to=["c1"]),
    )
    w.add(
        101.0,
        "team/work",
        "planner",
        P.WorkItem(item="w2", title="b", instructions="i", assignee="c2", to=["c2"]),
    )
    w.cmd(102.0, "s1", 1, 'open "strategy.py"', "c1")
    w.cmd(103.0, "s1", 2, "edit 1:3\ndef row_strategy(h):\n    return 0\nend_of_edit", "c1")
    w.cmd(104.0, "s1", 3, "validate", "c1")
    w.score(105.0, "s1", 3, 1.5)
    w.cmd(106.0, "s2", 1, 'open "notes.md"', "c2")
    w.cmd(107.0, "s2", 2, "edit 1:1\nideas\nend_of_edit", "c2")
    w.cmd(108.0, "s2", 3, "python train.py", "c2")
    w.cmd(109.0, "s2", 4, "validate", "c2")
    w.score(110.0, "s2", 4, 1.2)
    w.add(110.5, "status/c2", "c2", P.AgentStatus(agent="c2", role="coder", state="idle"))
    w.add(113.5, "status/c2", "c2", P.AgentStatus(agent="c2", role="coder", state="working"))
    w.cmd(114.0, "s2", 5, "validate", "c2")
    w.score(115.0, "s2", 5, 1.2)
    w.cmd(116.0, "s1", 4, "ls", "c1")
    w.cmd(117.0, "s1", 5, "validate", "c1")
    w.score(118.0, "s1", 5, 1.5)
    w.add(
        119.0,
        "team/result",
        "c1",
        P.WorkResult(
            item="w1",
            status="done",
            summary="s",
            to=["planner"],
            session="s1",
            step=3,
            scores={"Score": 1.5},
        ),
    )
    w.add(
        119.5,
        "team/result",
        "c2",
        P.WorkResult(item="w2", status="done", summary="s", to=["planner"]),
    )
    w.add(119.7, "team/x", "c2", {"kind": "x_lab_vote", "to": ["c1"], "choice": "w1"})
    w.add(
        120.0,
        "agents/planner/step",
        "planner",
        P.AgentStep(
            agent="planner",
            role="planner",
            step=3,
            action="wait",
            observation="",
            execution_time=2.0,
            prompt_tokens=100,
            completion_tokens=10,
        ),
    )
    w.add(
        120.5,
        "agents/c1/step",
        "c1",
        P.AgentStep(
            agent="c1",
            role="coder",
            step=1,
            action="ls",
            observation="",
            prompt_tokens=50,
            completion_tokens=5,
        ),
    )
    w.add(
        121.0,
        "team/artefact",
        "planner",
        P.ArtefactCopy(
            source_session="s1", source_step=3, target_session="main", path="strategy.py"
        ),
    )
    w.cmd(122.0, "main", 1, "validate", "planner")
    w.score(123.0, "main", 1, 1.5)
    w.cmd(124.0, "main", 2, "submit", "planner")
    w.score(125.0, "main", 2, 1.49, action="submit")
    w.add(
        126.0,
        "run/end",
        "supervisor",
        P.RunEnd(run="r1", exit_status="submitted", scores={"Score": 1.49}),
    )
    w.close()


def test_attribution_duplicates_waste_and_time_on_a_known_log(tmp_path):
    hand_built(tmp_path / "run")
    a = analyse(read(tmp_path / "run"), str(tmp_path / "run"))
    got = [
        (v.session, v.step, v.score, v.author, v.item, v.assigned_by, v.improved, v.duplicate)
        for v in a.validations
    ]
    assert got == [
        ("s1", 3, 1.5, "c1", "w1", "planner", True, ""),
        (
            "s2",
            4,
            1.2,
            "c2",
            "w2",
            "planner",
            False,
            "",
        ),  # notes.md is not the artefact; train.py is
        ("s2", 5, 1.2, "c2", "w2", "planner", False, "repeat"),
        ("s1", 5, 1.5, "c1", "w1", "planner", False, "repeat"),
        ("main", 1, 1.5, "c1", "w1", "planner", False, "same_result"),  # through the pick
    ]
    f = a.final_submission
    assert (f["author"], f["item"], f["assigned_by"], f["by"], f["score"]) == (
        "c1",
        "w1",
        "planner",
        "planner",
        1.49,
    )
    assert f["validated_at"] == {"session": "main", "step": 1, "score": 1.5}
    assert a.first_improvement == {
        "t_s": 5.0,
        "run_steps": 3,
        "tokens": 0,
        "by": "c1",
        "score": 1.5,
        "session": "s1",
        "step": 3,
    }
    assert a.waste["not_improving"] == 3 and a.waste["steps_on_not_improving"] == 4 + 1 + 2
    assert (a.waste["duplicate_evaluations"], a.waste["repeats"], a.waste["same_results"]) == (
        3,
        2,
        1,
    )
    assert a.waste["members_without_contribution"] == ["c2"]
    assert a.waste["steps_of_members_without_contribution"] == 5
    m = a.members
    assert (
        m["c1"].validations,
        m["c1"].improvements,
        m["c1"].improvement_share,
        m["c1"].wrote_final,
    ) == (3, 1, 1.0, True)
    assert (m["c2"].validations, m["c2"].improvements, m["c2"].wrote_final) == (2, 0, False)
    assert (m["c1"].env_steps, m["c2"].env_steps, m["planner"].env_steps) == (5, 5, 2)
    assert (m["c1"].edits, m["c2"].edits, m["planner"].edits) == (1, 1, 0)
    assert (m["c1"].session, m["c2"].session, m["planner"].session) == ("s1", "s2", "main")
    assert m["c2"].waiting_s == pytest.approx(3.0) and m["planner"].blocked_s == pytest.approx(2.0)
    assert m["planner"].tokens == 110 and a.tokens == 165
    edges = {(s, r): (e["count"], e["kinds"]) for (s, r), e in a.edges.items()}
    assert edges == {
        ("planner", "c1"): (1, {"work": 1}),
        ("planner", "c2"): (1, {"work": 1}),
        ("c1", "planner"): (1, {"result": 1}),
        ("c2", "planner"): (1, {"result": 1}),
        ("c2", "c1"): (1, {"x_lab_vote": 1}),
    }
    assert all(e["bytes"] > 0 for e in a.edges.values())
    assert a.copies[0]["author"] == "c1" and a.copies[0]["by"] == "planner"
    assert a.as_dict()["contribution"] == {
        "c1": {"validations": 3, "improvements": 1, "improvement_share": 1.0, "final": True},
        "c2": {"validations": 2, "improvements": 0, "improvement_share": 0.0, "final": False},
    }


def test_analysis_json_keys_and_files(tmp_path):
    hand_built(tmp_path / "run")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlgym.cli",
            "analyze",
            str(tmp_path / "run"),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout.strip().splitlines()[-1])  # the last line: one JSON object
    assert set(d) == TOP_KEYS and d["format"] == "mlgym-analysis/1"
    assert all(set(m) == MEMBER_KEYS for m in d["members"].values())
    assert set(d["communication"]) == {"edges", "by_kind", "messages", "bytes", "channels"}
    assert set(d["communication"]["edges"][0]) == {"from", "to", "count", "bytes", "kinds"}
    assert set(d["waste"]) >= {"not_improving", "duplicate_evaluations", "repeats", "same_results"}
    assert d == json.loads((out / "analysis.json").read_text())
    for name in ("report.md", "comm_graph.png", "comm_graph.svg", "timeline.png", "timeline.svg"):
        assert (out / name).stat().st_size > 500, name
    assert (out / "comm_graph.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (out / "comm_graph.svg").read_text()[:500]
    assert d["files"] == {
        "json": "analysis.json",
        "report": "report.md",
        "comm_graph_png": "comm_graph.png",
        "comm_graph_svg": "comm_graph.svg",
        "timeline_png": "timeline.png",
        "timeline_svg": "timeline.svg",
    }
    assert "written by **c1** (work item w1 from planner)" in (out / "report.md").read_text()


def test_a_folder_of_runs_by_design(tmp_path):
    """Runs of two designs: one row per run, aggregates and AUP per design, the two plots;
    a run whose log is damaged is reported and the others still analysed."""
    folder = tmp_path / "runs"
    for i in range(2):
        hand_built(folder / f"lab-{i}")
    hand_built(folder / "other")
    # the third run is another design: rewrite its team name in a fresh log
    (folder / "other" / LOG_FILE).unlink()
    (folder / "other" / (LOG_FILE + ".data")).unlink()
    w = LogWriter(folder / "other")
    w.add(
        1.0,
        "run/info",
        "supervisor",
        P.RunInfo(
            run="r2",
            task="toyTask",
            session="main",
            env="x",
            team="solo",
            members={"a": "single"},
            baseline={"Score": 1.0},
            directions={"Score": "max"},
            metric="Score",
        ),
    )
    w.cmd(2.0, "main", 1, "edit 1:1\nx\nend_of_edit", "a")
    w.cmd(3.0, "main", 2, "submit", "a")
    w.score(4.0, "main", 2, 0.9, action="submit")
    w.close()
    (folder / "broken").mkdir()
    (folder / "broken" / LOG_FILE).write_bytes(b"not a database")
    summary, problems = analyse_folder(folder, None)
    assert set(summary) == FOLDER_KEYS
    assert len(summary["runs"]) == 3 and len(problems) == 1 and "broken" in problems[0]
    assert set(summary["designs"]) == {"lab", "solo"}
    lab = summary["designs"]["lab"]
    assert set(lab) == DESIGN_KEYS and lab["runs"] == 2 and lab["beat_baseline"] == 2
    assert lab["normalised_median"] == pytest.approx(1.49)
    assert lab["aup_best_attempt"] is not None and summary["designs"]["solo"]["beat_baseline"] == 0
    assert (
        summary["designs"]["lab"]["aup_best_submission"]
        > summary["designs"]["solo"]["aup_best_submission"]
    )
    for name in ("score_vs_tokens.png", "score_vs_wall_clock.svg", "report.md", "analysis.json"):
        assert (folder / "analysis" / name).is_file()
    assert (folder / "lab-0" / "analysis" / "analysis.json").is_file()


def test_analyze_a_real_run(tmp_path, monkeypatch):
    """A real offline run of the reviewer design, analysed: the reviewer's verdict is on the
    graph, the coder wrote the final artefact, the planner was blocked while it waited."""
    import asyncio
    import shutil

    from conftest import require

    from mlgym.agents import config as C
    from mlgym.agents.supervisor import run_team

    require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")
    monkeypatch.setenv("MLGYM_OFFLINE", "1")
    run_dir = tmp_path / "run"
    asyncio.run(run_team("battleOfSexes", C.load_team("reviewer"), run_dir=run_dir, progress=False))
    a = analyse(read(run_dir), str(run_dir))
    assert a.final_submission["author"] == "coder" and a.members["coder"].wrote_final
    assert ("reviewer", "planner") in a.edges and a.edges[("reviewer", "planner")]["kinds"] == {
        "verdict": 1
    }
    assert a.members["planner"].blocked_s > 0 and a.members["reviewer"].waiting_s > 0
    assert a.first_improvement is not None and a.first_improvement["by"] == "coder"
    assert a.members["coder"].env_steps + a.members["planner"].env_steps == a.steps
