"""The persistent shell: one `bash --noprofile --norc` driven through its stdin/stdout streams.

Backend-neutral: a backend starts bash its own way (bubblewrap, `docker exec -i`, a plain
subprocess) and hands over the two streams (stderr merged into stdout).

How a command runs (all of it plain bash, no helper binaries, and no process started per
command: a trivial command costs a fraction of a millisecond):
- The host writes one line, `__mlgym_run TOKEN SYNC $'COMMAND'`: the command in bash's ANSI-C
  quotes (backslash, quote and control characters escaped, so nothing in it can end the quoting;
  a here-document cost 17 us more per command). TOKEN is random per command, so no output can
  fake the frame around it.
- bash runs with job control (`set -m`), so every pipeline the command starts lands in its own
  process group; the command itself is `eval`ed inside a function in the shell process, so `cd`,
  `export` and `source venv/bin/activate` persist. Its stdin is /dev/null.
- One watcher per shell, started with it, reads control lines from a FIFO the host made in the
  log folder. Before START the shell prints the process groups of its jobs (KEEP). To stop a
  command (timeout or interrupt) the host writes `i PGID...` to the FIFO; the watcher kills
  every process group the command started (found through /proc; those jobs and `setsid`
  background jobs are spared) and signals the shell, whose trap returns from the command's
  function, so even a builtin-only `while :; do :; done` ends. The shell survives. The watcher
  is otherwise idle; only after the host sent it something does the shell wait for its
  acknowledgement (before END, and before the next command), so a kill in progress never
  reaches the next command.
- The command's output is framed by START/END markers; the END marker carries the exit code and
  the new working directory. Output is processed as a stream (see output.py).
If the shell dies or stops answering, `ShellLost` is raised and the backend starts a new one.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import os
import re
import secrets
import shlex
import signal
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlgym import log
from mlgym.env_server.sandbox.base import ExecResult, OutputCallback, SandboxError
from mlgym.env_server.sandbox.output import OutputCollector

logger = log.get(__name__)

READ_CHUNK = 65_536
# Kill requests for one command, each followed by how long the shell may take to report back;
# after the last, the shell is declared lost. The first is short: a request that lands just
# before the command starts a process finds nothing to kill, and is simply sent again.
INTERRUPT_GRACES_S = (0.5, 3.0, 3.0, 3.0)
START_TIMEOUT_S = 30.0  # a healthy shell acknowledges a command at once
LIVENESS_S = 2.0  # while waiting for output, check this often that the shell still lives
KEEP_LOGS = 20  # full-output logs kept per shell (the oldest are deleted)


class ShellLost(SandboxError):
    """The shell exited or stopped answering; `partial` is the output received so far."""

    def __init__(self, message: str, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes) -> object: ...
    async def drain(self) -> None: ...


@dataclass
class LogDir:
    """Where full outputs and job logs go: a host folder and the path it has inside."""

    host: Path
    inside: str

    def path(self, *parts: str) -> tuple[Path, str]:
        return self.host.joinpath(*parts), "/".join([self.inside.rstrip("/"), *parts])


# The shell's start-up script. Names start with __mlgym_ to stay out of the agent's way.
# fd 5: the control pipe (read by the watcher; written by the shell and the host); fd 6: the
# watcher's acknowledgements to the shell. Both are FIFOs the host made; the commands never see
# them (closed around the command), and their paths are unlinked once everyone has them open.
INIT_SCRIPT = r"""
set -m
set +o histexpand 2>/dev/null
exec 2>&1
shopt -s expand_aliases  # MLGym's shell aliases: agents trained there read `ls` as `ls -F`
alias ls='ls -F' ll='ls -alF' la='ls -A' l='ls -CF'
__mlgym_shell=$$
__mlgym_w=
# USR1 (from the watcher): return from the agent's command (or the function of it that runs),
# never from the wrapper's own functions; remembered in case the command has not begun yet.
__mlgym_trap='__mlgym_stop=1; case ${FUNCNAME[0]-} in ""|__mlgym_[!b]*) ;; *) return 130;; esac'
readonly __mlgym_trap __mlgym_shell
trap "$__mlgym_trap" USR1
exit() {
  [[ $BASHPID != "$__mlgym_shell" ]] && builtin exit "$@"  # subshells may exit
  echo "exit: refused; it would end this persistent shell (run scripts with bash file.sh)"
  return 1
}
logout() { exit; }
__mlgym_stat() {  # $1 pid -> __s_ppid __s_pgid __s_sid
  local s IFS=$' \t\n'
  { IFS= read -r s < "/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  local -a f=($s)
  __s_ppid=${f[1]} __s_pgid=${f[2]} __s_sid=${f[3]}
}
__mlgym_gone() {  # $1 pid: has it exited (gone or a zombie)?
  local s
  { IFS= read -r s < "/proc/$1/stat"; } 2>/dev/null || return 0
  s=${s##*) }
  [[ $s == [ZX]* ]]
}
__mlgym_killfg() {  # $1 process groups to spare (jobs that existed before the command). Kill
  # what the running command started: every process of the shell's session (orphans included)
  # except the shell, its parent, this watcher and the spared process groups
  # (__mlgym_killed: how many processes it killed)
  local p spg ssid n pass=0 empty=0
  local -A spare=() hit=()
  __mlgym_stat "$__mlgym_shell" || return 0
  spg=$__s_pgid ssid=$__s_sid
  for p in $1; do spare[$p]=1; done
  # Again until two passes in a row find nothing: a child forked just before its parent
  # died can miss the pass that found the parent a zombie, never the pass after it.
  while (( pass++ < 20 )); do
    n=0
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      [[ $p == "$__mlgym_shell" || $p == "$BASHPID" || $p == 1 || $p == "$PPID" ]] && continue
      __mlgym_stat "$p" || continue
      [[ $__s_sid == "$ssid" && -z ${spare[$__s_pgid]} ]] || continue
      __mlgym_gone "$p" && continue
      n=$((n+1)) hit[$p]=1
      if [[ $__s_pgid == "$spg" ]]; then kill -KILL "$p"; else kill -KILL -- "-$__s_pgid"; fi
    done 2>/dev/null
    if (( n )); then empty=0; elif (( ++empty == 2 )); then break; fi
  done
  __mlgym_killed=${#hit[@]}
}
__mlgym_killsid() {  # $1 session id: kill the whole session (a background job)
  local p
  [[ $1 =~ ^[0-9]+$ ]] || return 0
  kill -KILL -- "-$1" 2>/dev/null
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    __mlgym_stat "$p" && [[ $__s_sid == "$1" ]] && kill -KILL "$p" 2>/dev/null
  done
}
__mlgym_watch() {  # the shell's one watcher: obeys the lines on fd 5, one at a time
  #   i PGID...  kill the running command: all but these process groups (from the host)
  #   s SID      kill a background job's session (from the host)
  #   w TOKEN    answer `ok TOKEN` on fd 6: every earlier line is dealt with (from the shell)
  #   k, then PGID lines, then r TOKEN: the command has ended; kill what it left in the
  #              foreground, sparing those process groups (its jobs); answer `ok TOKEN N`,
  #              N processes killed (from the shell)
  # It ends when the shell is gone.
  trap '' INT TERM HUP QUIT USR1 USR2
  local line part= keep= listing=
  while ((1)); do  # not `:`, which an agent may redefine (the classic fork bomb does)
    if IFS= read -r -t 2 line <&5; then
      line=$part$line part=
      case $line in
        "i"|"i "*) kill -USR1 "$__mlgym_shell" 2>/dev/null
                   __mlgym_killfg "${line#i}" ;;
        "s "*) __mlgym_killsid "${line#s }" ;;
        "w "*) printf 'ok %s\n' "${line#w }" >&6 ;;
        k) listing=1 keep= ;;
        [0-9]*) [[ -n $listing ]] && keep+=" $line" ;;
        "r "*) listing=
               __mlgym_killfg "$keep"
               printf 'ok %s %d\n' "${line#r }" "$__mlgym_killed" >&6 ;;
      esac
    elif (( $? > 128 )); then
      part+=$line
      kill -0 "$__mlgym_shell" 2>/dev/null || return
    else
      return
    fi
  done
}
__mlgym_spawn() {  # (re)start the watcher. From a command substitution, so that it is no job
  # of the shell: `jobs`, `wait` and `$!` in the agent's commands never see it.
  __mlgym_w=$(__mlgym_watch </dev/null >/dev/null 2>&1 & echo $!)
}
__mlgym_setup() {  # $1 control FIFO, $2 acknowledgement FIFO, $3 jobs folder, $4 the most
  # processes the sandbox may count before its commands and jobs are all killed (0: never;
  # only where the sandbox has its own pid namespace, so /proc lists just its processes)
  exec 5<>"$1" 6<>"$2"
  __mlgym_jobsdir=$3 __mlgym_limit=$4
  __mlgym_spawn
}
__mlgym_nprocs() {  # how many processes /proc lists (a glob: no process is started)
  local -a p=(/proc/[0-9]*)
  __mlgym_n=${#p[@]}
}
__mlgym_reap() {  # the sandbox is at its process limit (a fork bomb): kill every process
  # of the shell's session and of the background jobs' sessions but the shell and its watcher,
  # and give the jobs that died so an exit code (137). Builtins only: no fork is possible.
  local p f s pass=0 empty=0
  local -A jobsid=()
  __mlgym_stat "$__mlgym_shell" || return 0
  local ssid=$__s_sid
  for f in "$__mlgym_jobsdir"/*.pid; do
    [[ -f $f ]] || continue
    { IFS= read -r s < "$f"; } 2>/dev/null && [[ $s =~ ^[0-9]+$ ]] && jobsid[$s]=1
  done
  local spg=$__s_pgid
  local -a hit
  local -A groups
  # Each pass stops every process found first (a stopped process cannot fork), then kills
  # them and their process groups: a bomb cannot outgrow the killing. It ends after two
  # passes in a row find nothing (a child forked just before its parent died can miss one).
  while (( pass++ < 50 )); do
    hit=() groups=()
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      [[ $p == "$__mlgym_shell" || $p == "$__mlgym_w" || $p == 1 || $p == "$PPID" ]] && continue
      __mlgym_stat "$p" || continue
      [[ $__s_sid == "$ssid" || -n ${jobsid[$__s_sid]} ]] || continue
      __mlgym_gone "$p" && continue
      hit+=("$p")
      [[ $__s_pgid != "$spg" ]] && groups[$__s_pgid]=1
    done 2>/dev/null
    if (( ${#hit[@]} )); then empty=0; elif (( ++empty == 2 )); then break; else continue; fi
    kill -STOP "${hit[@]}" 2>/dev/null
    for p in "${!groups[@]}"; do kill -STOP -- "-$p"; done 2>/dev/null
    for p in "${!groups[@]}"; do kill -KILL -- "-$p"; done 2>/dev/null
    kill -KILL "${hit[@]}" 2>/dev/null
  done
  for f in "$__mlgym_jobsdir"/*.pid; do
    [[ -f $f && ! -e ${f%.pid}.rc ]] && { echo 137 > "${f%.pid}.rc"; } 2>/dev/null
  done
}
__mlgym_purge() {  # the sandbox is at its process limit: purge, and say so
  __mlgym_reap
  __mlgym_purged
}
__mlgym_purged() {
  printf '\n[the sandbox reached its limit of %s processes (a fork bomb?): every process started by the commands and by background jobs was killed; the shell itself goes on]\n' "$__mlgym_limit"
}
__mlgym_body() {  # an interrupt that came before this point is not lost
  [[ -z $__mlgym_stop ]] || return 130
  eval "$1"
}
__mlgym_wait() {  # $1 token: wait for the watcher's `ok TOKEN [REPLY]` (REPLY -> __mlgym_reply)
  local a
  __mlgym_reply=
  while ((1)); do  # not `:`, which an agent may redefine (the classic fork bomb does)
    if IFS= read -r -t 5 a <&6; then
      [[ $a == "ok $1" || $a == "ok $1 "* ]] && { __mlgym_reply=${a#"ok $1"}; break; }
    elif __mlgym_gone "$__mlgym_w"; then break; fi
  done
}
__mlgym_sync() {  # $1 token: wait until the watcher has dealt with every earlier line
  printf 'w %s\n' "$1" >&5
  __mlgym_wait "$1"
}
__mlgym_run() {  # $1 token, $2 "sync" when the host sent the watcher requests since the last
  # command (they are dealt with first), else "-"; $3 the command
  local __mlgym_c=$3 __mlgym_rc
  # the agent killed the watcher? (`-e cwd` is the cheap test, false for a zombie too; the
  # /proc read that confirms it costs ~80 us, so it runs only when the cheap test fails)
  [[ -e /proc/$__mlgym_w/cwd ]] || { __mlgym_gone "$__mlgym_w" && __mlgym_spawn; }
  [[ $2 == sync ]] && __mlgym_sync "$1"
  __mlgym_stop=
  local __mlgym_before __mlgym_bombed=
  __mlgym_nprocs; __mlgym_before=$__mlgym_n
  # At the limit already (a job bombed since the last command): purge before START, so what
  # the dying bomb prints is dropped with the other leftovers between commands.
  if (( __mlgym_limit && __mlgym_before >= __mlgym_limit )); then
    __mlgym_reap; __mlgym_bombed=1; __mlgym_nprocs; __mlgym_before=$__mlgym_n
  fi
  # The host needs the process groups of the jobs that exist now: a kill request spares them.
  printf '__MLGYM_KEEP_%s__\n' "$1"
  jobs -p
  printf '__MLGYM_START_%s__\n' "$1"
  [[ -n $__mlgym_bombed ]] && __mlgym_purged
  trap "$__mlgym_trap" USR1
  # Called as an `if` condition: `set -e` cannot end the persistent shell from in there.
  if __mlgym_body "$__mlgym_c" </dev/null 5>&- 6<&-; then __mlgym_rc=0; else __mlgym_rc=$?; fi
  set +e +u  # an agent's `set -e`/`set -u` must not make the next wrapper line end the shell
  # Interrupted: the watcher's kill is over before the host hears that the command ended.
  [[ -n $__mlgym_stop ]] && __mlgym_sync "$1"
  # More processes than before the command: the watcher kills what it left in the
  # foreground, sparing the shell's jobs (`jobs -p` goes straight to the watcher's FIFO: no
  # fork, which a fork bomb could make fail); at the process limit, everything of the shell's
  # and the jobs' goes.
  __mlgym_nprocs
  if (( __mlgym_n > __mlgym_before )); then
    printf 'k\n' >&5; jobs -p >&5; printf 'r %s\n' "$1" >&5
    __mlgym_wait "$1"
    (( ${__mlgym_reply:-0} > 0 )) && printf '\n[%d process(es) the command left running were stopped when it ended; to keep one running, start it as a job: nohup CMD > out.log 2>&1 &]\n' "$__mlgym_reply"
    __mlgym_nprocs
  fi
  (( __mlgym_limit && __mlgym_n >= __mlgym_limit )) && __mlgym_purge
  jobs -n >/dev/null 2>&1  # swallow job notices ("[1]+ Done ...") rather than leak them later
  printf '\n__MLGYM_END_%s__%d:%s__MLGYM_DONE_%s__\n' "$1" "$__mlgym_rc" "$PWD" "$1"
}
__mlgym_job() {  # $1 log/status file prefix; command on stdin. Detached: own session, and
  # started from a subshell so it is no job of this shell (no notices, `$!` untouched)
  local __mlgym_c i
  IFS= read -r -d '' __mlgym_c
  ( setsid bash --noprofile --norc -c '
      echo "$$" > "$1.pid"
      bash --noprofile --norc -c "$2" </dev/null >>"$1.log" 2>&1
      echo "$?" > "$1.rc.tmp" && mv -f "$1.rc.tmp" "$1.rc"' mlgym-job "$1" "$__mlgym_c" \
      </dev/null >/dev/null 2>&1 5>&- 6<&- & )
  for i in $(seq 1 500); do [[ -s $1.pid ]] && break; sleep 0.01; done
  printf '__mlgym_job_sid=%s\n' "$(cat "$1.pid" 2>/dev/null)"
}
readonly -f exit logout __mlgym_stat __mlgym_gone __mlgym_killfg __mlgym_killsid \
  __mlgym_watch __mlgym_spawn __mlgym_setup __mlgym_body __mlgym_sync __mlgym_run \
  __mlgym_job __mlgym_nprocs __mlgym_reap __mlgym_purge __mlgym_wait
"""


# Inside $'...' only a backslash or a quote is special; control characters are escaped as
# well, so the whole command stays on one line of the shell's input.
_ANSI_C = {ord("\\"): "\\\\", ord("'"): "\\'", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
           **{c: f"\\x{c:02x}" for c in [*range(1, 32), 127] if c not in (9, 10, 13)}}


def ansi_c_quote(text: str) -> str:
    """`text` as one bash word that expands to exactly `text` (no NUL: bash cannot hold it)."""
    return "$'" + text.replace("\0", "").translate(_ANSI_C) + "'"


def kill_host_session(sid: int) -> int:
    """SIGKILL every host process in session `sid` (a shell started with its own session, and
    all it left behind in other process groups). Returns how many were signalled."""
    n = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                n += 1
    return n


class ShellDriver:
    """Runs commands one at a time in a persistent bash reached through two streams."""

    def __init__(
        self,
        reader: Reader,
        writer: Writer,
        logs: LogDir | None = None,
        output_limit: int = 100_000,
        stream_limit: int = 1_000_000,
        alive: Callable[[], bool] | None = None,
        fifo_owner: tuple[int, int] | None = None,
        log_limit: int = 16 * 2**20,
        jobs_dir: str = "",
        process_limit: int = 0,
        limit_hits: Callable[[], int] | None = None,
    ) -> None:
        """`alive` tells whether the shell process still runs: its death is noticed even when
        processes it left behind keep its output pipe open. `fifo_owner`: the sandbox user,
        when it is not the server's (it must open the control FIFOs). `log_limit`: the most
        bytes of one command's output kept in its full-output log. `jobs_dir`: the inside
        path of the background jobs' folder. `process_limit`: at this many processes (in a
        sandbox with its own pid namespace; 0 = never) the shell kills every process of its
        commands and jobs (a fork bomb) and says so in the output. `limit_hits`: how many
        forks the sandbox's process limit has refused so far (its cgroup's pids.events); when
        that grows during a command, everything the command started is killed, its `&` jobs
        too (a bomb that is a job, or stalls under `process_limit`, cannot outlive it)."""
        self.limit_hits = limit_hits
        self.jobs_dir = jobs_dir
        self.process_limit = process_limit
        self.fifo_owner = fifo_owner
        self.log_limit = log_limit
        self.reader = reader
        self.alive = alive
        self.writer = writer
        self.logs = logs
        self.output_limit = output_limit
        self.stream_limit = stream_limit
        self.cwd = ""
        self._lock = asyncio.Lock()
        self._buf = ""  # decoded text received but not yet consumed
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._eof = False
        self._current: str | None = None  # token of the running command
        self._interrupted = False
        self._task: asyncio.Task[tuple[int, str]] | None = None  # the running command's reader
        self._stopper: asyncio.Task[bool] | None = None  # kill requests after interrupt()
        self._counter = itertools.count(1)
        self._kept_logs: list[Path] = []
        self._started = asyncio.Event()  # the running command's START marker arrived
        self._keep = ""  # process groups of the jobs that existed before the running command
        self._hits = 0  # limit_hits() when the running command started
        self._sync_next = False  # requests went to the watcher: the next command waits for it
        self._ctl: int | None = None  # our end of the watcher's control FIFO
        self._close_ctl: weakref.finalize | None = None
        self.lost = False

    # -- start-up ------------------------------------------------------------------------------
    async def start(self, cwd: str, timeout: float = 30.0) -> None:
        """Make the watcher's FIFOs, install the helper functions, start the watcher and wait
        for the shell to answer."""
        token = secrets.token_hex(8)
        ready = f"__MLGYM_READY_{token}__"
        fifos, self._ctl = await asyncio.to_thread(_make_fifos, self.logs, token, self.fifo_owner)
        self._close_ctl = weakref.finalize(self, os.close, self._ctl)
        ctl, ack = (shlex.quote(inside) for _, inside in fifos)
        script = (INIT_SCRIPT + f"__mlgym_setup {ctl} {ack} {shlex.quote(self.jobs_dir or '/')} "
                  f"{int(self.process_limit)}\ncd {shlex.quote(cwd)}\n"
                  f"printf '%s\\n' {ready}\n")
        try:
            await self._send(script)
            before = await asyncio.wait_for(self._read_until(ready), timeout)
        except (TimeoutError, ShellLost) as exc:
            got = self._buf.strip() or getattr(exc, "partial", "")
            raise SandboxError(f"the sandbox shell did not start: {got or exc!r}") from None
        finally:  # open on both sides now (or never): the paths are no longer needed
            await asyncio.to_thread(_remove_fifos, fifos, self.logs is None)
        self._consume_line_end()
        if before.strip():
            logger.warning("shell_startup_output", output=before.strip()[:2000])
        self.cwd = cwd

    # -- commands --------------------------------------------------------------------------------
    async def run(
        self, command: str, timeout: float | None = None, on_output: OutputCallback | None = None
    ) -> ExecResult:
        async with self._lock:
            return await self._run(command, timeout, on_output)

    async def _run(
        self, command: str, timeout: float | None, on_output: OutputCallback | None
    ) -> ExecResult:
        if self.lost:
            raise ShellLost("the shell is gone")
        token = secrets.token_hex(8)
        log_file = None
        if self.logs is not None:
            log_file = self.logs.path("out", f"{next(self._counter):05d}-{token}.log")
        collector = OutputCollector(self.output_limit, log_file, on_output, self.stream_limit,
                                    log_limit=self.log_limit)
        self._current, self._interrupted = token, False
        self._started.clear()
        started = time.monotonic()
        sync = "sync" if self._sync_next else "-"
        self._sync_next = False
        await self._send(f"__mlgym_run {token} {sync} {ansi_c_quote(command)}\n")
        task = self._task = asyncio.create_task(self._collect(token, collector))
        timed_out = False
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                timed_out = True
                if not await self._stop(token, task):
                    self.lost = True
                    task.cancel()
                    output, _, _ = await collector.finish()
                    raise ShellLost("the shell did not stop the command", output)
            exit_code, cwd = task.result()  # raises ShellLost when the shell died
        except ShellLost as exc:
            self.lost = True
            if not exc.partial:
                exc.partial, _, _ = await collector.finish()
            raise
        except BaseException:
            task.cancel()
            raise
        finally:
            self._current = None
        output, cut, full = await collector.finish()
        if timed_out:
            output += (f"\n[timed out after {timeout:g} s: the command and the processes it "
                       "started were killed]")
        elif self._interrupted:
            output += "\n[interrupted: the command and the processes it started were killed]"
        elif self.limit_hits is not None and self.limit_hits() > self._hits:
            self._request_kill()  # as an interrupt, after the fact
            output += ("\n[the sandbox hit its process limit while this command ran (a fork "
                       "bomb?): every process the command started, its `&` jobs included, "
                       "was killed]")
        if full and log_file:
            self._remember_log(log_file[0])
        self.cwd = cwd
        return ExecResult(
            output=output,
            exit_code=exit_code,
            timed_out=timed_out,
            cut_chars=cut,
            duration_s=round(time.monotonic() - started, 3),
            cwd=cwd,
            full_output_path=full,
            interrupted=self._interrupted or timed_out,
        )

    async def interrupt(self) -> bool:
        """Kill the running command (if any). Returns whether one was running."""
        token = self._current
        if token is None:
            return False
        self._interrupted = True
        await self._send_interrupt(token)
        if self._task is not None:  # ask again while it runs (see INTERRUPT_GRACES_S)
            self._stopper = asyncio.create_task(self._stop(token, self._task, sent=True))
        return True

    async def _stop(self, token: str, task: asyncio.Task, sent: bool = False) -> bool:
        """Send kill requests for command `token` until it ends; False if it never does."""
        for grace in INTERRUPT_GRACES_S:
            if not sent:
                await self._send_interrupt(token)
            sent = False
            done, _ = await asyncio.wait({task}, timeout=grace)
            if done:
                return True
        return False

    async def kill_session(self, sid: int) -> None:
        """Kill a detached background job's whole session. An idle shell does it itself, before
        any later command (so that command no longer sees the job); while a command runs, the
        watcher does it at once."""
        if self._lock.locked():
            self._send_ctl(f"s {int(sid)}\n")
            self._sync_next = True
        else:
            await self._send(f"__mlgym_killsid {int(sid)}\n")

    def close(self) -> None:
        """Let go of the control FIFO (the backend stops or replaces the shell)."""
        if self._close_ctl is not None:
            self._close_ctl()
        self._ctl = None

    async def start_job(self, prefix_inside: str, command: str) -> int:
        """Start a detached job writing PREFIX.log/.pid/.rc; returns its session id."""
        end = f"__MLGYM_JOB_{secrets.token_hex(8)}"
        result = await self.run(
            f"__mlgym_job {shlex.quote(prefix_inside)} <<'{end}'\n"
            f"{command.replace(chr(0), '')}\n{end}",
            timeout=30,
        )
        m = re.search(r"^__mlgym_job_sid=(\d+)$", result.output, re.M)
        if result.exit_code != 0 or not m:
            raise SandboxError(f"could not start the background job: {result.output[-2000:]}")
        return int(m.group(1))

    # -- stream plumbing -------------------------------------------------------------------------
    async def _send(self, text: str) -> None:
        try:
            self.writer.write(text.encode("utf-8", errors="replace"))
            await self.writer.drain()
        except (ConnectionError, BrokenPipeError, RuntimeError) as exc:
            self.lost = True
            raise ShellLost(f"cannot write to the shell: {exc}") from None

    async def _send_interrupt(self, token: str) -> None:
        """Ask the watcher to kill command `token`, sparing the jobs that existed before it
        (known once its START marker has arrived). The next command first waits until the
        watcher is done, so a late request cannot hit it."""
        if not self._started.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._started.wait(), INTERRUPT_GRACES_S[-1])
        if self._current == token:
            self._request_kill()

    def _request_kill(self) -> None:
        """Have the watcher kill what the current (or just ended) command started, sparing the
        jobs that existed before it; the next command waits until that is done."""
        self._send_ctl(f"i {self._keep}\n".replace("i \n", "i\n"))
        self._sync_next = True

    def _send_ctl(self, line: str) -> None:
        """One line to the watcher: a single small write to a pipe is atomic and, with
        O_NONBLOCK, never blocks the event loop (a full pipe means the watcher is gone)."""
        if self._ctl is None:
            return
        try:
            os.write(self._ctl, line.encode())
        except OSError as exc:  # BlockingIOError: nobody reads any more
            logger.warning("shell_control_not_sent", line=line.strip(), error=str(exc))

    async def _fill(self) -> None:
        """Read one chunk into the buffer; ShellLost at end of stream."""
        if self._eof:
            raise ShellLost("the shell exited")
        while True:
            try:
                async with asyncio.timeout(LIVENESS_S):  # no extra task per read
                    data = await self.reader.read(READ_CHUNK)
                break
            except TimeoutError:
                if self.alive is not None and not self.alive():
                    data = b""
                    break
        if not data:
            self._eof = True
            self.lost = True
            self._buf += self._decoder.decode(b"", final=True)
            raise ShellLost("the shell exited")
        self._buf += self._decoder.decode(data)

    async def _read_until(self, marker: str) -> str:
        """Everything before `marker` (consumed, with the marker). Small outputs only."""
        while (i := self._buf.find(marker)) < 0:
            await self._fill()
        before, self._buf = self._buf[:i], self._buf[i + len(marker) :]
        return before

    def _consume_line_end(self) -> None:
        if self._buf.startswith("\n"):
            self._buf = self._buf[1:]

    async def _collect(self, token: str, collector: OutputCollector) -> tuple[int, str]:
        """Stream the command's output into the collector; return (exit code, cwd)."""
        start = f"__MLGYM_START_{token}__\n"
        end = f"__MLGYM_END_{token}__"
        done = f"__MLGYM_DONE_{token}__"
        # Before START: leftovers from earlier (job notices), dropped; then the KEEP marker and
        # the process groups of the shell's jobs. START comes at once unless the shell is
        # broken (say, its functions were redefined).
        keep = f"__MLGYM_KEEP_{token}__\n"
        deadline = time.monotonic() + START_TIMEOUT_S
        while (i := self._buf.find(start)) < 0:
            k = self._buf.find(keep)
            cut = k if k >= 0 else len(self._buf) - len(keep)
            if cut > 0:
                self._drop(self._buf[:cut])
                self._buf = self._buf[cut:]
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    await self._fill()
            except TimeoutError:
                raise ShellLost("the shell did not start the command") from None
        before, self._buf = self._buf[:i], self._buf[i + len(start) :]
        k = before.rfind(keep)
        self._keep = ""
        if k >= 0:
            self._keep = " ".join(p for p in before[k + len(keep) :].split() if p.isdigit())
            before = before[:k]
        self._drop(before)
        if self.limit_hits is not None:  # from here on, refused forks are this command's
            self._hits = self.limit_hits()
        self._started.set()
        hold = len(end)  # keep enough back to see a marker split across two chunks
        try:
            while (i := self._buf.find(end)) < 0:
                if len(self._buf) > hold:
                    await collector.feed(self._buf[:-hold])
                    self._buf = self._buf[-hold:]
                await self._fill()
        except ShellLost as exc:
            await collector.feed(self._buf)
            self._buf = ""
            exc.partial = ""
            raise
        body = self._buf[:i]
        if body.endswith("\n"):
            body = body[:-1]  # the newline the END printf adds
        await collector.feed(body)
        self._buf = self._buf[i + len(end) :]
        tail = await self._read_until(done)
        self._consume_line_end()
        code, _, cwd = tail.partition(":")
        try:
            exit_code = int(code)
        except ValueError:
            exit_code = -1
        return exit_code, cwd

    def _drop(self, text: str) -> None:
        if text.strip():
            logger.debug("shell_output_between_commands", text=text[:500])

    def _remember_log(self, path: Path) -> None:
        self._kept_logs.append(path)
        while len(self._kept_logs) > KEEP_LOGS:
            old = self._kept_logs.pop(0)
            old.unlink(missing_ok=True)


def _make_fifos(logs: LogDir | None, token: str, owner: tuple[int, int] | None
                ) -> tuple[list[tuple[Path, str]], int]:
    """The control and acknowledgement FIFOs, in the state folder (the server's own: read-only
    inside, where a FIFO can still be opened; without one, a private temporary folder seen at
    the same path), given to the sandbox user `owner` when that is not the server's user; plus
    our write end of the control FIFO. Opened read-write, so it never waits for (or loses) a
    reader."""
    if logs is None:
        tmp = tempfile.mkdtemp(prefix="mlgym-shell-")
        logs = LogDir(Path(tmp), tmp)
    logs.host.mkdir(parents=True, exist_ok=True)
    fifos = [logs.path(f".shell-{token}.{name}") for name in ("ctl", "ack")]
    for host, _ in fifos:
        os.mkfifo(host, 0o600)
        if owner is not None and os.geteuid() == 0:
            os.chown(host, *owner, follow_symlinks=False)
    fd = os.open(fifos[0][0], os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    return fifos, fd


def _remove_fifos(fifos: list[tuple[Path, str]], private_dir: bool) -> None:
    for host, _ in fifos:
        host.unlink(missing_ok=True)
    if private_dir:
        with contextlib.suppress(OSError):
            fifos[0][0].parent.rmdir()
