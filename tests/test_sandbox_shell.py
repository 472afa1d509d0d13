"""The persistent shell driver against a real bash (no sandbox around it: the driver is
backend-neutral and only needs the two streams)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlgym.env_server.sandbox.shell import LogDir, ShellDriver, ShellLost, kill_host_session


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
async def shell(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        "bash", "--noprofile", "--norc", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    logs = tmp_path / "logs"
    driver = ShellDriver(proc.stdout, proc.stdin, LogDir(logs, str(logs)), output_limit=2000,
                         alive=lambda: proc.returncode is None)
    await driver.start(str(tmp_path))
    yield driver
    kill_host_session(proc.pid)  # the shell and whatever it left in other process groups
    proc.stdin.close()
    await proc.wait()
    while await asyncio.wait_for(proc.stdout.read(65_536), 10):  # drain: the transport closes
        pass


async def test_cwd_and_environment_persist(shell, tmp_path):
    (tmp_path / "sub").mkdir()
    r = await shell.run("cd sub && export GREETING=hello && FOO=bar && alias ll='ls -l'")
    assert r.exit_code == 0 and r.cwd == str(tmp_path / "sub")
    r = await shell.run("echo $GREETING $FOO; pwd")
    assert r.output == f"hello bar\n{tmp_path / 'sub'}\n"
    assert shell.cwd == str(tmp_path / "sub")


async def test_command_text_reaches_bash_exactly(shell, tmp_path):
    # the command travels as one $'...' word: quotes, backslashes, control characters, the
    # wrapper's own markers and multi-line scripts must all arrive unchanged
    text = "a'b\"c\\d \\' $'x' \t tab \x1b[1m __MLGYM_END_x__ \u65e5\u672c \U0001f642 %s"
    (tmp_path / "expected.txt").write_text(text)
    r = await shell.run("cat > got.txt <<'EOF'\n" + text + "\nEOF\ncmp <(printf '%s\\n' \"$(cat got.txt)\") "
                        "<(printf '%s\\n' \"$(cat expected.txt)\") && echo same")
    assert r.output.strip().endswith("same"), r.output
    r = await shell.run("for i in 1 2; do\n  echo \"line $i\"\ndone\necho 'it''s'\r")
    assert r.output == "line 1\nline 2\nits\n" and r.exit_code == 0


async def test_exit_codes_and_output_without_trailing_newline(shell):
    assert (await shell.run("false")).exit_code == 1
    assert (await shell.run("bash -c 'exit 7'")).exit_code == 7
    r = await shell.run("printf 'no newline'")
    assert r.output == "no newline" and r.exit_code == 0
    r = await shell.run("echo out; echo err >&2; (exit 3)")
    assert r.output == "out\nerr\n" and r.exit_code == 3


async def test_output_that_looks_like_the_frame_is_just_output(shell):
    fake = "__MLGYM_END_0123456789abcdef__0:/tmp__MLGYM_DONE_0123456789abcdef__"
    r = await shell.run(f"echo '{fake}'; echo '__MLGYM_START_x__'; echo after")
    assert r.output == f"{fake}\n__MLGYM_START_x__\nafter\n"
    r = await shell.run("cat <<'EOF'\nquotes ' \" $HOME `x`\nEOF")
    assert r.output == "quotes ' \" $HOME `x`\n"


async def test_exit_is_refused_and_the_shell_stays(shell):
    r = await shell.run("exit 3")
    assert r.exit_code == 1 and "refused" in r.output
    assert (await shell.run("echo still here")).output == "still here\n"


async def test_stdin_is_dev_null_so_nothing_waits_for_input(shell):
    r = await shell.run("read -r line; echo \"read rc=$?\"; cat; python3 -c 'input()'", timeout=60)
    assert "read rc=1" in r.output
    assert "EOFError" in r.output
    assert not r.timed_out


async def test_timeout_kills_the_whole_process_group_and_the_shell_survives(shell, tmp_path):
    pidfile = tmp_path / "pids"
    r = await shell.run(
        f"sleep 1000 & echo $! > {pidfile}; bash -c 'sleep 1000' & echo $! >> {pidfile}; "
        "sleep 1000 | cat", timeout=1)
    assert r.timed_out and r.interrupted and r.exit_code != 0
    assert "timed out after 1 s" in r.output
    assert r.duration_s < 60  # not the 1000 s of sleep
    for pid in map(int, pidfile.read_text().split()):
        for _ in range(100):
            if not alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not alive(pid), f"process {pid} started by the timed-out command still runs"
    r = await shell.run("echo next")
    assert r.output.endswith("next\n") and r.exit_code == 0  # maybe after a job notice


async def test_timeout_stops_builtin_loops_and_command_substitutions(shell):
    r = await shell.run("while :; do :; done; echo not-reached", timeout=1)
    assert r.timed_out and "not-reached" not in r.output
    r = await shell.run("x=$(sleep 1000); echo not-reached", timeout=1)
    assert r.timed_out and "not-reached" not in r.output
    assert (await shell.run("echo ok")).output == "ok\n"


async def test_jobs_from_earlier_commands_survive_a_timeout(shell, tmp_path):
    r = await shell.run("sleep 1000 & echo $!")
    survivor = int(r.output.strip())
    r = await shell.run("sleep 1000", timeout=1)
    assert r.timed_out
    assert alive(survivor)
    r = await shell.run("jobs; kill %1")
    assert "sleep 1000" in r.output and "__mlgym" not in r.output


async def test_interrupt_from_another_task(shell):
    task = asyncio.create_task(shell.run("echo started; sleep 1000"))
    while shell._current is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert await shell.interrupt()
    r = await task
    assert r.interrupted and not r.timed_out and "started" in r.output
    assert "interrupted" in r.output
    assert not await shell.interrupt()  # nothing runs now
    assert (await shell.run("echo fine")).output == "fine\n"


async def test_progress_bars_collapse(shell):
    r = await shell.run(r"for i in 1 2 3 4; do printf 'loading %d%%\r' $((i*25)); done; echo; "
                        r"printf 'a\r\nb\n'")
    assert r.output == "loading 100%\na\nb\n"


async def test_huge_output_is_cut_streamed_and_logged_without_growing_memory(shell):
    streamed = 0

    def count(chunk: str) -> None:
        nonlocal streamed
        streamed += len(chunk)

    await shell.run("yes | head -c 1000000 > /dev/null")  # warm-up
    before = rss_kb()
    r = await shell.run("yes abcdefghi | head -c 100000000; echo; echo THE-END", timeout=240,
                        on_output=count)
    growth_mb = (rss_kb() - before) / 1024
    assert r.exit_code == 0
    assert r.cut_chars > 99_000_000
    assert len(r.output) < 2000 + 400
    assert r.output.startswith("abcdefghi\n")
    assert r.output.rstrip().endswith("THE-END")
    assert f"{r.cut_chars} characters cut" in r.output
    # the server keeps at most 16 MiB of one command's output on disk, whatever is printed
    assert "the first 16 MiB of the output" in r.output
    log = Path(r.full_output_path).read_bytes()
    assert 16 * 2**20 <= len(log) < 16 * 2**20 + 200
    assert log.startswith(b"abcdefghi\n") and b"[output log stopped at 16 MiB" in log[-200:]
    assert growth_mb < 50, f"server memory grew by {growth_mb:.0f} MB"
    assert streamed < 1_100_000  # live output capped at stream_limit


async def test_a_killed_shell_raises_shell_lost(shell):
    await shell.run("sleep 1000 &")  # holds the shell's output pipe open after it dies
    with pytest.raises(ShellLost):
        await shell.run("kill -9 $$")
    assert shell.lost


async def test_the_shell_resists_common_ways_of_breaking_it(shell):
    r = await shell.run("set -e; false; echo went-on")  # set -e cannot end the shell
    assert r.output == "went-on\n"
    assert (await shell.run("false; echo next")).output == "next\n"
    r = await shell.run("unset -f __mlgym_run; __mlgym_body() { :; }")
    assert "readonly function" in r.output
    await shell.run("trap - USR1")  # the interrupt trap comes back with every command
    r = await shell.run("sleep 1000", timeout=1)
    assert r.timed_out
    r = await shell.run('echo "unclosed')
    assert r.exit_code == 2 and "unexpected EOF" in r.output
    assert (await shell.run("echo fine")).output == "fine\n"


async def test_interrupts_right_as_commands_start_are_not_lost(shell):
    for _ in range(10):
        task = asyncio.create_task(shell.run("sleep 1000"))
        while shell._current is None:
            await asyncio.sleep(0)
        assert await shell.interrupt()
        r = await task
        assert r.interrupted and r.duration_s < 60
        r = await shell.run("echo next")  # never hit by a late kill meant for the one before
        assert r.output.endswith("next\n") and r.exit_code == 0 and not r.interrupted


async def test_a_killed_watcher_is_started_again(shell):
    r = await shell.run("kill -9 $__mlgym_w; until __mlgym_gone $__mlgym_w; do sleep 0.01; done; "
                        "echo $__mlgym_w")
    old = r.output.split()[-1]
    r = await shell.run("sleep 1000", timeout=1)
    assert r.timed_out and r.duration_s < 60
    r = await shell.run("echo $__mlgym_w; jobs; echo $!")
    assert r.output.split()[0] != old and "__mlgym" not in r.output


async def test_the_control_fifos_are_gone_from_the_log_folder(shell, tmp_path):
    await shell.run("true")
    assert not list((tmp_path / "logs").glob(".shell-*"))
