"""Attacks on what the sandbox can see and reach, and on the score itself (issue #16
finding 3, network from finding 11, forged scores, the held-out final seed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import socket

from mlgym.env_server.audit.harness import Harness
from mlgym.env_server.audit.registry import attack


@attack("server_environment_hidden", "3",
        "no process in the sandbox sees the server's environment (API keys)")
async def server_environment_hidden(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        await s.act("cat /proc/1/environ; for f in /proc/[0-9]*/environ; do cat $f; echo; done;"
                    " env; tr '\\0' ' ' < /proc/1/cmdline; ps eww -A 2>/dev/null | head -50")
        leaks = h.leaks()
        return not leaks, ("LEAKED: " + ", ".join(leaks)) if leaks else \
            "the server's environment is nowhere in the sandbox"
    finally:
        await s.close()


@attack("host_files_invisible", "3",
        "the host's files (task secrets, other folders) do not exist inside the sandbox")
async def host_files_invisible(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        paths = " ".join(shlex.quote(str(x)) for x in [h.host / "secret.txt", *h.task_secrets])
        obs = await s.act(f"cat {paths}; ls -la {shlex.quote(str(h.root))} /root /home 2>&1",
                          timeout=120)
        leaks = h.leaks()
        return not leaks, ("LEAKED: " + ", ".join(leaks)) if leaks else \
            f"no secret readable ({obs.output.count('No such file')} paths do not exist inside)"
    finally:
        await s.close()


@attack("network_unreachable", "11",
        "a sandbox without network reaches no host port (loopback, the host's address, docker0)")
async def network_unreachable(h: Harness) -> tuple[bool, str]:
    hits: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(accept, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    addresses = ["127.0.0.1", "172.17.0.1", *_host_addresses()]
    s = await h.open()
    try:
        tries = "; ".join(
            f"timeout 5 bash -c 'echo x > /dev/tcp/{a}/{port}' 2>/dev/null && echo REACHED-{a}"
            for a in addresses)
        obs = await s.act(tries + f"; python3 -c \"import socket; socket.create_connection("
                          f"('127.0.0.1', {port}), 3)\" 2>/dev/null && echo REACHED-py",
                          timeout=120)
        await asyncio.sleep(0.5)
        reached = hits or "REACHED" in obs.output
        return not reached, (f"REACHED the host ({hits or obs.output.strip()})" if reached else
                             f"{len(addresses)} host addresses tried on port {port}: none "
                             "reached")
    finally:
        server.close()
        await s.close()


def _host_addresses() -> list[str]:
    """This machine's own address on its default route, if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        return [u.getsockname()[0]]
    return []


FORGER = '''
import os, json, glob
def _forge():
    text = json.dumps({"scores": {"Score": 999.0}})
    for path in ("/eval/out/scores.json", "/out/scores.json"):
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError:
            pass
    for path in glob.glob("/eval/secret/*") + glob.glob("/eval/tasks/*/*"):
        try:
            print("READ", path, open(path).read()[:200])
        except OSError:
            pass
_forge()
if os.fork() == 0:  # a daemon that writes the scores again after the evaluator did
    import time
    for _ in range(100):
        time.sleep(0.1)
        _forge()
    os._exit(0)
'''


@attack("score_cannot_be_forged", "scores",
        "code in the submission cannot write the scores, read the secret or outlive the run")
async def score_cannot_be_forged(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        await s.act(f"cat >> {h.submission} <<'EOF'\n{FORGER}\nEOF")
        obs = await s.act("validate", timeout=300)
        await asyncio.sleep(3)
        again = await s.act("validate", timeout=300)
        scores = [v for o in (obs, again) for v in o.scores.values()]
        forged = any(abs(v) >= 100 for v in scores)
        leaks = h.leaks()
        ok = not forged and not leaks
        return ok, (f"scores {scores or 'none (refused: ' + obs.output[-120:] + ')'}"
                    + ("; FORGED" if forged else "") + (f"; LEAKED {leaks}" if leaks else ""))
    finally:
        await s.close()


@attack("final_seed_held_out", "seed",
        "the final submission is scored with a seed other than validate's public one")
async def final_seed_held_out(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        await s.act("validate", timeout=300)
        await s.act("submit", timeout=300)
        await h.settle(2.0)
        seeds = {}
        for raw in h.bus_seen:
            env = json.loads(raw)
            body = env.get("body", {})
            if body.get("kind") == "score_event" and body.get("session") == s.id:
                seeds[body.get("action")] = body.get("seed", 0)
        ok = seeds.get("validate") == h.eval_seed and seeds.get("submit") not in (
            None, h.eval_seed)
        return ok, f"validate seed {seeds.get('validate')}, submit seed {seeds.get('submit')}"
    finally:
        await s.close()
