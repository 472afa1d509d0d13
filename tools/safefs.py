"""File access below a folder that hostile code can write to, without ever leaving it.

Agent code shares the folders the server reads and writes (workspaces, job logs), and may
swap any file or folder in them for a symlink, a FIFO or a hard-to-read file at any moment,
racing the server. Every open here walks from a directory descriptor one component at a time
with O_NOFOLLOW (a symlink anywhere on the way, even one swapped in mid-walk, fails the open
instead of being followed), opens with O_NONBLOCK (a FIFO cannot block the server), and checks
the file type on the descriptor itself before any byte is read or written. Reads are bounded.

One module for every server-side path the agent can influence: the ACI's file tools, the
sandbox's read_file/write_file, the background-job logs, the evaluation's artefact copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
Owner = tuple[int, int] | None  # (uid, gid) to give what we create, or None: keep ours


class UnsafePath(OSError):
    """The path is, or passes through, a symlink or something other than a regular file or
    folder (a FIFO, socket or device): refused, nothing was read or written."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"{path}: {why}")
        self.path = path
        self.why = why


def split(rel: str | os.PathLike[str]) -> list[str]:
    """The components of a relative path; refuses absolute paths and `..`."""
    parts = [p for p in PurePosixPath(os.fspath(rel)).parts if p not in ("", ".")]
    if PurePosixPath(os.fspath(rel)).is_absolute() or ".." in parts:
        raise UnsafePath(os.fspath(rel), "must be a relative path without `..`")
    return parts


def _step(fd: int, name: str, path: str, make: bool, mode: int, owner: Owner) -> int:
    """Open the folder `name` below `fd` (made when missing and `make`), never a symlink."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not make:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=fd)
        sub = os.open(name, DIR_FLAGS, dir_fd=fd)
        if owner is not None:
            os.fchown(sub, *owner)
        return sub
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(path, f"`{name}`, a symlink or not a folder") from None
        raise


def open_dir(root: str | os.PathLike[str] | int, rel: str | os.PathLike[str] = "", *,
             make: bool = False, mode: int = 0o755, owner: Owner = None) -> int:
    """A descriptor of the folder `rel` below `root` (a path the server owns, or a descriptor
    of one), walked without following any symlink. The caller closes it."""
    fd = os.open(root, DIR_FLAGS) if not isinstance(root, int) else os.dup(root)
    try:
        for name in split(rel):
            nxt = _step(fd, name, os.fspath(rel), make, mode, owner)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file(root: str | os.PathLike[str] | int, rel: str | os.PathLike[str], flags: int,
              mode: int = 0o644, *, make_parents: bool = False, owner: Owner = None) -> int:
    """Open the regular file `rel` below `root` (flags as for os.open: O_RDONLY, O_WRONLY |
    O_CREAT | O_TRUNC, ...), never through a symlink and never anything but a regular file.
    A file this call creates is given to `owner`. Raises UnsafePath, or the OSError of the open
    (FileNotFoundError, IsADirectoryError, ...)."""
    parts = split(rel)
    if not parts:
        raise IsADirectoryError(errno.EISDIR, "is the folder itself", os.fspath(rel))
    path = os.fspath(rel)
    parent = open_dir(root, PurePosixPath(*parts[:-1]) if len(parts) > 1 else "",
                      make=make_parents, owner=owner)
    try:
        creating = bool(flags & os.O_CREAT)
        existed = True
        if creating and not flags & os.O_EXCL:
            try:
                os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                existed = False
        # O_TRUNC waits until the type is known: truncating is the one write done by open()
        want = flags & ~os.O_TRUNC
        try:
            fd = os.open(parts[-1], want | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                         dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(path, "is a symlink") from None
            if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
                raise UnsafePath(path, "is not a regular file") from None
            raise
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(path, "is not a regular file (a FIFO, socket or device)")
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
            if owner is not None and creating and (flags & os.O_EXCL or not existed):
                os.fchown(fd, *owner)
            # regular files ignore O_NONBLOCK; clear it anyway for callers that hand the
            # descriptor to code that checks
            os.set_blocking(fd, True)
            return fd
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(parent)


def read(root: str | os.PathLike[str] | int, rel: str | os.PathLike[str], limit: int,
         offset: int = 0) -> bytes:
    """At most `limit` bytes of the regular file `rel` from `offset` (see open_file)."""
    fd = open_file(root, rel, os.O_RDONLY)
    try:
        return pread_all(fd, max(limit, 0), max(offset, 0))
    finally:
        os.close(fd)


def pread_all(fd: int, limit: int, offset: int = 0) -> bytes:
    """Up to `limit` bytes from `offset` (fewer only at the end of the file)."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = os.pread(fd, min(limit - got, 1 << 20), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write(root: str | os.PathLike[str] | int, rel: str | os.PathLike[str], data: bytes, *,
          make_parents: bool = False, owner: Owner = None, mode: int = 0o644) -> None:
    """Create or replace the content of the regular file `rel` (see open_file)."""
    fd = open_file(root, rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode,
                   make_parents=make_parents, owner=owner)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def lstat(root: str | os.PathLike[str] | int, rel: str | os.PathLike[str]) -> os.stat_result:
    """The file's own status (a symlink is not followed), found without following any."""
    parts = split(rel)
    if not parts:
        return os.fstat(root) if isinstance(root, int) else os.lstat(root)
    parent = open_dir(root, PurePosixPath(*parts[:-1]) if len(parts) > 1 else "")
    try:
        return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def unlink(root: str | os.PathLike[str] | int, rel: str | os.PathLike[str]) -> bool:
    """Remove the entry `rel` if it exists (a symlink itself, never its target)."""
    parts = split(rel)
    try:
        parent = open_dir(root, PurePosixPath(*parts[:-1]) if len(parts) > 1 else "")
    except (FileNotFoundError, UnsafePath):
        return False
    try:
        os.unlink(parts[-1], dir_fd=parent)
        return True
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return False
    finally:
        os.close(parent)


def walk_files(root_fd: int, *, skip_hidden_dirs: bool = False, skip_hidden_files: bool = False,
               max_entries: int = 1_000_000) -> Iterator[tuple[str, int, str]]:
    """(relative path, descriptor of its folder, name) for every entry below `root_fd` that
    is not a folder, in sorted order (callers open them with open_file(dirfd, name), which
    refuses what is not a regular file). Folders are entered from their parent's descriptor
    with O_NOFOLLOW | O_DIRECTORY, so a symlink or FIFO swapped in is skipped, never followed
    or waited on (os.fwalk opens folders without either). Stops after `max_entries` entries,
    so a tree made to be huge cannot hold the server."""
    seen = 0

    def visit(fd: int, prefix: str) -> Iterator[tuple[str, int, str]]:
        nonlocal seen
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            seen += 1
            if seen > max_entries:
                return
            name = entry.name
            rel = f"{prefix}{name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if name.startswith(".") and (skip_hidden_dirs if is_dir else skip_hidden_files):
                continue
            if not is_dir:
                yield rel, fd, name
                continue
            try:
                sub = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, or swapped for a link or a FIFO since the listing
            try:
                yield from visit(sub, rel + "/")
            finally:
                os.close(sub)

    yield from visit(root_fd, "")


def chown_tree(root: str | os.PathLike[str], owner: tuple[int, int]) -> None:
    """Give a folder and everything below it to `owner`, entering folders by descriptor and
    changing links themselves (never what they point to), so a tree the agent rearranges
    while this runs cannot redirect it to a host file."""
    top = open_dir(root)
    try:
        os.fchown(top, *owner)

        def visit(fd: int) -> None:
            with os.scandir(fd) as it:
                entries = list(it)
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        try:
                            sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                        except OSError:
                            continue  # swapped for something else since the listing
                        try:
                            os.fchown(sub, *owner)
                            visit(sub)
                        finally:
                            os.close(sub)
                    else:
                        os.chown(entry.name, *owner, dir_fd=fd, follow_symlinks=False)

        visit(top)
    finally:
        os.close(top)
