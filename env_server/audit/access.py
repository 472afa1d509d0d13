"""Attacks by other clients: someone else's session, and hostile messages on the bus
(issue #16 findings 12 and 7)."""

from __future__ import annotations

import asyncio
import os
import secrets

import msgspec
import zmq
import zmq.asyncio

from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.env_server.audit.harness import Harness
from mlgym.env_server.audit.registry import attack


@attack("sessions_belong_to_their_owner", "12",
        "another client cannot list, read, write, act on, submit or close a session")
async def sessions_belong_to_their_owner(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    other = RpcClient(f"ipc://{h.root}/env.sock")
    try:
        listed = await other.request("env", p.SessionList(), timeout=30)
        shown = [x.session for x in listed.sessions]
        got = []
        for token in ("", secrets.token_urlsafe(32), s.id):
            for body in (p.Act(session=s.id, command="echo pwned", token=token),
                         p.ToolCall(session=s.id, tool="submit", token=token),
                         p.ReadFile(session=s.id, path=h.submission, token=token),
                         p.WriteFile(session=s.id, path="x.txt", data=b"x", token=token),
                         p.SessionStatus(session=s.id, token=token),
                         p.ReadArtefact(session=s.id, step=1, token=token),
                         p.SessionClose(session=s.id, token=token)):
                try:
                    await other.request("env", body, timeout=60)
                    got.append(f"{type(body).__name__} with token {token[:6]!r}")
                except RpcError as exc:
                    if exc.code != "no_session":
                        got.append(f"{type(body).__name__}: {exc.code}")
        still = await s.act("echo mine")
        ok = not shown and not got and still.output.strip() == "mine"
        return ok, ((f"ANSWERED: {got}; " if got else "21 foreign requests refused "
                     "(no_session); ") + (f"LISTED {shown}" if shown else "nothing listed"))
    finally:
        await other.close()
        await s.close()


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


@attack("bus_survives_hostile_messages", "7",
        "malformed or deeply nested messages are dropped; the broker and subscribers go on")
async def bus_survives_hostile_messages(h: Harness) -> tuple[bool, str]:
    ctx = zmq.asyncio.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.connect(h.broker.info["endpoints"]["pub"])
    await asyncio.sleep(0.5)  # the subscription handshake
    try:
        body = msgspec.Raw(b"\x82\xa4kind\xa4note\xa4text" + _nested(100_000))
        inner = msgspec.msgpack.encode({"body": body, "v": p.PROTOCOL_VERSION, "topic": "x/evil",
                                        "sender": "evil", "id": "e1"})
        hostile = [
            [b"x/evil", p.MSGPACK, _nested(100_000)],
            [b"x/evil", p.MSGPACK, inner],
            [b"x/evil", p.MSGPACK, os.urandom(4096)],
            [b"x/evil", b"json", b"[" * 200_000],
            [b"x/evil"],
            [b"x/evil", p.MSGPACK, b"\xdf\xff\xff\xff\xff"],  # a map claiming 4 billion keys
            [b"x/evil", p.MSGPACK, os.urandom(8 * 2**20)],
        ]
        for frames in hostile:
            await pub.send_multipart(frames)
        await asyncio.sleep(1.0)
        marker = f"audit-after-hostile-{secrets.token_hex(8)}"
        await h.bus.publish("audit/check", p.Note(text=marker))
        deadline = asyncio.get_running_loop().time() + 10
        delivered = False
        while not delivered and asyncio.get_running_loop().time() < deadline:
            delivered = any(marker.encode() in raw for raw in h.bus_seen[-50:])
            await asyncio.sleep(0.1)
        broker_alive = h.broker.proc.poll() is None
        listener_alive = h._listen is not None and not h._listen.done()
        ok = delivered and broker_alive and listener_alive
        return ok, (f"{len(hostile)} hostile messages sent; broker "
                    f"{'alive' if broker_alive else 'DEAD'}, a later message "
                    f"{'delivered' if delivered else 'NOT DELIVERED'}, subscriber "
                    f"{'alive' if listener_alive else 'DEAD'}")
    finally:
        pub.close()
