"""search_dir, search_file and find_file: plain-text search with SWE-agent's output formats.

Files are streamed line by line (never read whole); binary files, hidden files and folders
(.git, .venv, ...) and symlinks are skipped, as `find -type f ! -path '*/.*'` and `grep -I`
would. `search_dir` matching more than `max_results` files is refused with a request to narrow
the search, as MLGym's is; `search_file` and `find_file` list everything, as MLGym's do, up
to MAX_LISTED lines (a listing that long only fills the agent's context).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator

from mlgym.tools import safefs

from .editor import NO_FILE
from .result import AciError
from .workspace import Resolved, Workspace

MAX_RESULTS = 100
MAX_LISTED = 1000
MAX_FILE_BYTES = 64 * 2**20


def _open_text(dirfd: int, name: str):
    """A regular text file opened without following links (tools/safefs.py), or None for a
    binary file, a link, a FIFO or anything else odd."""
    try:
        fd = safefs.open_file(dirfd, name, os.O_RDONLY)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    if b"\x00" in f.read(8192):
        f.close()
        return None
    f.seek(0)
    return f


def _walk(ws: Workspace, r: Resolved, *, skip_hidden_files: bool
          ) -> Iterator[tuple[str, int, str]]:
    """(host path, folder descriptor, name) of the files under a resolved folder, sorted,
    hidden folders pruned; folders are entered by descriptor, never through a symlink."""
    try:
        root = safefs.open_dir(ws.host_root, os.path.relpath(r.host, ws.host_root))
    except OSError:
        raise AciError(f"Directory {r.inside} not found", "not_found") from None
    try:
        for rel, dirfd, name in safefs.walk_files(root, skip_hidden_dirs=True,
                                                  skip_hidden_files=skip_hidden_files):
            yield os.path.join(r.host, rel), dirfd, name
    finally:
        os.close(root)


def _resolve_dir(ws: Workspace, dir: str | None, cwd: str) -> Resolved:
    r = ws.resolve(dir or ".", cwd)
    if not os.path.isdir(r.host):
        raise AciError(f"Directory {dir} not found", "not_found")
    return r


def search_dir(
    ws: Workspace,
    search_term: str,
    dir: str | None,
    cwd: str,
    *,
    max_results: int = MAX_RESULTS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> str:
    if not search_term:
        raise AciError(
            "Usage: search_dir <search_term> [<dir>]\nError: empty search term", "format"
        )
    r = _resolve_dir(ws, dir, cwd)
    needle = search_term.encode("utf-8", "surrogateescape")
    counts: dict[str, int] = {}
    too_big: list[str] = []
    for path, dirfd, name in _walk(ws, r, skip_hidden_files=True):
        f = _open_text(dirfd, name)
        if f is None:
            continue
        if os.fstat(f.fileno()).st_size > max_file_bytes:
            f.close()
            too_big.append(ws.to_inside(path))
            continue
        with f:
            n = sum(1 for line in f if needle in line)
        if n:
            counts[ws.to_inside(path)] = n
    if len(counts) > max_results:  # the count of every matching file, as MLGym's message has
        return (f'More than {len(counts)} files matched for "{search_term}" in {r.inside}. '
                "Please narrow your search.")
    note = ""
    if too_big:
        shown = ", ".join(too_big[:5]) + (" ..." if len(too_big) > 5 else "")
        note = (
            f"\n({len(too_big)} files over {max_file_bytes // 2**20} MiB were not searched: "
            f"{shown}; use grep for them.)"
        )
    if not counts:
        return f'No matches found for "{search_term}" in {r.inside}{note}'
    out = [f'Found {sum(counts.values())} matches for "{search_term}" in {r.inside}:']
    out += [f"{p} ({n} matches)" for p, n in sorted(counts.items())]
    out.append(f'End of matches for "{search_term}" in {r.inside}{note}')
    return "\n".join(out)


def search_file(
    ws: Workspace,
    search_term: str,
    file: str | None,
    open_file: Resolved | None,
    cwd: str,
) -> str:
    if not search_term:
        raise AciError(
            "Usage: search_file <search_term> [<file>]\nError: empty search term", "format"
        )
    if file is None:
        if open_file is None:
            raise AciError(NO_FILE, "no_file")
        r = open_file
    else:
        r = ws.resolve(file, cwd)
        if not os.path.isfile(r.host):
            raise AciError(
                "Usage: search_file <search_term> [<file>]\n"
                f"Error: File name {file} not found. Please provide a valid file name.",
                "not_found",
            )
    try:
        f = ws.open_read(r)
    except AciError:
        f = None
    if f is not None and b"\x00" in f.read(8192):
        f.close()
        f = None
    elif f is not None:
        f.seek(0)
    if f is None:
        raise AciError(f"Error: {r.inside} is not a readable text file.", "binary")
    needle = search_term.encode("utf-8", "surrogateescape")
    hits: list[str] = []
    with f:
        for i, line in enumerate(f, 1):
            if needle in line:
                text = line.rstrip(b"\n").decode("utf-8", "replace")
                hits.append(f"Line {i}:{text}")
    if len(hits) > MAX_LISTED:
        return (f'More than {len(hits)} lines matched for "{search_term}" in {r.inside}. '
                "Please narrow your search.")
    if not hits:
        return f'No matches found for "{search_term}" in {r.inside}'
    return "\n".join(
        [
            f'Found {len(hits)} matches for "{search_term}" in {r.inside}:',
            *hits,
            f'End of matches for "{search_term}" in {r.inside}',
        ]
    )


def find_file(ws: Workspace, file_name: str, dir: str | None, cwd: str) -> str:
    if not file_name:
        raise AciError("Usage: find_file <file_name> [<dir>]\nError: empty file name", "format")
    if "/" in file_name:
        raise AciError(
            "Usage: find_file <file_name> [<dir>]\n"
            f"Error: {file_name!r} is a path; give a file name (wildcards allowed) and the folder "
            "as the second argument.",
            "format",
        )
    r = _resolve_dir(ws, dir, cwd)
    found: list[str] = []
    for path, _, _ in _walk(ws, r, skip_hidden_files=False):
        if fnmatch.fnmatchcase(os.path.basename(path), file_name):
            found.append(ws.to_inside(path))
    if len(found) > MAX_LISTED:
        return (f'More than {len(found)} files matched for "{file_name}" in {r.inside}. '
                "Please narrow your search.")
    if not found:
        return f'No matches found for "{file_name}" in {r.inside}'
    return "\n".join(
        [f'Found {len(found)} matches for "{file_name}" in {r.inside}:', *sorted(found)]
    )
