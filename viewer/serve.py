"""Serving the viewer: a socket on a free (or given) port, the URL to open, uvicorn.

Bound to 127.0.0.1 unless asked otherwise. Anywhere but loopback a token is required (made up
here when not given) and is part of the printed URL; the page keeps it in a cookie."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import uvicorn

from mlgym.viewer.app import create_app
from mlgym.viewer.catalog import Catalog


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class Served:
    url: str
    host: str
    port: int
    token: str | None
    sock: socket.socket
    app: Any


def prepare(
    path: str, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> Served:
    """Open the catalog and the socket, and make the app; `serve` runs it."""
    catalog = Catalog.open(path)
    loopback = is_loopback(host)
    if not loopback and not token:
        token = secrets.token_urlsafe(24)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    url = f"http://{shown}:{port}/"
    if token:
        url += f"?token={quote(token)}"
    found = catalog.scan()
    if catalog.single and found:
        url += f"#/run/{quote(next(iter(found)))}"
    return Served(url, host, port, token, sock, create_app(catalog, token=token, loopback=loopback))


def serve(served: Served) -> None:
    """Run until interrupted (SIGINT/SIGTERM); open streams get a second to end."""
    config = uvicorn.Config(
        served.app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
        ws="none",
    )
    uvicorn.Server(config).run(sockets=[served.sock])
