"""A real Ray cluster of several nodes on this machine: `ray start --head` and `ray start
--address` processes, each node in its own process group so one can be killed outright like a
lost machine. For the tests, `mlgym bench sweep`, and trying the Ray executor without a cluster:

    with LocalCluster(head_cpus=1, worker_cpus=[1]) as c:
        ...  mlgym sweep run FILE --ray c.address ...
        c.kill_node(1)   # the worker node, SIGKILL to every process of it
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class ClusterError(RuntimeError):
    pass


def ray_cli() -> str:
    """The `ray` command beside this interpreter (the mlgym-bus[ray] extra installs it)."""
    path = Path(sys.executable).parent / "ray"
    if not path.exists():
        raise ClusterError(f"no `ray` command beside {sys.executable}: pip install 'mlgym-bus[ray]'")
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, head_cpus: float = 1, worker_cpus: list[float] | None = None, object_store_mb: int = 100,
                 env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.head_cpus = head_cpus
        self.worker_cpus = list(worker_cpus if worker_cpus is not None else [1])
        self.object_store_mb = object_store_mb
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.tmp = tempfile.mkdtemp(prefix="mlgym-ray-", dir="/tmp")  # short: Ray's socket paths
        self.log_dir = Path(log_dir or self.tmp)
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = _free_port()
        self.client_address = f"ray://127.0.0.1:{self.client_port}"  # Ray Client, from outside
        self.nodes: list[subprocess.Popen] = []

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_node(self, args: list[str], name: str, cpus: float) -> subprocess.Popen:
        argv = [ray_cli(), "start", "--block", f"--num-cpus={cpus:g}", "--disable-usage-stats",
                f"--object-store-memory={self.object_store_mb * 2**20}", "--node-ip-address=127.0.0.1", *args]
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, start_new_session=True)
        log.close()
        self.nodes.append(proc)
        return proc

    def start(self, timeout: float = 180.0) -> None:
        self._start_node(["--head", f"--port={self.port}", "--include-dashboard=false",
                          f"--ray-client-server-port={self.client_port}", f"--temp-dir={self.tmp}"],
                         "head", self.head_cpus)
        self.wait_nodes(1, timeout)
        for i, cpus in enumerate(self.worker_cpus, 1):
            self._start_node([f"--address={self.address}"], f"worker{i}", cpus)
        self.wait_nodes(1 + len(self.worker_cpus), timeout)

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as alive (`ray status`); 0 when it does not answer."""
        try:
            out = subprocess.run([ray_cli(), "status", f"--address={self.address}"], capture_output=True,
                                 text=True, timeout=60, env=self.env).stdout
        except subprocess.TimeoutExpired:
            return 0
        active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
        return len(re.findall(r"^\s*\d+\s+node_", active, re.M))

    def wait_nodes(self, n: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != n:
            dead = [p.args[-1] for p in self.nodes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in self.log_dir.glob("*.log"))
                raise ClusterError(f"the Ray cluster did not reach {n} node(s) (exited: {dead}):\n{logs}")
            time.sleep(1.0)

    def kill_node(self, i: int) -> None:
        """SIGKILL every process of node i (0 is the head): a machine lost, not a clean stop."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.nodes[i].pid, signal.SIGKILL)
        self.nodes[i].wait(30)

    def stop(self) -> None:
        for i in reversed(range(len(self.nodes))):
            p = self.nodes[i]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # whatever of the node is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
