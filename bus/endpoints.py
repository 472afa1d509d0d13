"""One URL names a whole broker: its three sockets (pub-in XSUB, sub-out XPUB, rpc ROUTER).

- `ipc:///path/run/bus` -> ipc:///path/run/bus.pub, .sub, .rpc
- `tcp://HOST:PORT`     -> ports PORT (pub-in), PORT+1 (sub-out), PORT+2 (rpc)

A running broker also writes `<run_dir>/bus.json` with its URL, endpoints and epoch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlgym.files import atomic_write

DESCRIPTOR = "bus.json"
IPC_PATH_MAX = 100  # ZeroMQ ipc paths are capped near 107 bytes (sun_path)
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = ("0.0.0.0", "*", "::", "[::]", "")


@dataclass(frozen=True)
class BusEndpoints:
    url: str
    pub: str  # publishers connect here (broker XSUB)
    sub: str  # subscribers connect here (broker XPUB)
    rpc: str  # RPC service "bus" (broker ROUTER)

    @property
    def is_tcp(self) -> bool:
        return self.url.startswith("tcp://")

    def as_dict(self) -> dict[str, str]:
        return {"pub": self.pub, "sub": self.sub, "rpc": self.rpc}


def from_url(url: str) -> BusEndpoints:
    """Split a bus URL into its three endpoints; raises ValueError for anything else."""
    if url.startswith("ipc://"):
        base = url[len("ipc://"):]
        if not base:
            raise ValueError(f"bus URL {url!r} has no path")
        return BusEndpoints(url, f"ipc://{base}.pub", f"ipc://{base}.sub", f"ipc://{base}.rpc")
    if url.startswith("tcp://"):
        parts = urlsplit(url)
        if parts.port is None or not parts.hostname:
            raise ValueError(f"bus URL {url!r} needs tcp://HOST:PORT")
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        port = parts.port
        if port + 2 > 65535:
            raise ValueError(f"bus URL {url!r}: port {port} leaves no room for PORT+1 and PORT+2")
        return BusEndpoints(
            f"tcp://{host}:{port}",
            f"tcp://{host}:{port}",
            f"tcp://{host}:{port + 1}",
            f"tcp://{host}:{port + 2}",
        )
    raise ValueError(f"not a ZeroMQ bus URL (ipc:// or tcp://): {url!r}")


def ipc_url(run_dir: str | Path) -> str:
    """The default broker URL of a run: ipc sockets inside the run directory, or under /tmp
    with a digest of the run directory when its path is too long for a socket name."""
    run_dir = Path(run_dir).resolve()
    base = run_dir / "bus"
    if len(str(base)) + len(".pub") > IPC_PATH_MAX:
        digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:16]
        base = Path("/tmp") / f"mlgym-bus-{digest}"
    return f"ipc://{base}"


def check_bind_host(host: str, bind_all: bool) -> str:
    """The host to bind to: loopback unless asked; all interfaces only with bind_all."""
    if bind_all:
        return "0.0.0.0"
    if host in ALL_INTERFACES:
        raise ValueError(
            f"refusing to bind all interfaces ({host!r}) without --bind-all; use 127.0.0.1 or a "
            "specific address"
        )
    return host


def write_descriptor(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """Atomically (re)write <run_dir>/bus.json."""
    return atomic_write(Path(run_dir) / DESCRIPTOR, json.dumps(info, indent=2, sort_keys=True))


def read_descriptor(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / DESCRIPTOR).read_text())


def url_of_run(run_dir: str | Path) -> str:
    """The URL of the broker serving a run directory (from its bus.json)."""
    return str(read_descriptor(run_dir)["url"])
