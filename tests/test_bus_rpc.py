"""Generic RPC (ROUTER/DEALER) over real sockets: multiplexing, timeouts, typed errors, streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient, RpcServer


class Service:
    """A test service: echo, wait for a gate, fail in several ways, stream."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, env: P.Envelope):
        body = env.body
        if not isinstance(body, P.Note):
            raise RpcError("unsupported", f"cannot handle {env.kind}")
        if body.text == "echo":
            return P.Note(text="echo", data={"sender": env.sender, **body.data})
        if body.text == "wait":
            await self.gate.wait()
            return P.Note(text="released")
        if body.text == "hang":
            await asyncio.Event().wait()
        if body.text == "typed":
            raise RpcError("not_found", "no such thing", {"what": "thing"})
        if body.text == "crash":
            raise ValueError("boom")
        if body.text == "stream":
            return self.stream(int(body.data["n"]), bool(body.data.get("fail")))
        if body.text == "none":
            return None
        return P.Note(text="?")

    async def stream(self, n: int, fail: bool) -> AsyncIterator[P.Body]:
        for i in range(n):
            yield P.Note(text=f"part{i}")
        if fail:
            raise RpcError("broken", "stream failed midway")


@pytest.fixture
async def served(tmp_path: Path):
    service = Service()
    server = RpcServer(f"ipc://{tmp_path}/svc.rpc", "svc", service, epoch=3)
    await server.start()
    client = RpcClient(server.bound[0], sender="tester")
    await client.connect()
    yield service, server, client
    await client.close()
    await server.stop()


async def test_echo_and_ping(served) -> None:
    _, _, client = served
    reply = await client.request("svc", P.Note(text="echo", data={"x": 1}))
    assert reply == P.Note(text="echo", data={"sender": "tester", "x": 1})
    assert await client.request("svc", P.Ping(payload=b"p")) == P.Pong(service="svc", epoch=3, payload=b"p")


async def test_concurrent_requests_are_multiplexed(served) -> None:
    service, _, client = served
    slow = asyncio.create_task(client.request("svc", P.Note(text="wait")))
    fast = [await client.request("svc", P.Note(text="echo", data={"i": i})) for i in range(5)]
    assert [f.data["i"] for f in fast] == list(range(5))
    assert not slow.done()  # the slow request did not hold up the fast ones
    service.gate.set()
    assert (await slow).text == "released"


async def test_a_burst_larger_than_one_drain_batch_is_all_answered(served, tmp_path) -> None:
    # the sockets are read from the loop's reader callback, BATCH messages per turn; nothing
    # may be stranded when a burst outruns one batch or a send swallows the readiness edge
    from mlgym.bus.zdrain import BATCH

    _, server, client = served
    other = RpcClient(server.bound[0], sender="other")
    try:
        n = 3 * BATCH + 7
        replies = await asyncio.gather(
            *(c.request("svc", P.Note(text="echo", data={"i": i}), timeout=30)
              for i in range(n) for c in (client, other)))
        assert sorted(r.data["i"] for r in replies) == sorted(list(range(n)) * 2)
        assert {r.data["sender"] for r in replies} == {"tester", "other"}
    finally:
        await other.close()


async def test_a_request_sent_before_the_server_starts_goes_out_once_it_does(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/late.rpc"
    async with RpcClient(endpoint) as client:
        pending = asyncio.create_task(client.request("svc", P.Ping(payload=b"early"), timeout=20))
        await asyncio.sleep(0.3)  # no connection: the send waits (IMMEDIATE), nothing is lost
        assert not pending.done()
        async with RpcServer(endpoint, "svc", Service()):
            assert (await pending).payload == b"early"


async def test_timeout_raises_and_late_replies_are_dropped(served) -> None:
    _, server, client = served
    with pytest.raises(TimeoutError):
        await client.request("svc", P.Note(text="hang"), timeout=0.2)
    assert await client.request("svc", P.Note(text="echo")) == P.Note(text="echo", data={"sender": "tester"})
    assert server.requests >= 2


async def test_typed_errors(served) -> None:
    _, _, client = served
    with pytest.raises(RpcError) as err:
        await client.request("svc", P.Note(text="typed"))
    assert (err.value.code, err.value.message, err.value.detail) == ("not_found", "no such thing", {"what": "thing"})
    with pytest.raises(RpcError) as err:
        await client.request("svc", P.Note(text="crash"))
    assert err.value.code == "internal" and "boom" in err.value.message
    with pytest.raises(RpcError) as err:
        await client.request("svc", P.Note(text="none"))
    assert err.value.code == "internal"
    with pytest.raises(RpcError) as err:
        await client.request("svc", P.StatusRequest())
    assert err.value.code == "unsupported"
    with pytest.raises(RpcError) as err:
        await client.request("other", P.Ping())
    assert err.value.code == "unknown_service"


async def test_streamed_replies(served) -> None:
    _, _, client = served
    parts = [b.text async for b in client.stream("svc", P.Note(text="stream", data={"n": 4}))]
    assert parts == ["part0", "part1", "part2", "part3"]
    got = []
    with pytest.raises(RpcError) as err:
        async for b in client.stream("svc", P.Note(text="stream", data={"n": 2, "fail": True})):
            got.append(b.text)
    assert got == ["part0", "part1"] and err.value.code == "broken"
    with pytest.raises(RpcError) as err:
        async for _ in client.stream("svc", P.Note(text="stream", data={"n": 0})):
            pass
    assert err.value.code == "internal"  # an empty stream is an error, never silence


async def test_req_socket_with_delimiter_is_answered(served) -> None:
    _, server, _ = served
    req = zmq.asyncio.Context.instance().socket(zmq.REQ)
    req.connect(server.bound[0])
    try:
        env = P.make(P.Ping(), topic="svc")
        await req.send_multipart([P.JSON, P.encode(env, P.JSON)])
        enc, payload = await asyncio.wait_for(req.recv_multipart(), 10)
        reply = P.decode(payload, enc)
        assert enc == P.JSON and reply.reply_to == env.id and isinstance(reply.body, P.Pong)
    finally:
        req.close(0)


async def test_no_server_times_out(tmp_path: Path) -> None:
    async with RpcClient(f"ipc://{tmp_path}/nothing.rpc") as client:
        with pytest.raises(TimeoutError):
            await client.request("svc", P.Ping(), timeout=0.2)


async def test_server_over_tcp_port_zero() -> None:
    async with RpcServer("tcp://127.0.0.1:0", "svc", Service()) as server:
        assert server.bound[0].startswith("tcp://127.0.0.1:")
        async with RpcClient(server.bound[0]) as client:
            assert isinstance(await client.request("svc", P.Ping()), P.Pong)
