"""Path confinement: the agent names paths as it sees them inside its sandbox
(/home/agent/workspace/...); the ACI works on the host folder behind that path and never
outside it.

Three checks: the lexical path (after `..` and the current directory are applied) must lie in
the workspace; its real path (symlinks resolved) must lie in the host folder; and every file is
opened from the workspace folder down without following any symlink, and only when it is a
regular file (tools/safefs.py: a link swapped in between the check and the open fails the open;
a FIFO or device is refused without blocking).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterable

import msgspec

from mlgym.tools import safefs

from .result import AciError

INSIDE_ROOT = "/home/agent/workspace"


class Resolved(msgspec.Struct, frozen=True):
    """A confined path: `inside` as the agent sees it, `host` the real file behind it."""

    inside: str
    host: str


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Workspace:
    def __init__(self, host_root: str | os.PathLike[str], inside_root: str = INSIDE_ROOT,
                 read_only: Iterable[str] = (), owner: safefs.Owner = None):
        """`read_only`: inside paths the editor must refuse. `owner`: (uid, gid) given to
        files and folders the tools create (a container user other than the server's)."""
        self.owner = owner
        self.host_root = os.path.realpath(os.fspath(host_root))
        if not os.path.isdir(self.host_root):
            raise ValueError(f"workspace folder {self.host_root} does not exist")
        inside_root = posixpath.normpath(inside_root)
        if not posixpath.isabs(inside_root):
            raise ValueError(f"inside root must be absolute, got {inside_root!r}")
        self.inside_root = inside_root
        # inside paths the sandbox shows read-only (the task's pristine files mounted over
        # their workspace copies): the host copies must never change, or the editor would show
        # what the shell and the evaluator do not see
        self.read_only = {posixpath.join(inside_root, posixpath.normpath(p))
                          if not posixpath.isabs(p) else posixpath.normpath(p) for p in read_only}

    def is_read_only(self, r: Resolved) -> bool:
        """A task's read-only file, or a file without write permission (MLGym's `-w` test)."""
        if r.inside in self.read_only:
            return True
        try:
            return os.stat(r.host).st_mode & 0o222 == 0
        except OSError:
            return False

    def to_inside(self, host_real: str) -> str:
        rel = os.path.relpath(host_real, self.host_root)
        return self.inside_root if rel == "." else posixpath.join(self.inside_root, rel)

    def resolve(self, path: str, cwd: str) -> Resolved:
        """Map an agent path (relative to the inside `cwd`) to its host file, or refuse."""
        if not path:
            raise AciError("Error: empty path.", "path")
        if "\x00" in path:
            raise AciError("Error: a path cannot contain a NUL character.", "path")
        home = posixpath.dirname(self.inside_root)
        if path == "~" or path.startswith("~/"):
            path = home + path[1:]
        inside = posixpath.normpath(posixpath.join(cwd, path))
        if inside.startswith("//"):
            inside = "/" + inside.lstrip("/")
        if not _within(inside, self.inside_root):
            how = " (`..` leads out of it)" if ".." in path.split("/") else ""
            raise AciError(
                f"Error: {path} resolves to {inside}, outside the workspace "
                f"{self.inside_root}{how}. The file tools work only inside the workspace; use "
                "shell commands for other files.",
                "path",
            )
        host = os.path.join(self.host_root, os.path.relpath(inside, self.inside_root))
        real = os.path.realpath(host)
        if not _within(real, self.host_root):
            raise AciError(
                f"Error: {path} is (or passes through) a symbolic link that points outside the "
                f"workspace {self.inside_root}; refused.",
                "path",
            )
        return Resolved(inside=self.to_inside(real), host=os.path.normpath(real))

    def open_fd(self, r: Resolved, flags: int, mode: int = 0o644, *,
                make_parents: bool = False) -> int:
        """Open a resolved path from the workspace folder down, one component at a time,
        never through a symlink (one swapped in after `resolve` fails the open) and never
        anything but a regular file (a FIFO cannot block the server, a device is refused)."""
        rel = os.path.relpath(r.host, self.host_root)
        try:
            return safefs.open_file(self.host_root, rel, flags, mode, make_parents=make_parents,
                                    owner=self.owner)
        except safefs.UnsafePath as e:
            raise AciError(f"Error: {r.inside} {_why(e.why)}; refused.", "path") from None
        except NotADirectoryError:
            raise AciError(f"Error: a folder on the way to {r.inside} is not a folder.",
                           "not_found") from None

    def read_bytes(self, r: Resolved, limit: int) -> bytes:
        """The file's content; files over `limit` bytes are refused (edits hold files in memory)."""
        fd = self._open_existing(r, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise AciError(
                    f"Error: {r.inside} is {size / 2**20:.1f} MiB, more than the editor's limit of "
                    f"{limit / 2**20:.0f} MiB; use shell tools (sed, head, python) for it.",
                    "too_large",
                )
            return f.read(limit + 1)

    def open_read(self, r: Resolved):
        """A binary file object for streaming reads (large files are never read whole)."""
        return os.fdopen(self._open_existing(r, os.O_RDONLY), "rb")

    def write_bytes(self, r: Resolved, data: bytes) -> None:
        """Rewrite an existing file in place (keeps its inode, owner and mode)."""
        fd = self._open_existing(r, os.O_WRONLY)
        with os.fdopen(fd, "wb") as f:
            f.truncate(0)
            f.write(data)

    def create_file(self, r: Resolved) -> None:
        """Make an empty file (and its missing parent folders); refuse one that exists."""
        try:
            os.close(self.open_fd(r, os.O_WRONLY | os.O_CREAT | os.O_EXCL, make_parents=True))
        except FileExistsError:
            raise AciError(f"Error: File '{r.inside}' already exists.", "exists") from None

    def _open_existing(self, r: Resolved, flags: int) -> int:
        try:
            return self.open_fd(r, flags)
        except FileNotFoundError:
            raise AciError(f"Error: File {r.inside} not found", "not_found") from None
        except IsADirectoryError:
            raise AciError(f"Error: {r.inside} is a directory, not a file.", "not_found") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise AciError(f"Error: {r.inside} is a symbolic link; refused.", "path") from None
            raise AciError(f"Error: cannot open {r.inside}: {e.strerror}", "io") from None


def _why(why: str) -> str:
    if why.startswith("`"):  # a folder on the way: "`d` is a symlink or not a folder"
        return "passes through " + why.replace("symlink", "symbolic link")
    if "symlink" in why:
        return "is a symbolic link"
    if "regular" in why:
        return "is not a regular file (a FIFO, socket or device)"
    return why
