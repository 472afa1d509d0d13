"""Attacks on the host's resources: disk, memory, processes, and the limits a client may ask
for (issue #16 findings 10, 11, 13, 14)."""

from __future__ import annotations

import asyncio
import os

from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.env_server.audit.harness import Harness, timed
from mlgym.env_server.audit.registry import attack
from mlgym.env_server.disk import loop_mounts_possible

QUOTA_MB = 256


def _free_mb(h: Harness) -> float:
    st = os.statvfs(h.root)
    return st.f_bavail * st.f_frsize / 2**20


def _processes_left(obs: p.Observation | None) -> int:
    """The count `ps -e --no-headers | wc -l` ended an observation with; -1 when it did not
    (the command failed, or something was printed after it)."""
    words = obs.output.split() if obs is not None else []
    return int(words[-1]) if words and words[-1].isdigit() else -1


@attack("disk_quota", "10",
        "a session's files (workspace and job logs) cannot take more host disk than its quota")
async def disk_quota(h: Harness) -> tuple[bool, str]:
    why = loop_mounts_possible()
    if why:
        return False, f"quotas are NOT ENFORCED on this server: {why}"
    s = await h.open(disk_mb=QUOTA_MB)
    try:
        free0 = _free_mb(h)
        await s.act("yes audit-log-flood", background=True)  # a job's log fills the disk too
        await asyncio.sleep(2)
        obs = await s.act("fallocate -l 1G big1; fallocate -l 1G big2; "
                          "dd if=/dev/zero of=big3 bs=1M count=1024 status=none; echo done",
                          timeout=300)
        await asyncio.sleep(2)
        used = free0 - _free_mb(h)
        noted = "No space left" in obs.output
        ok = used <= QUOTA_MB + 64 and noted
        return ok, (f"3 GB asked for on a {QUOTA_MB} MB disk, plus a job flooding its log: host "
                    f"disk used {used:.0f} MB; {'the agent was told' if noted else 'NO NOTE'}")
    finally:
        await s.close()


@attack("limits_are_requests", "11",
        "limits above the server's maxima (or network on a server without it) are refused")
async def limits_are_requests(h: Harness) -> tuple[bool, str]:
    asks = [dict(network=True), dict(memory_mb=10**7), dict(max_processes=10**6),
            dict(disk_mb=10**9), dict(command_timeout_s=10**9), dict(memory_mb=-1)]
    granted = []
    for ask in asks:
        try:
            s = await h.open(**ask)
        except RpcError as exc:
            if exc.code != "limit_refused":
                granted.append(f"{ask}: {exc.code}")
            continue
        granted.append(f"{ask}: GRANTED")
        await s.close()
    return not granted, (f"{len(asks)} requests over the maxima: "
                         + ("; ".join(granted) if granted else "all refused with limit_refused"))


@attack("fork_bomb", "13",
        "a fork bomb is contained: the next commands work at once, without `fork: retry`")
async def fork_bomb(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        bomb = await s.act(":(){ :|:& };:", timeout=30)
        after, secs, exc = await timed(s.act("echo alive", timeout=120), 150)
        again = await s.act("echo again; ps -e --no-headers | wc -l", timeout=60)
        alive = after is not None and "alive" in after.output
        noted = any("processes (a fork bomb" in o.output for o in (bomb, again) if o) or (
            after is not None and "processes (a fork bomb" in after.output)
        left = _processes_left(again)
        ok = alive and "fork: retry" not in again.output and 0 <= left < 20
        return ok, (f"next command {'answered' if alive else 'FAILED'} in {secs:.1f} s; "
                    f"{left} processes left; "
                    + ("the bomb was purged, with a note" if noted else
                       "the bomb died out or was reaped as the command's leftovers"))
    finally:
        await s.close()


@attack("fork_bomb_kills_the_shell", "13",
        "a fork bomb that outlives the shell (whose own purge dies with it) is purged before "
        "the next shell starts, with a note")
async def fork_bomb_kills_the_shell(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        lost = await s.act("(b(){ b|b& }; b) >/dev/null 2>&1 & sleep 3; kill -9 $$", timeout=60)
        after, secs, exc = await timed(s.act("echo alive; ps -e --no-headers | wc -l",
                                             timeout=120), 150)
        alive = after is not None and after.output.split()[:1] == ["alive"]
        left = _processes_left(after)
        # docker purges the bomb from the host and says so; the local backend starts a fresh
        # sandbox (a new pid namespace: nothing of the old one survives) and says that
        noted = "a fork bomb" in lost.output or "background jobs of the old one are gone" \
            in lost.output
        ok = alive and noted and "fork: retry" not in (after.output if after else "") \
            and 0 <= left < 20
        return ok, (f"next command {'answered' if alive else 'FAILED'} in {secs:.1f} s, "
                    f"{'with a note' if noted else 'WITHOUT A NOTE'}; {left} processes left")
    finally:
        await s.close()


@attack("process_flood", "13",
        "a job that spawns processes until the limit is purged, with a note; the shell works")
async def process_flood(h: Harness) -> tuple[bool, str]:
    s = await h.open(max_processes=200)
    try:
        await s.act("while :; do sleep 1000 & done", background=True)
        second = await s.act("nohup bash -c 'while :; do sleep 1000 & done' >/dev/null 2>&1 &")
        await asyncio.sleep(4)
        after, secs, exc = await timed(s.act("echo alive", timeout=120), 150)
        again = await s.act("echo again; ps -e --no-headers | wc -l", timeout=60)
        alive = after is not None and "alive" in after.output
        noted = any(o is not None and "processes (a fork bomb" in o.output
                    for o in (second, after))
        left = _processes_left(again)
        ok = alive and noted and "fork: retry" not in again.output and 0 <= left < 20
        return ok, (f"next command {'answered' if alive else 'FAILED'} in {secs:.1f} s, "
                    f"{'with a note' if noted else 'WITHOUT A NOTE'}; {left} processes left")
    finally:
        await s.close()


@attack("foreground_leftovers", "13",
        "processes a command leaves in the foreground are gone when it ends; its jobs stay")
async def foreground_leftovers(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        await s.act("(sleep 1001 &); (sleep 1002 &) ; sleep 1003 & echo started")
        ps = (await s.act("ps -eo args")).output
        ok = "sleep 1001" not in ps and "sleep 1002" not in ps and "sleep 1003" in ps
        return ok, ("leftovers killed, the job kept" if ok else f"processes: {ps[-300:]}")
    finally:
        await s.close()


@attack("memory_and_tmp_notes", "14",
        "an OOM kill and a full /tmp are told to the agent")
async def memory_and_tmp_notes(h: Harness) -> tuple[bool, str]:
    s = await h.open(memory_mb=256)
    try:
        oom = await s.act("python3 -c 'x = bytearray(1200 * 2**20); print(len(x))'",
                          timeout=120)
    finally:
        await s.close()
    s = await h.open()  # /tmp (1 GB) fills before the task's memory limit is reached
    try:
        tmp = await s.act("head -c 3000000000 /dev/zero > /tmp/fill; echo rc=$?", timeout=120)
        await s.act("rm -f /tmp/fill")
        oom_told = "memory limit" in oom.output
        tmp_told = "No space left" in tmp.output and "/tmp" in tmp.output.split("No space")[-1]
        return oom_told and tmp_told, (f"OOM kill {'told' if oom_told else 'NOT TOLD'}; "
                                       f"full /tmp {'told' if tmp_told else 'NOT TOLD'}")
    finally:
        await s.close()


@attack("hung_command_contained", "13",
        "a command that ignores signals is stopped at its timeout; the session goes on")
async def hung_command_contained(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        obs, secs, exc = await timed(
            s.request(p.Act(session="", command="trap '' INT TERM HUP; while :; do :; done",
                            timeout_s=3), timeout=120), 60)
        after = await s.act("echo fine")
        ok = exc is None and secs < 30 and after.output.strip() == "fine"
        return ok, f"stopped after {secs:.1f} s; next command {'fine' if ok else after.output!r}"
    finally:
        await s.close()
