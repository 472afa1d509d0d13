"""The viewer's web app (Starlette): the static front end and a JSON + server-sent-events API
over the runs of one root folder. docs/viewer.md lists the routes.

Every handler is async and reads files and the event log in worker threads. Errors are typed:
`{"error": {"code", "message"}}` with a 4xx status. Requests pass `Guard` first: on loopback
only a loopback Host header is served (a web page elsewhere cannot reach the runs by DNS
rebinding); with a token, a request must carry it (`?token=`, after which a cookie holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgym import log
from mlgym.viewer import artefacts, extras, runs
from mlgym.viewer.catalog import Catalog, UnknownRun, read_inside, valid_name
from mlgym.viewer.index import Indexes, RunIndex

logger = log.get(__name__)

STATIC = Path(str(resources.files("mlgym.viewer") / "static"))
MAX_SPAN = 2000  # events per range request at most
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
SSE_BATCH = 2000  # events per write when a stream catches up
MAX_STRING = 200_000  # characters of one field in an event's detail (unless full=1)
MAX_FILE = 16 * 1024 * 1024
COOKIE = "mlgym_view"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_json = msgspec.json.Encoder()

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the token may be in the page's URL
    (b"x-frame-options", b"DENY"),
]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class Guard:
    """ASGI middleware: the Host check on loopback, the token, and security headers."""

    def __init__(self, app: ASGIApp, token: str | None, loopback: bool):
        self.app, self.token, self.loopback = app, token, loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.loopback:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_HOSTS:
                await error_response(421, "bad_host", "this viewer serves loopback addresses only")(
                    scope, receive, send
                )
                return
        set_cookie = False
        if self.token is not None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            cookie = SimpleCookie(headers.get("cookie", ""))
            held = cookie[COOKIE].value if COOKIE in cookie else ""
            if given and hmac.compare_digest(given, self.token):
                set_cookie = True
            elif not (held and hmac.compare_digest(held, self.token)):
                await error_response(
                    401,
                    "token_required",
                    "open the URL that `mlgym view` printed (it carries the token)",
                )(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    extra.append(
                        (
                            b"set-cookie",
                            f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode(),
                        )
                    )
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _int_param(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise ApiError(400, "bad_request", f"`{name}` is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            400, "bad_request", f"`{name}` must be an integer, got {raw[:40]!r}"
        ) from None


def _truncate(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"\n… [{len(value) - limit} more characters: ?full=1 shows them]"
    if isinstance(value, dict):
        return {k: _truncate(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_truncate(v, limit) for v in value]
    return value


class Viewer:
    """The handlers, over one catalog of runs."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.indexes = Indexes()
        self.closing = asyncio.Event()

    # ------------------------------------------------------------------ helpers

    async def _run(self, request: Request) -> tuple[str, Path]:
        name = request.path_params.get("run", "")
        try:
            return name, await asyncio.to_thread(self.catalog.find, name)
        except UnknownRun:
            raise ApiError(
                404, "unknown_run", f"no run named {name[:200]!r} under the viewer's folder"
            ) from None

    async def _index(self, run_dir: Path) -> RunIndex:
        idx = self.indexes.peek(run_dir)
        if idx is None:
            run, _ = await asyncio.to_thread(runs.load_json, run_dir / "run.json")
            idx = self.indexes.get(run_dir, runs.members_of(run if isinstance(run, dict) else None))
        return idx

    # ------------------------------------------------------------------ pages

    async def home(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def info(self, request: Request) -> Response:
        def facts() -> dict[str, Any]:
            found = self.catalog.scan()
            return {
                "root": str(self.catalog.root),
                "sweep": self.catalog.is_sweep,
                "single": next(iter(found)) if self.catalog.single and found else None,
                "runs": len(found),
            }

        return JSONResponse(await asyncio.to_thread(facts))

    async def list_runs(self, request: Request) -> Response:
        found = await asyncio.to_thread(self.catalog.scan)
        rows, read = [], []
        for name, path in found.items():
            idx = self.indexes.peek(path)
            row = await asyncio.to_thread(runs.describe, name, path, idx)
            rows.append(row)
            # figures only the log has (a live run, one whose supervisor died before its
            # result.json): read it in the background, the next refresh shows them
            log_only = not row["has_result"] and row["status"] != "unknown"
            if idx is None and (row["live"] or log_only):
                read.append((row["live"], path))
        dead = [p for live, p in read if not live]
        for live, path in read:
            if live or len(dead) <= self.indexes.keep:  # never more than the indexes kept
                (await self._index(path)).read_all()
        return JSONResponse({"runs": rows})

    async def run(self, request: Request) -> Response:
        name, path = await self._run(request)
        idx = await self._index(path)
        await idx.reach(1)  # the first read is short: it gives the run's start and first lanes
        row = await asyncio.to_thread(runs.describe, name, path, idx)
        head = max(await asyncio.to_thread(_log_head, path), idx.head)
        async with idx.reading():
            lanes = [{"name": n, "role": r} for n, r in idx.timeline.lanes.items()]
        return JSONResponse(
            {
                **row,
                "files": await asyncio.to_thread(runs.files_of, path),
                "head": head,
                "first": idx.first or 1,
                "lanes": lanes,
            }
        )

    async def overview(self, request: Request) -> Response:
        _, path = await self._run(request)
        return JSONResponse(await (await self._index(path)).overview())

    async def events(self, request: Request) -> Response:
        """Summaries of the events with from <= seq <= to (at most MAX_SPAN)."""
        lo, hi = _int_param(request, "from"), _int_param(request, "to")
        if lo < 1 or hi < lo:
            raise ApiError(400, "bad_range", f"need 1 <= from <= to, got from={lo} to={hi}")
        if hi - lo + 1 > MAX_SPAN:
            raise ApiError(
                400, "bad_range", f"at most {MAX_SPAN} events per request, asked {hi - lo + 1}"
            )
        _, path = await self._run(request)
        idx = await self._index(path)
        await idx.reach(hi)
        body = b'{"first":%d,"head":%d,"events":[%s]}' % (
            idx.first or 1,
            idx.head,
            b",".join(idx.slice(lo, hi)),
        )
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    async def event(self, request: Request) -> Response:
        seq = _int_param(request, "seq")
        if seq < 1:
            raise ApiError(400, "bad_range", f"seq must be >= 1, got {seq}")
        _, path = await self._run(request)
        idx = await self._index(path)
        found = await asyncio.to_thread(idx.detail, seq)
        if found is None:
            raise ApiError(404, "no_event", f"no event {seq} in this run's log")
        if request.query_params.get("full") != "1":
            found = _truncate(found, MAX_STRING)
        await idx.reach(seq)
        found["links"] = idx.timeline.follow(seq)
        return Response(_json.encode(found), media_type="application/json")

    async def follow(self, request: Request) -> Response:
        seq = _int_param(request, "seq")
        _, path = await self._run(request)
        idx = await self._index(path)
        await idx.catch_up()
        return JSONResponse({"seq": seq, "linked": idx.timeline.follow(seq)})

    async def search(self, request: Request) -> Response:
        """Events whose title holds `q` (any case): the next ones after `after`, then from
        the start; at most `limit`."""
        text = request.query_params.get("q", "")
        if not text or len(text) > 200:
            raise ApiError(400, "bad_request", "`q` must hold 1 to 200 characters")
        after, limit = (
            _int_param(request, "after", 0),
            min(max(_int_param(request, "limit", 50), 1), 1000),
        )
        _, path = await self._run(request)
        idx = await self._index(path)
        await idx.catch_up()
        seqs, total = await asyncio.to_thread(idx.search, text, after, limit)
        return JSONResponse({"q": text, "seqs": seqs, "total": total})

    async def stream(self, request: Request) -> Response:
        """Server-sent events: every summary after `after` (or the Last-Event-ID header), in
        order, each with its seq as the event id, then live ones as the log grows."""
        _, path = await self._run(request)
        last_id = request.headers.get("last-event-id")
        after = int(last_id) if last_id and last_id.isdigit() else _int_param(request, "after", 0)
        if after < 0:
            raise ApiError(400, "bad_range", f"after must be >= 0, got {after}")
        idx = await self._index(path)
        return StreamingResponse(
            self._sse(idx, after),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _sse(self, idx: RunIndex, after: int) -> AsyncIterator[bytes]:
        idx.watchers += 1
        idx.start()
        try:
            yield b"retry: 1000\n\n"
            last = after
            while not self.closing.is_set():
                start = max(last + 1, idx.first or 1)
                entries = idx.slice(start, min(idx.head, start + SSE_BATCH - 1))
                if entries:
                    yield b"".join(
                        b"id: %d\ndata: %s\n\n" % (start + i, e) for i, e in enumerate(entries)
                    )
                    last = start + len(entries) - 1
                    continue
                idx.start()  # the follower stops when nobody watched for a moment
                await _first(idx.wait_after(last, KEEPALIVE), self.closing.wait())
                if idx.head <= last:
                    yield b": keep-alive\n\n"
        finally:
            idx.watchers -= 1

    async def artefact_labels(self, request: Request) -> Response:
        _, path = await self._run(request)
        return JSONResponse({"labels": await asyncio.to_thread(artefacts.labels, path)})

    async def artefact(self, request: Request) -> Response:
        _, path = await self._run(request)
        label = request.query_params.get("label", "")
        try:
            return JSONResponse(await asyncio.to_thread(artefacts.show, path, label))
        except FileNotFoundError:
            raise ApiError(
                404, "no_artefact", f"no artefact copy {label[:80]!r} in this run"
            ) from None

    async def config(self, request: Request) -> Response:
        _, path = await self._run(request)
        return JSONResponse(await asyncio.to_thread(runs.config, path))

    async def file(self, request: Request) -> Response:
        """A run's own text files: run.json, result.json, trajectories/*.traj, *.log."""
        _, path = await self._run(request)
        name = request.query_params.get("name", "")
        allowed = name in ("run.json", "result.json") or (
            valid_name(name)
            and (
                name.startswith("trajectories/")
                and name.endswith(".traj")
                or name.endswith(".log")
                and name.count("/") <= 1
            )
        )
        if not allowed:
            raise ApiError(400, "bad_request", f"{name[:80]!r} is not a file the viewer serves")
        try:
            data, truncated = await asyncio.to_thread(read_inside, path, name, MAX_FILE)
        except OSError:
            raise ApiError(404, "not_found", f"{name[:80]!r} is not in this run") from None
        media = (
            "application/json"
            if name.endswith((".json", ".traj")) and not truncated
            else "text/plain"
        )
        return Response(
            data,
            media_type=media + "; charset=utf-8",
            headers={"x-truncated": "1"} if truncated else None,
        )

    async def analysis(self, request: Request) -> Response:
        _, path = await self._run(request)
        return JSONResponse(await asyncio.to_thread(extras.analysis, path))

    async def image(self, request: Request) -> Response:
        _, path = await self._run(request)
        return await self._image(path, request.query_params.get("name", ""))

    async def _sweep_root(self) -> Path:
        if not await asyncio.to_thread(lambda: self.catalog.is_sweep):
            raise ApiError(404, "not_a_sweep", "the viewer's folder has no sweep.json")
        return self.catalog.root

    async def sweep(self, request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(extras.sweep, await self._sweep_root()))

    async def sweep_image(self, request: Request) -> Response:
        return await self._image(await self._sweep_root(), request.query_params.get("name", ""))

    async def unknown(self, request: Request) -> Response:
        raise ApiError(404, "not_found", f"no API route {request.url.path[:120]!r}")

    async def _image(self, folder: Path, name: str) -> Response:
        try:
            data, media = await asyncio.to_thread(extras.image, folder, name)
        except OSError:
            raise ApiError(404, "not_found", f"no image {name[:80]!r}") from None
        # an SVG opened on its own must not run scripts
        return Response(
            data,
            media_type=media,
            headers={
                "content-security-policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'"
            },
        )


async def _first(*aws: Any) -> None:
    """Wait for the first of `aws` to finish; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def _log_head(run_dir: Path) -> int:
    from mlgym.bus.broker import LOG_FILE
    from mlgym.bus.eventlog import LogReader

    path = run_dir / LOG_FILE
    if not path.exists():
        return 0
    reader = LogReader(path)
    try:
        return reader.head()
    finally:
        reader.close()


def _api(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)

    return wrapped


def create_app(catalog: Catalog, *, token: str | None = None, loopback: bool = True) -> ASGIApp:
    """The viewer for `catalog`; `token` (required when not on loopback) guards every request."""
    v = Viewer(catalog)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        v.closing.set()
        v.indexes.close()

    def run_route(prefix: str, handler: Any) -> Route:
        return Route(f"/api/{prefix}/{{run:path}}", _api(handler))

    routes = [
        Route("/", v.home),
        Route("/api/info", _api(v.info)),
        Route("/api/runs", _api(v.list_runs)),
        Route("/api/sweep", _api(v.sweep)),
        Route("/api/sweep-image", _api(v.sweep_image)),
        run_route("run", v.run),
        run_route("overview", v.overview),
        run_route("events", v.events),
        run_route("event", v.event),
        run_route("follow", v.follow),
        run_route("stream", v.stream),
        run_route("search", v.search),
        run_route("artefacts", v.artefact_labels),
        run_route("artefact", v.artefact),
        run_route("config", v.config),
        run_route("file", v.file),
        run_route("analysis", v.analysis),
        run_route("image", v.image),
        Route("/api/{rest:path}", _api(v.unknown)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.viewer = v
    return Guard(app, token, loopback)
