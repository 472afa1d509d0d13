"""The Node.js client (examples/js, written from docs/protocol.md only) against a real broker
process: what it publishes reaches a Python subscriber intact, and it receives Python's
messages, replayed and live, with the broker's sequence numbers."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import msgspec

from mlgym.bus import connect
from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient
from conftest import require

pytestmark = pytest.mark.timeout(600)  # the first run may install the npm packages

JS_DIR = Path(__file__).resolve().parents[1] / "examples" / "js"


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node is not None and npm is not None, "Node.js and npm are not installed")
    wanted = [JS_DIR / "node_modules" / "zeromq", JS_DIR / "node_modules" / "@msgpack" / "msgpack"]
    if not all(path.exists() for path in wanted):
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=540)
        require(done.returncode == 0, f"npm ci failed (offline?): {done.stderr[-2000:]}")
    return node


@pytest.fixture
def broker(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlgym.cli", "bus", "serve", "--run-dir", str(run_dir),
         "--tcp", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    descriptor = run_dir / "bus.json"
    deadline = time.monotonic() + 30
    while not descriptor.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"broker did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    yield json.loads(descriptor.read_text())
    proc.terminate()
    proc.communicate(timeout=20)


async def test_js_client_round_trip(node, broker):
    url = broker["url"]
    async with connect(url, sender="py") as bus:
        from_js = bus.subscribe("js/", from_seq=1)
        await from_js.ready(10)
        py_seqs = [await bus.publish("py/notes", p.Note(text=f"py {i}", data={"i": i}), acked=True)
                   for i in range(3)]  # before the JS client starts: it must replay them

        proc = await asyncio.create_subprocess_exec(
            node, "demo.mjs", "--url", url, "--sender", "js-client", "--publish", "js/notes",
            "--count", "3", "--subscribe", "py/", "--from-seq", "1", "--expect", "5",
            "--timeout", "60", cwd=JS_DIR, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        events = []
        assert proc.stdout is not None
        async for raw in proc.stdout:
            event = json.loads(raw)
            events.append(event)
            if event["event"] == "ready":  # its subscription is live: these may come either way
                for i in range(2):
                    py_seqs.append(await bus.publish("py/live", p.Note(text=f"live {i}"), acked=True))
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert await proc.wait() == 0, (events, stderr)

        got_from_js = [await from_js.get(10) for _ in range(4)]
        await from_js.close()

    by_kind: dict[str, list[dict]] = {}
    for event in events:
        by_kind.setdefault(event["event"], []).append(event)
    assert by_kind["pong"] == [{"event": "pong", "service": "bus", "epoch": broker["epoch"],
                                "payload": "AQID"}]  # bytes [1, 2, 3] echoed

    # JS received Python's messages: replayed and live, in order, with the broker's seqs
    received = by_kind["message"]
    assert [m["seq"] for m in received] == py_seqs
    assert [m["body"]["text"] for m in received] == ["py 0", "py 1", "py 2", "live 0", "live 1"]
    assert received[1]["body"] == {"kind": "note", "text": "py 1", "data": {"i": 1}}
    assert all(m["sender"] == "py" and m["kind"] == "note" and m["epoch"] == broker["epoch"]
               for m in received)

    # Python received JS's messages intact
    published = by_kind["published"]
    assert [e.id for e in got_from_js[:3]] == [e["id"] for e in published]
    for i, env in enumerate(got_from_js[:3]):
        assert env.body == p.Note(text=f"hello {i} from node",
                                  data={"i": i, "lang": "js", "nested": {"ok": True, "pi": 3.25}})
        assert (env.topic, env.sender, env.epoch) == ("js/notes", "js-client", broker["epoch"])
        assert abs(env.ts - time.time()) < 600 and len(env.id) == 26
    acked = got_from_js[3]
    assert acked.body == p.Note(text="acked from node") and acked.seq == by_kind["acked"][0]["seq"]
    assert [e.seq for e in got_from_js] == sorted(e.seq for e in got_from_js)

    # its history request saw exactly what Python saw on js/notes
    assert by_kind["history"][0]["seqs"] == [e.seq for e in got_from_js]
    assert by_kind["done"]


async def test_js_client_publishes_a_team_kind_acked(node, broker):
    """docs/protocol.md: a team may use kinds of its own (`x_<team>_...`) and publish them
    acknowledged. A kind the broker does not know is logged and served as sent; a body without
    a string `kind` is still refused."""
    proc = await asyncio.create_subprocess_exec(
        node, "demo.mjs", "--url", broker["url"], "--count", "0", "--team-kind", "x_jsteam_vote",
        "--team-topic", "team/js", "--timeout", "60", cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
    events = {e["event"]: e for e in map(json.loads, out.decode().splitlines())}
    seq = events["team_acked"]["seq"]
    rpc = RpcClient(broker["endpoints"]["rpc"])
    try:
        chunk = await rpc.request("bus", p.HistoryRequest(from_seq=seq, to_seq=seq), timeout=10)
        assert isinstance(chunk, p.HistoryChunk) and [r.seq for r in chunk.records] == [seq]
        logged = msgspec.msgpack.decode(chunk.records[0].payload)
        assert logged["topic"] == "team/js" and logged["sender"] == "js-client"
        assert logged["body"] == {"kind": "x_jsteam_vote", "votes": [3, 1, 2], "blob": b"\x00\xff"}
        bad = p.AnyEnvelope(body={"kinds": "no"}, topic="team/js")
        with pytest.raises(RpcError, match="kind"):
            await rpc.request("bus", p.Publish(message=bad), timeout=10)
    finally:
        await rpc.close()
