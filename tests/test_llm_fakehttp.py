"""A real local HTTP server that plays scripted replies, for driving the official OpenAI and
google-genai SDKs in tests (test_llm_openai.py, test_llm_gemini.py import it).

It is a stdlib ThreadingHTTPServer on 127.0.0.1: the SDKs make real TCP connections and parse
real JSON and server-sent events. Every request is recorded (path, headers, JSON body, time, and
when the client hung up on a reply still being written) so tests can assert what the clients
actually sent and that a cancelled call reached the server.
"""

from __future__ import annotations

import collections
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

import httpx


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    hung_up: float | None = None  # when a write failed because the client had closed


@dataclass
class Reply:
    status: int = 200
    json: Any = None  # a JSON body
    # server-sent events: each str is one `data:` payload, each float a pause of that many
    # seconds (a stall); any iterable, so an endless generator streams forever
    sse: Iterable[str | float] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering (released early when the server stops)
    interval_s: float = 0.0  # pause between events


Responder = Callable[[Seen], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; streams end by closing

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                    time.monotonic())
        reply = fake.next_reply(seen)
        try:
            if reply.delay_s and not self._pause(reply.delay_s):
                raise BrokenPipeError
            self._write(reply)
        except (BrokenPipeError, ConnectionResetError):
            seen.hung_up = time.monotonic()  # the client gave up (timeout, cut, cancel)

    def _pause(self, seconds: float) -> bool:
        """Wait (until the server stops), watching the connection; False when the client hung
        up meanwhile, as a real server notices (llama.cpp stops generating then)."""
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        deadline = time.monotonic() + seconds
        while not fake.stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.02)
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                except OSError:
                    return False
        return True

    def _write(self, reply: Reply) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        self.send_response(reply.status)
        if reply.sse is not None:
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
            for data in reply.sse:
                if fake.stopping.is_set():
                    return
                if isinstance(data, float):
                    if not self._pause(data):
                        raise BrokenPipeError
                    continue
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
                if reply.interval_s and not self._pause(reply.interval_s):
                    raise BrokenPipeError
            return
        payload = json.dumps(reply.json if reply.json is not None else {}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


class FakeServer:
    """Answers requests from a queue of scripted replies (then from `default`, if set)."""

    def __init__(self, default: Responder | None = None):
        self.requests: list[Seen] = []
        self.script: collections.deque[Reply | Responder] = collections.deque()
        self.default = default
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def push(self, *replies: Reply | Responder) -> None:
        self.script.extend(replies)

    def next_reply(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            item = self.script.popleft() if self.script else self.default
        if item is None:
            return Reply(599, {"error": {"message": "fake server: no scripted reply left"}})
        return item(seen) if callable(item) else item

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# ----------------------------------------------------------------------- the fake itself


def test_fake_server_replays_script_and_records_requests():
    with FakeServer() as srv:
        srv.push(Reply(201, {"a": 1}, headers={"X-Test": "yes"}), Reply(sse=["one", "[DONE]"]))
        r1 = httpx.post(srv.url + "/x?q=1", json={"k": "v"}, headers={"Authorization": "Bearer t"})
        r2 = httpx.post(srv.url + "/y", json={})
        r3 = httpx.post(srv.url + "/z", json={})
    assert (r1.status_code, r1.json(), r1.headers["x-test"]) == (201, {"a": 1}, "yes")
    assert r2.text == "data: one\n\ndata: [DONE]\n\n"
    assert r3.status_code == 599  # script exhausted: loud, not a hang
    assert [s.path for s in srv.requests] == ["/x?q=1", "/y", "/z"]
    assert srv.requests[0].body == {"k": "v"}
    assert srv.requests[0].headers["authorization"] == "Bearer t"
