"""A disk of fixed size per session, so the agent's files cannot fill the host.

Everything an agent can write that outlives a command — its workspace and its background jobs'
logs — lives on one filesystem of `size_mb`: a sparse ext4 image (it takes host disk only as
it fills) loop-mounted `nosuid,nodev` at `<session>/disk`, with `workspace/` and `jobs/` in it.
A write past the size fails with ENOSPC inside the sandbox, and the session says so in the
observation. `/tmp` and `$HOME` in the sandbox are memory (bounded by the memory limit).

Loop mounts need root and loop devices. Where either is missing, the disk is a plain folder
and the quota is NOT enforced; `enforcement` says so and the server logs a warning once (the
audit reports it as a failure).

On close the filesystem is unmounted; the image is deleted (`keep=False`, the default for
servers that discard workspaces) or kept beside it as `disk.img` (mount it with
`mount -o loop,ro disk.img DIR` to look inside).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from mlgym import log

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

    async def release(self, keep: bool = False) -> None:
        """Unmount; delete the image unless `keep`. Idempotent."""
        if self.mounted:
            await self.unmount()
            self.mounted = False
        if not keep:
            with contextlib.suppress(FileNotFoundError):
                self.image.unlink()


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise DiskError(f"{' '.join(argv[:2])}: {err.decode(errors='replace').strip()[:300]}")
