"""A local OpenAI-compatible chat server that reports prompt-cache reuse as real servers do, for
`mlgym bench agents --model local` (and tests): it speaks the real HTTP protocol (JSON and
server-sent events, `stream_options.include_usage`), so the official `openai` client is what
talks to it.

Like llama.cpp's server it renders the messages with a chat template, tokenizes them, and keeps
each slot's previous prompt (plus what it generated): a request goes to the slot sharing the
longest prefix with it (else the least recently used one), and the shared prefix is what it
reports as `usage.prompt_tokens_details.cached_tokens`; the rest would be computed again.
`--block 128 --min-cached 1024` counts as OpenAI's cache does (whole 128-token blocks, prompts
of 1024 tokens or more). `--prefill-tps N` sleeps for the uncached tokens at N tokens/s, to see
what re-processing costs in time. It does not run a model: it answers a fixed short reply.

    python bench/cacheserver.py [--port 8088] [--slots 4] [--block 1] [--prefill-tps 0]
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# GPT-2's pre-tokenizer, with \w for letters and digits: about 4 characters a token on English
# text, finer on code and numbers; what matters here is that equal text gives equal tokens.
_TOKEN = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+")
REPLY = "ok"


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def render(messages: list[dict[str, Any]]) -> str:
    """ChatML, as many local models' templates are, ending with the assistant's turn."""
    out = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            content += json.dumps(m["tool_calls"], sort_keys=True)
        out.append(f"<|im_start|>{m.get('role', 'user')}\n{content}<|im_end|>\n")
    return "".join(out) + "<|im_start|>assistant\n"


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Slot:
    tokens: list[str] = field(default_factory=list)
    used: float = 0.0


class Cache:
    """The slots and the accounting, shared by the request threads."""

    def __init__(self, slots: int = 4, block: int = 1, min_cached: int = 0,
                 prefill_tps: float = 0.0):
        self.slots = [Slot() for _ in range(max(slots, 1))]
        self.block = max(block, 1)
        self.min_cached = min_cached
        self.prefill_tps = prefill_tps
        self.lock = threading.Lock()
        self.requests: list[dict[str, int]] = []

    def admit(self, messages: list[dict[str, Any]]) -> tuple[int, int, int]:
        """(prompt tokens, cached tokens, completion tokens) for one request; the chosen slot
        then holds this prompt and the reply."""
        prompt = tokenize(render(messages))
        reply = tokenize(REPLY)
        with self.lock:
            best = max(self.slots, key=lambda s: (common_prefix(s.tokens, prompt), -s.used))
            shared = common_prefix(best.tokens, prompt)
            slot = best if shared else min(self.slots, key=lambda s: s.used)
            shared = shared if slot is best else 0
            shared = min(shared, len(prompt) - 1)  # the last prompt token is always computed
            cached = shared // self.block * self.block
            if len(prompt) < self.min_cached:
                cached = 0
            slot.tokens = prompt + reply
            slot.used = time.monotonic()
            self.requests.append({"prompt": len(prompt), "cached": cached})
        return len(prompt), cached, len(reply)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # /v1/models, as clients probe it
        self._json(200, {"object": "list", "data": [{"id": "local", "object": "model",
                                                     "owned_by": "mlgym-bench"}]})

    def do_POST(self) -> None:
        cache: Cache = self.server.cache  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            messages = list(body["messages"])
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": {"message": f"bad request: {exc}",
                                       "type": "invalid_request_error"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        prompt, cached, completion = cache.admit(messages)
        if cache.prefill_tps:
            time.sleep((prompt - cached) / cache.prefill_tps)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        base = {"id": f"chatcmpl-{len(cache.requests)}", "created": int(time.time()),
                "model": body.get("model", "local")}
        if not body.get("stream"):
            message = {"role": "assistant", "content": REPLY}
            self._json(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}]})
            return
        events = [{**base, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": REPLY}, "finish_reason": None}]},
            {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "object": "chat.completion.chunk", "choices": [],
                           "usage": usage})
        payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, payload.encode(), "text/event-stream")

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class CacheServer:
    """The server on 127.0.0.1 in a thread: `with CacheServer() as srv: srv.url` (".../v1")."""

    def __init__(self, port: int = 0, **cache_kw: Any):
        self.cache = Cache(**cache_kw)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.cache = self.cache  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> CacheServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8088)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--block", type=int, default=1,
                    help="cached tokens count in whole blocks (OpenAI: 128)")
    ap.add_argument("--min-cached", type=int, default=0,
                    help="shorter prompts are never cached (OpenAI: 1024)")
    ap.add_argument("--prefill-tps", type=float, default=0.0,
                    help="sleep for uncached tokens at this rate")
    args = ap.parse_args()
    srv = CacheServer(args.port, slots=args.slots, block=args.block, min_cached=args.min_cached,
                      prefill_tps=args.prefill_tps)
    print(f"serving {srv.url} (model spec openai:local@{srv.url})", flush=True)
    with srv:
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
