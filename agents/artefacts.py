"""Moving artefacts between environment sessions, over the wire protocol only: a planner's
`pick` (a parallel worker's validated artefact into the team's workspace), the supervisor's
merge and auto-submission, a reviewer's `diff`, and putting an approved artefact back before
its submit.

A file artefact is copied as the exact bytes the server scored (`ReadArtefact`); a folder
artefact (checkpoints, a saved model) as the folder is now in the source workspace: its files
are listed with one `find` in the source session (an environment step, recorded like any
other) and read (`ReadFile`) and written (`WriteFile`) one by one, within the limits below.
"""

from __future__ import annotations

import difflib
import shlex
from typing import Any

from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError

MAX_FILE_BYTES = 15 * 1024 * 1024  # one WriteFile (an envelope is at most 16 MiB)
MAX_FILES = 500
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_DIFF_LINES = 300
TIMEOUT_S = 60.0


class CopyError(RuntimeError):
    """An artefact that could not be read, listed or written; the message says why."""


async def _request(env: Any, body: P.Body, timeout: float = TIMEOUT_S) -> Any:
    try:
        return await env.request("env", body, timeout=timeout)
    except RpcError as exc:
        raise CopyError(f"{exc.code}: {exc.message}") from None
    except TimeoutError:
        raise CopyError(f"the environment did not answer within {timeout:.0f} s") from None


async def read_scored(env: Any, session: str, token: str, step: int) -> bytes:
    """The bytes validate/submit scored at `step` of `session`."""
    fc = await _request(env, P.ReadArtefact(session=session, step=step, token=token))
    assert isinstance(fc, P.FileContent)
    return fc.data


async def restore(env: Any, session: str, token: str, step: int, path: str) -> int:
    """Write the artefact scored at `step` back over `path` in the same session."""
    data = await read_scored(env, session, token, step)
    await _request(env, P.WriteFile(session=session, path=path, data=data, token=token))
    return len(data)


async def copy(
    env: Any,
    *,
    src: tuple[str, str],
    dst: tuple[str, str],
    step: int,
    path: str,
    kind: str,
    agent: str,
) -> P.ArtefactCopy:
    """Copy the artefact of `src` (session, token) into `dst`; returns what to record."""
    if kind == "file":
        data = await read_scored(env, src[0], src[1], step)
        await _request(env, P.WriteFile(session=dst[0], path=path, data=data, token=dst[1]))
        return P.ArtefactCopy(
            source_session=src[0],
            source_step=step,
            target_session=dst[0],
            path=path,
            artefact_kind="file",
            files=1,
            size=len(data),
        )
    files = await _list(env, src, path, agent)
    total = 0
    for rel in files:
        data = await _read_whole(env, src, rel)
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            raise CopyError(f"{path}/ holds more than {MAX_TOTAL_BYTES >> 20} MiB")
        await _request(env, P.WriteFile(session=dst[0], path=rel, data=data, token=dst[1]))
    return P.ArtefactCopy(
        source_session=src[0],
        source_step=step,
        target_session=dst[0],
        path=path,
        artefact_kind="dir",
        files=len(files),
        size=total,
    )


async def _list(env: Any, src: tuple[str, str], path: str, agent: str) -> list[str]:
    cmd = f"find {shlex.quote(path)} -type f -printf '%s %p\\n'"
    obs = await _request(env, P.Act(session=src[0], token=src[1], command=cmd, agent=agent), 300)
    assert isinstance(obs, P.Observation)
    if obs.exit_code != 0:
        raise CopyError(f"cannot list {path}/ in the source workspace: {obs.output.strip()[:300]}")
    prefix = path.rstrip("/") + "/"
    files = []
    for line in obs.output.splitlines():
        size, _, name = line.strip().partition(" ")
        if not size.isdigit() or not name.startswith(prefix) or ".." in name.split("/"):
            continue
        if int(size) > MAX_FILE_BYTES:
            raise CopyError(
                f"{name} holds {int(size) >> 20} MiB; files over "
                f"{MAX_FILE_BYTES >> 20} MiB are not copied between sessions"
            )
        files.append(name)
    if not files:
        raise CopyError(f"{path}/ holds no files in the source workspace")
    if len(files) > MAX_FILES:
        raise CopyError(f"{path}/ holds {len(files)} files (at most {MAX_FILES} are copied)")
    return files


async def _read_whole(env: Any, src: tuple[str, str], rel: str) -> bytes:
    out = b""
    while True:
        fc = await _request(
            env, P.ReadFile(session=src[0], path=rel, offset=len(out), token=src[1])
        )
        assert isinstance(fc, P.FileContent)
        out += fc.data
        if not fc.truncated or not fc.data:
            return out
        if len(out) > MAX_FILE_BYTES:
            raise CopyError(f"{rel} is larger than {MAX_FILE_BYTES >> 20} MiB")


def starting_version(task: str, path: str) -> bytes | None:
    """The submission file as the task's starter workspace has it (None: it has none)."""
    from mlgym.tasks import registry

    try:
        t = registry.load_task(task)
    except (registry.UnknownTask, registry.TaskSpecError):
        return None
    f = t.dir / t.spec.files.workspace / path
    return f.read_bytes() if f.is_file() else None


async def diff(env: Any, session: str, token: str, step: int, task: str, path: str) -> str:
    """The artefact scored at `step` as a unified diff against the task's starting version."""
    if not step:
        raise CopyError("the review request names no validated artefact")
    new = (await read_scored(env, session, token, step)).decode("utf-8", "replace")
    old_b = starting_version(task, path)
    old = old_b.decode("utf-8", "replace") if old_b is not None else ""
    lines = list(
        difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            f"a/{path} (start of the task)",
            f"b/{path} (step {step})",
            lineterm="",
        )
    )
    if not lines:
        return f"{path}: no change from the task's starting version."
    more = len(lines) - MAX_DIFF_LINES
    body = "\n".join(lines[:MAX_DIFF_LINES])
    return body + (f"\n[... {more} more diff lines not shown]" if more > 0 else "")
