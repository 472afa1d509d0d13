"""A disk of fixed size per session, so the agent's files cannot fill the host.

Everything an agent can write that outlives a command — its workspace and its background jobs'
logs — lives on one filesystem of `size_mb`: a sparse ext4 image (it takes host disk only as
it fills) loop-mounted `nosuid,nodev` at `<session>/disk`, with `workspace/` and `jobs/` in it.
A write past the size fails with ENOSPC inside the sandbox, and the session says so in the
observation. `/tmp` and `$HOME` in the sandbox are memory (bounded by the memory limit).

Loop mounts need root and loop devices. Where either is missing, the disk is a plain folder
and the quota is NOT enforced; `enforcement` says so and the server logs a warning once (the
audit reports it as a failure).

When a session ends for good its files are copied out as plain files (`export`: regular
files only, never through a link) to `<session>/workspace/` and `<session>/jobs/`, unless the
server discards workspaces, and the image is deleted: a run folder holds no 50 GB sparse file
that a copy without sparse support (tar, scp, rsync without -S) would write out in full. A
session suspended for a restarted server to adopt keeps its image (`disk.img`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from mlgym import log
from mlgym.files import data_extents

logger = log.get(__name__)

_warned = False


class DiskError(Exception):
    pass


def loop_mounts_possible() -> str:
    """'' when this process can make loop-mounted disks, else why not."""
    if os.geteuid() != 0:
        return "the server does not run as root"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is not installed"
    return ""


class SessionDisk:
    """The disk of one session (or one pooled sandbox): `workspace` and `jobs` live on it."""

    def __init__(self, root: Path, size_mb: int, owner: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.size_mb = int(size_mb)
        self.owner = owner  # the sandbox user, when it is not the server's
        self.mount = self.root / "disk"
        self.image = self.root / "disk.img"
        self.mounted = False
        self.enforcement = ""

    @property
    def workspace(self) -> Path:
        return self.mount / "workspace"

    @property
    def jobs(self) -> Path:
        return self.mount / "jobs"

    async def create(self) -> None:
        """Make (or, after a server restart, adopt) the disk and its two folders."""
        global _warned
        self.mount.mkdir(parents=True, exist_ok=True)
        os.chmod(self.mount, 0o755)
        why = loop_mounts_possible() if self.size_mb > 0 else "no quota was asked for"
        if not why:
            try:
                await self._mount()
            except DiskError as exc:
                why = str(exc)
        if why:
            self.enforcement = f"NOT ENFORCED ({why})"
            if not _warned and self.size_mb > 0:
                _warned = True
                logger.warning("disk_quota_unenforced", reason=why)
        else:
            self.enforcement = f"{self.size_mb} MB ext4 image, loop-mounted"
        for d in (self.workspace, self.jobs):
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
            if self.owner is not None and os.geteuid() == 0:
                os.chown(d, *self.owner, follow_symlinks=False)

    async def _mount(self) -> None:
        if os.path.ismount(self.mount):
            self.mounted = True  # a restarted server adopts the disk its predecessor made
            return
        if not self.image.exists():
            fd = os.open(self.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, self.size_mb * 2**20)
            finally:
                os.close(fd)
            await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                       "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(self.image))
        await _run("mount", "-o", "loop,nosuid,nodev", str(self.image), str(self.mount))
        self.mounted = True
        with contextlib.suppress(OSError):
            shutil.rmtree(self.mount / "lost+found")

    async def unmount(self) -> None:
        """Unmount the disk (lazily when something still holds it, e.g. a process not yet
        reaped); the image stays."""
        try:
            await _run("umount", str(self.mount))
        except DiskError:
            await asyncio.sleep(0.5)
            with contextlib.suppress(DiskError):
                await _run("umount", "-l", str(self.mount))

    def usage(self) -> tuple[int, int]:
        """(bytes used, bytes in all) of the disk; (0, 0) when it has no fixed size."""
        if not self.mounted:
            return 0, 0
        st = os.statvfs(self.mount)
        total = st.f_blocks * st.f_frsize
        return total - st.f_bavail * st.f_frsize, total

    def full(self, margin: float = 0.01) -> bool:
        used, total = self.usage()
        return total > 0 and total - used <= max(total * margin, 1 << 20)

    def export(self, dest_root: Path, max_bytes: int = 0) -> tuple[int, int]:
        """Copy `workspace/` and `jobs/` of the mounted disk to plain folders of the same names
        under `dest_root` (the server's, outside the disk). Only regular files are copied, each
        opened without following links (tools/safefs.py), so what the agent left (links to host
        files, FIFOs, devices) cannot make the server read anything but its own files; nothing
        runs in the sandbox any more. Returns (files copied, entries skipped). Blocking: call it
        in a thread."""
        from mlgym.tools import safefs

        copied = skipped = total = 0
        # holes stay holes (_copy_sparse): the host gets at most the blocks the disk held
        used, _ = self.usage()
        limit = max_bytes or used + (1 << 20)
        for part in ("workspace", "jobs"):
            try:
                src_root = safefs.open_dir(self.mount, part)
            except OSError:
                continue
            dest = Path(dest_root) / part
            dest.mkdir(mode=0o700, exist_ok=True)
            try:
                for rel, dirfd, name in safefs.walk_files(src_root):
                    try:
                        src = safefs.open_file(dirfd, name, os.O_RDONLY)
                    except OSError:
                        skipped += 1  # a link, FIFO, socket or device: left behind
                        continue
                    try:
                        st = os.fstat(src)
                        if total + st.st_blocks * 512 > limit:
                            skipped += 1
                            continue
                        out = safefs.open_file(dest, rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                               0o600, make_parents=True)
                        try:
                            _copy_sparse(src, out, st.st_size)
                        finally:
                            os.close(out)
                        total += st.st_blocks * 512
                        copied += 1
                    finally:
                        os.close(src)
            finally:
                os.close(src_root)
        return copied, skipped

    async def release(self, keep: bool = False) -> None:
        """Unmount; delete the image unless `keep`. Idempotent."""
        if self.mounted:
            await self.unmount()
            self.mounted = False
        if not keep:
            with contextlib.suppress(FileNotFoundError):
                self.image.unlink()


def unmount_leftovers(base: str | Path) -> list[str]:
    """Lazily unmount every session disk mounted below `base` (deepest first) that a server
    killed on purpose left behind (tests, benches), so the folder can be removed. Blocking."""
    prefix = str(base).rstrip("/") + "/"
    try:
        with open("/proc/self/mounts") as mounts:
            found = [line.split()[1] for line in mounts]
    except OSError:
        return []
    done = []
    for mount in sorted(found, reverse=True):
        if mount.startswith(prefix) and mount.endswith("/disk"):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
            done.append(mount)
    return done


def _copy_sparse(src: int, out: int, size: int) -> None:
    """Copy a file's data extents only: a sparse file stays sparse."""
    os.ftruncate(out, size)
    for start, length in data_extents(src, size):
        pos, end = start, start + length
        while pos < end:  # copy_file_range refuses some pairs of filesystems (EXDEV)
            chunk = os.pread(src, min(end - pos, 1 << 20), pos)
            if not chunk:
                break
            os.pwrite(out, chunk, pos)
            pos += len(chunk)


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise DiskError(f"{' '.join(argv[:2])}: {err.decode(errors='replace').strip()[:300]}")
