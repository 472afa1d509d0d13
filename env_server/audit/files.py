"""Attacks on the paths the server touches that the agent can write: its state and job
folders, the workspace, the submission artefact (issue #16 findings 1, 2, 4, 5, 6, 10, 15)."""

from __future__ import annotations

import asyncio
import shlex

from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.env_server.audit.harness import Harness, timed
from mlgym.env_server.audit.registry import attack

JOBS = "/home/agent/.mlgym/jobs"


def _q(path: object) -> str:
    return shlex.quote(str(path))


def _unchanged(h: Harness, before: dict) -> tuple[bool, str]:
    after = h.host_state()
    if after == before:
        return True, "host canaries unchanged"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return False, f"host canaries CHANGED: {', '.join(changed)}"


@attack("state_folder_links", "1",
        "the state folder is read-only inside: no link put there redirects the server's writes")
async def state_folder_links(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        before = h.host_state()
        link = await s.act(f"rm -rf ~/.mlgym/out; ln -sfn {_q(h.host / 'dropbox')} ~/.mlgym/out"
                           f" && echo LINKED; ln -sf {_q(h.host / 'canary.txt')} ~/.mlgym/x"
                           " && echo LINKED2")
        big = await s.act("yes 'audit: a line of output' | head -c 400000")  # a full-output log
        ok, what = _unchanged(h, before)
        linked = "LINKED" in link.output
        return (ok and not linked and "full output" in big.output,
                f"links in the state folder {'MADE' if linked else 'refused'}; {what}")
    finally:
        await s.close()


@attack("job_files_prelinked", "2",
        "links planted where the next jobs' files go are removed, never followed or truncated")
async def job_files_prelinked(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        canary = _q(h.host / "canary.txt")
        plant = "; ".join(f"ln -sf {canary} {JOBS}/j{i}.{x}" for i in (1, 2, 3)
                          for x in ("log", "rc", "pid", "rc.tmp"))
        await s.act(plant)
        before = h.host_state()
        for i in range(2):
            await s.act(f"echo audit-job-{i}", background=True)
        await asyncio.sleep(2.0)
        ok, what = _unchanged(h, before)
        ran = (await s.act(f"cat {JOBS}/j1.log {JOBS}/j2.log")).output
        works = "audit-job-0" in ran and "audit-job-1" in ran
        return ok and works, f"{what}; jobs {'ran and logged' if works else 'DID NOT RUN'}"
    finally:
        await s.close()


@attack("job_log_swapped_for_secret", "2",
        "a job that swaps its log or exit-code file for a link to a secret gets nothing read")
async def job_log_swapped_for_secret(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        targets = [h.host / "secret.txt", *h.task_secrets]
        swaps = []
        for n, target in enumerate(targets[:4], start=1):
            swaps.append(f"sleep 1; for x in log rc; do ln -sf {_q(target)} {JOBS}/j{n}.$x.new "
                         f"&& mv -f {JOBS}/j{n}.$x.new {JOBS}/j{n}.$x; done; sleep 3; echo swapped")
        for cmd in swaps:
            await s.act(cmd, background=True)
        await asyncio.sleep(6.0)  # the server tails job logs every 0.5 s
        await s.act(f"ls -la {JOBS}")
        await h.settle()
        leaks = h.leaks()
        return not leaks, (f"{len(swaps)} jobs swapped their files for links to secrets; "
                           + (f"LEAKED: {', '.join(leaks)}" if leaks else "nothing leaked"))
    finally:
        await s.close()


@attack("endless_and_odd_files", "5",
        "links to /dev/zero, FIFOs and huge sparse files are refused or read boundedly, fast")
async def endless_and_odd_files(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        rss0 = h.rss_mb()
        await s.act("ln -s /dev/zero zero; truncate -s 7G sparse.bin; mkfifo fifo")
        await s.act(f"sleep 0.5; for x in log rc; do ln -sf /dev/zero {JOBS}/j1.$x.n && "
                    f"mv -f {JOBS}/j1.$x.n {JOBS}/j1.$x; done; sleep 5", background=True)
        await s.act(f"sleep 0.5; mkfifo {JOBS}/j2.rc.n && mv -f {JOBS}/j2.rc.n {JOBS}/j2.rc; "
                    "sleep 5", background=True)
        slow, notes = [], []
        for body in (p.ReadFile(session="", path="zero", max_bytes=10**12),
                     p.ReadFile(session="", path="sparse.bin", max_bytes=10**12),
                     p.ReadFile(session="", path="fifo"),
                     p.Act(session="", command="open zero"),
                     p.Act(session="", command="open sparse.bin"),
                     p.Act(session="", command="search_file x sparse.bin")):
            reply, secs, exc = await timed(s.request(body, timeout=60), 30)
            what = type(body).__name__ + " " + (getattr(body, "path", "") or body.command)
            if secs > 20 or isinstance(exc, TimeoutError):
                slow.append(f"{what} ({secs:.0f} s)")
            if isinstance(reply, p.FileContent):
                notes.append(f"{what}: {len(reply.data)} bytes of {reply.size}")
                if len(reply.data) > 64 * 2**20:
                    slow.append(f"{what} returned {len(reply.data)} bytes")
        await asyncio.sleep(3.0)  # the job files have been swapped and tailed meanwhile
        grew = h.rss_mb() - rss0
        ok = not slow and grew < 400
        return ok, (f"server memory +{grew:.0f} MB; "
                    + (f"SLOW or UNBOUNDED: {'; '.join(slow)}" if slow else "every request answered")
                    + (f"; {'; '.join(notes)}" if notes else ""))
    finally:
        await s.close()


@attack("fifo_blocks_no_one", "6",
        "FIFOs and sockets in the workspace are refused at once; other sessions are not held up")
async def fifo_blocks_no_one(h: Harness) -> tuple[bool, str]:
    a, b = await h.open(), await h.open()
    try:
        await a.act("mkfifo f; python3 -c \"import socket; socket.socket(socket.AF_UNIX)"
                    ".bind('sock')\"; ls -la")
        calls = [a.request(p.Act(session="", command=cmd), timeout=120) for cmd in
                 ("open f", "open sock", "search_file x f", "search_dir x", "find_file f",
                  "create f")]
        calls += [a.request(p.ReadFile(session="", path="f")),
                  a.request(p.WriteFile(session="", path="f", data=b"x")),
                  a.request(p.ReadFile(session="", path="sock"))]
        t0 = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(timed(c, 30) for c in calls))
        other, other_s, other_exc = await timed(b.act("open strategy.py"), 30)
        total = asyncio.get_running_loop().time() - t0
        stuck = [i for i, (_, secs, exc) in enumerate(results)
                 if secs > 15 or isinstance(exc, TimeoutError)]
        ok = not stuck and other_exc is None and other_s < 15
        return ok, (f"{len(calls)} requests on a FIFO/socket answered in {total:.1f} s; "
                    f"{'STUCK: ' + str(stuck) if stuck else 'none stuck'}; another session's "
                    f"open took {other_s:.1f} s")
    finally:
        await a.close()
        await b.close()


@attack("chown_and_write_race", "4",
        "a folder swapped for a link to the host while the file tools write never leads there")
async def chown_and_write_race(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        before = h.host_state()
        dropbox = _q(h.host / "dropbox")
        await s.act(f"while :; do rm -rf d; mkdir d; rm -rf d; ln -s {dropbox} d; done",
                    background=True)
        refused = done = 0
        for i in range(40):
            for body in (p.Act(session="", command=f"create d/x{i}.py"),
                         p.WriteFile(session="", path=f"d/y{i}.txt", data=b"pwned\n")):
                try:
                    reply = await s.request(body)
                    done += 1
                    if isinstance(reply, p.Observation) and reply.exit_code:
                        refused += 1
                except RpcError:
                    refused += 1
        ok, what = _unchanged(h, before)
        return ok, f"{2 * 40} writes raced a swapping link ({refused} refused); {what}"
    finally:
        await s.close()


@attack("submission_swapped_for_secret", "2",
        "a submission swapped for a link to a secret is never what gets evaluated")
async def submission_swapped_for_secret(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        sub = h.submission
        targets = [h.host / "secret.txt", *h.task_secrets[:1]]
        loop = "cp {0} .good; while :; do {1}cp .good .g && mv -Tf .g {0}; done".format(
            sub, "".join(f"ln -sf {_q(t)} .l && mv -Tf .l {sub}; " for t in targets))
        await s.act(loop, background=True)
        evaluated, refused = 0, 0
        for _ in range(5):
            obs = await s.act("validate", timeout=300)
            if obs.scores:
                evaluated += 1
                kept = await s.request(p.ReadArtefact(session="", step=obs.step))
                h.seen.append(kept.data.decode("utf-8", "replace"))
            else:
                refused += 1
        leaks = h.leaks()
        return not leaks, (f"5 validations raced a swapping link ({evaluated} scored, {refused} "
                           f"refused); " + (f"EVALUATED A SECRET: {', '.join(leaks)}" if leaks
                                            else "no secret was evaluated"))
    finally:
        await s.close()


@attack("paths_out_of_the_workspace", "paths",
        "file tools refuse every path out of the workspace: absolute, `..`, links")
async def paths_out_of_the_workspace(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        before = h.host_state()
        secret = h.host / "secret.txt"
        await s.act(f"ln -s / root; ln -s {_q(secret)} s.txt; ln -s {_q(h.host)} hostdir")
        tries = [p.Act(session="", command=c) for c in (
            f"open {secret}", "open ../../../../etc/shadow", "open root/etc/shadow",
            "open s.txt", "open hostdir/secret.txt", "search_dir AUDIT hostdir",
            "find_file secret.txt hostdir", "create hostdir/new.txt",
            "create ../../escape.txt")]
        tries += [p.ReadFile(session="", path=str(secret)), p.ReadFile(session="", path="s.txt"),
                  p.ReadFile(session="", path="../state/x"),
                  p.WriteFile(session="", path="hostdir/w.txt", data=b"x"),
                  p.WriteFile(session="", path="../../w.txt", data=b"x")]
        allowed = []
        for body in tries:
            try:
                reply = await s.request(body)
            except RpcError:
                continue
            if isinstance(reply, (p.FileContent, p.FileWritten)) or (
                    isinstance(reply, p.Observation) and reply.exit_code == 0):
                allowed.append(getattr(body, "command", "") or f"{type(body).__name__} "
                               f"{body.path}")
        ok, what = _unchanged(h, before)
        leaks = h.leaks()
        passed = ok and not leaks and not allowed
        return passed, (f"{len(tries)} tries; " + (f"ALLOWED: {allowed}; " if allowed else "")
                        + what + (f"; LEAKED: {leaks}" if leaks else ""))
    finally:
        await s.close()


@attack("server_log_bounded", "10",
        "whatever a command prints, the server keeps at most 16 MiB of it on disk")
async def server_log_bounded(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        obs = await s.act("yes 'audit: many lines of output, all kept?' | head -c 300000000",
                          timeout=300)
        state = h.root / "sessions" / s.id / "state" / "out"
        sizes = [f.stat().st_size for f in state.iterdir()] if state.is_dir() else []
        biggest = max(sizes, default=0)
        ok = biggest <= 16 * 2**20 + 4096 and "cut" in obs.output
        return ok, f"300 MB printed; largest log the server kept: {biggest / 2**20:.1f} MiB"
    finally:
        await s.close()


@attack("read_only_files_one_truth", "15",
        "the editor refuses read-only task files; editor, shell and evaluator see one content")
async def read_only_files_one_truth(h: Harness) -> tuple[bool, str]:
    s = await h.open()
    try:
        pristine = (await s.act("cat evaluate.py")).output
        first = pristine.splitlines()[0] if pristine.strip() else ""
        await s.act("open evaluate.py")
        # a valid edit (line 1 kept, a comment added): only the file's being read-only stops it
        edit = await s.act(f"edit 1:1\n{first}\n# audit: changed by the editor\nend_of_edit")
        try:
            write = await s.request(p.WriteFile(session="", path="evaluate.py", data=b"# x\n"))
            wrote = isinstance(write, p.FileWritten)
        except RpcError:
            wrote = False
        shell = (await s.act("cat evaluate.py")).output
        viewer = (await s.act("open evaluate.py")).output
        edited = "audit: changed by the editor" in viewer or edit.exit_code == 0
        one_truth = shell == pristine and "audit: changed" not in viewer
        ok = not edited and not wrote and one_truth
        return ok, (f"editor {'EDITED' if edit.exit_code == 0 else 'refused'}; WriteFile "
                    f"{'WROTE' if wrote else 'refused'}; shell and viewer "
                    f"{'agree' if one_truth else 'DISAGREE'}")
    finally:
        await s.close()
