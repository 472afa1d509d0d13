"""Bounded processing of command output, however much of it there is.

Output streams through `OutputCollector` chunk by chunk: carriage-return progress bars collapse
to their last state, the first and last halves of `limit` characters are kept in memory, and
once the output outgrows `limit` everything goes to a log file instead of memory — so 100 MB of
output costs a few hundred KB of server memory and the agent can still read the whole of it.
"""

from __future__ import annotations

import asyncio
import inspect
import io
from collections import deque
from pathlib import Path

from mlgym import log
from mlgym.env_server.sandbox.base import OutputCallback

logger = log.get(__name__)

MAX_LINE = 65_536  # an unfinished line longer than this is passed on uncollapsed


class CarriageReturnCollapser:
    """Keeps, for each line, only the text after its last carriage return (a progress bar's
    final state). Streaming: the unfinished last line is held until its newline arrives."""

    def __init__(self) -> None:
        self._line = ""
        self._pending_cr = False  # chunk ended in "\r": is it "\r\n" or an overwrite?

    def feed(self, text: str) -> str:
        if self._pending_cr:
            text = "\r" + text
            self._pending_cr = False
        if text.endswith("\r"):
            self._pending_cr = True
            text = text[:-1]
        if "\r" not in text:
            cut = text.rfind("\n")
            if cut < 0:
                self._line += text
                out = ""
            else:
                out = self._line + text[: cut + 1]
                self._line = text[cut + 1 :]
        else:
            parts = (self._line + text.replace("\r\n", "\n")).split("\n")
            done = [p[p.rfind("\r") + 1 :] for p in parts[:-1]]
            last = parts[-1]
            self._line = last[last.rfind("\r") + 1 :]
            out = "\n".join(done) + "\n" if done else ""
        if len(self._line) > MAX_LINE:
            out, self._line = out + self._line, ""
        return out

    def flush(self) -> str:
        out, self._line, self._pending_cr = self._line, "", False
        return out


def collapse(text: str) -> str:
    """Collapse carriage-return progress bars in a finished text."""
    c = CarriageReturnCollapser()
    return c.feed(text) + c.flush()


class OutputCollector:
    """Head + tail of a command's output within `limit` chars; the whole (collapsed) output goes
    to `log_file` (host path) once it exceeds the limit; live chunks go to `on_output` until
    `stream_limit` chars have been passed on."""

    def __init__(
        self,
        limit: int,
        log_file: tuple[Path, str] | None = None,  # (host path, inside path)
        on_output: OutputCallback | None = None,
        stream_limit: int = 1_000_000,
        log_limit: int = 16 * 2**20,
    ) -> None:
        self.limit = max(limit, 200)
        self.log_limit = log_limit  # bytes of the full output kept on disk, whatever comes
        self._logged = 0
        self._log_capped = False
        self.head_limit = self.limit // 2
        self.tail_limit = self.limit - self.head_limit
        self.log_file = log_file
        self.on_output = on_output
        self.stream_limit = stream_limit
        self.streamed = 0
        self.total = 0
        self._cr = CarriageReturnCollapser()
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self._file: io.TextIOWrapper | None = None
        self._file_failed = False

    async def feed(self, text: str) -> None:
        out = self._cr.feed(text)
        if out:
            await self._add(out)

    async def finish(self) -> tuple[str, int, str | None]:
        """(kept output with a cut note, characters cut, inside path of the full log or None)."""
        rest = self._cr.flush()
        if rest:
            await self._add(rest)
        full_path = None
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None
        if self._logged and self.log_file and not self._file_failed:
            full_path = self.log_file[1]
        head = "".join(self._head)
        tail = "".join(self._tail)
        if len(tail) > self.tail_limit:
            tail = tail[len(tail) - self.tail_limit :]
        cut = self.total - len(head) - len(tail)
        if cut <= 0:
            return head + tail, 0, None
        if full_path:
            which = (f"the first {self.log_limit // 2**20} MiB of the output"
                     if self._log_capped else "full output")
            where = (f"{which}: {full_path}; read it with `sed -n 'START,ENDp' {full_path}`,"
                     f" `head` or `tail`")
        else:
            where = "the full output was not kept"
        note = f"\n[... {cut} characters cut; {where}]\n"
        return head + note + tail, cut, full_path

    async def _add(self, s: str) -> None:
        self.total += len(s)
        await self._stream(s)
        if self._file is not None:
            await self._write(s)
        room = self.head_limit - self._head_len
        if room > 0:
            self._head.append(s[:room])
            self._head_len += min(room, len(s))
            s = s[room:]
        if s:
            self._tail.append(s)
            self._tail_len += len(s)
        if self._file is None and not (self._file_failed or self._log_capped) \
                and self.total > self.limit:
            await self._open_log()
        if self._file is not None or self._file_failed or self._log_capped \
                or self.log_file is None:
            # Everything so far is safe in the log (or cannot be): keep only the tail in memory.
            while self._tail and self._tail_len - len(self._tail[0]) >= self.tail_limit:
                self._tail_len -= len(self._tail.popleft())

    async def _open_log(self) -> None:
        if self.log_file is None:
            self._file_failed = True
            return
        host = self.log_file[0]
        try:
            host.parent.mkdir(parents=True, exist_ok=True)
            # "x": a fresh file with a random name in the server's own folder, never an
            # existing file or link
            self._file = await asyncio.to_thread(open, host, "x", encoding="utf-8",
                                                 errors="replace")
        except OSError as exc:
            logger.warning("output_log_unavailable", path=str(host), error=str(exc))
            self._file_failed = True
            return
        await self._write("".join(self._head) + "".join(self._tail))

    async def _write(self, s: str) -> None:
        assert self._file is not None
        room = self.log_limit - self._logged
        if len(s) > room // 4:  # characters: up to 4 bytes each in UTF-8
            data = s.encode("utf-8", errors="replace")
            if len(data) > room:
                s = data[:max(room, 0)].decode("utf-8", errors="ignore")
                self._log_capped = True
        self._logged += len(s) if s.isascii() else len(s.encode("utf-8", errors="replace"))
        try:
            await asyncio.to_thread(self._file.write, s)
            if self._log_capped:
                note = (f"\n[output log stopped at {self.log_limit // 2**20} MiB; the rest of "
                        "the output was not kept]\n")
                await asyncio.to_thread(self._file.write, note)
                await asyncio.to_thread(self._file.close)
                self._file = None
        except OSError as exc:  # disk full: keep going without the full log
            logger.warning("output_log_write_failed", error=str(exc))
            self._file_failed = True
            self._file = None

    async def _stream(self, s: str) -> None:
        if self.on_output is None or self.streamed >= self.stream_limit:
            return
        room = self.stream_limit - self.streamed
        chunk = s[:room]
        self.streamed += len(s)
        if self.streamed >= self.stream_limit:
            chunk += "\n[live output stopped here; the rest is in the result and the log]\n"
        await call_back(self.on_output, chunk)


async def call_back(cb: OutputCallback | None, text: str) -> None:
    """Call a sync or async output callback; a failing callback is logged, never fatal."""
    if cb is None:
        return
    try:
        result = cb(text)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # noqa: BLE001 - a listener's bug must not break the command
        logger.warning("output_callback_failed", error=repr(exc))
