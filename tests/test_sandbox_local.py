"""The `local` sandbox backend: isolation, limits, jobs, evaluation runs, with bubblewrap and
with its stand-in (nsbox.py, for machines without bubblewrap: every test runs on both), and the
loud plain fallback where no namespace can be made. Real bwrap, real namespaces, real
processes, real sockets."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import structlog

from conftest import require
from mlgym.env_server.sandbox import (
    STATE,
    WORKSPACE,
    Mount,
    SandboxConfig,
    SandboxPathError,
    create,
)
from mlgym.env_server.sandbox import nobwrap
from mlgym.env_server.sandbox.local import python_mounts

BWRAP = shutil.which("bwrap")


@pytest.fixture(params=["bwrap", "stand-in"])
def kind(request, monkeypatch, tmp_path) -> str:
    """Which program builds the sandbox: bubblewrap, or (bwrap hidden) nobwrap's stand-in."""
    if request.param == "bwrap":
        require(BWRAP is not None, "bubblewrap (bwrap) is not installed")
        return "bwrap"
    monkeypatch.setenv("MLGYM_BWRAP", str(tmp_path / "no-bwrap"))
    chosen = nobwrap.stand_in(nobwrap.not_found(str(tmp_path / "no-bwrap")))
    require(chosen.mode == "namespaces",
            f"the stand-in needs namespaces, which this machine refuses: {chosen.warning}")
    monkeypatch.setenv(nobwrap.ENV, "namespaces")
    return "stand-in"


@pytest.fixture(scope="session")
def task_venv(tmp_path_factory) -> Path:
    """A small venv (no pip) standing in for the task venv: made from the base Python, so the
    sandbox must mount both the venv and the installation behind it."""
    venv = tmp_path_factory.mktemp("taskenv") / "venv"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / f"python{version}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv


@pytest.fixture
def config(tmp_path, task_venv) -> SandboxConfig:
    ws = tmp_path / "workspace"
    ws.mkdir()
    return SandboxConfig(workspace=ws, python_env=task_venv, memory_mb=512, max_processes=64,
                         state_dir=tmp_path / "state")


@pytest.fixture
async def sandbox(config, kind):
    sb = create("local", config)
    await sb.start()
    yield sb
    await sb.stop()


async def test_shell_basics_inside(sandbox, config, task_venv, kind):
    r = await sandbox.exec(
        "id -un; pwd; echo $HOME; which python; python -c 'import sys; print(sys.prefix)'")
    assert r.exit_code == 0 and (r.warning is None) == (kind == "bwrap")
    venv = task_venv.resolve()
    assert r.output.split() == ["agent", WORKSPACE, "/home/agent", f"{venv}/bin/python", str(venv)]
    r = await sandbox.exec("mkdir -p src && cd src && export LR=0.1 && echo hi > note.txt")
    assert r.cwd == f"{WORKSPACE}/src"
    r = await sandbox.exec("echo $LR; cat note.txt; pwd")
    assert r.output == f"0.1\nhi\n{WORKSPACE}/src\n"
    assert (config.workspace / "src" / "note.txt").read_text() == "hi\n"
    assert sandbox.status()["isolated"] is (kind == "bwrap")
    assert sandbox.status()["stand_in"] == (None if kind == "bwrap" else "namespaces")
    r = await sandbox.exec("echo $OMP_WAIT_POLICY")  # idle torch threads sleep, not spin
    assert r.output.strip() == "PASSIVE"


async def test_host_secrets_other_workspaces_and_home_are_invisible(sandbox, tmp_path):
    secret = tmp_path / "tasks" / "someTask" / "secret" / "test_labels.csv"
    secret.parent.mkdir(parents=True)
    secret.write_text("id,label\n1,cat\n")
    other = tmp_path / "other_session" / "workspace"
    other.mkdir(parents=True)
    (other / "model.py").write_text("theirs")
    for path in [secret, secret.parent, other / "model.py", Path(__file__).resolve().parent.parent]:
        r = await sandbox.exec(f"cat {path} || ls {path}")
        assert r.exit_code != 0 and "No such file or directory" in r.output, path
    # /root holds at most the path down to the base Python installation; /home only the agent
    r = await sandbox.exec("command ls -A /home; command ls -A /root 2>/dev/null; ls /sys /work /opt 2>&1 | wc -l")
    listed = r.output.split()
    assert listed[0] == "agent"
    shown = python_mounts(sandbox.config.python_env)
    hidden = [p.name for p in Path("/root").iterdir()
              if not any(str(m).startswith(str(p)) for m in shown)]
    assert not set(listed) & set(hidden)
    r = await sandbox.exec("cat /etc/shadow; ls /etc | wc -l; grep -c . /etc/passwd")
    assert "No such file" in r.output
    assert int(r.output.split()[-1]) == 3  # our synthetic accounts only


async def test_read_only_mounts_and_system_dirs_cannot_be_written(sandbox, config, tmp_path):
    r = await sandbox.exec(f"touch /usr/x; touch {config.python_env}/x; echo > /etc/hosts; "
                           "touch /tmp/ok && echo tmp-writable")
    assert r.output.count("Read-only file system") >= 2 or "Permission denied" in r.output
    assert "tmp-writable" in r.output
    assert not (Path(config.python_env) / "x").exists()


async def test_no_network_unless_asked(config, kind):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = (f"python -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3); "
             "print('CONNECTED')\"")
    try:
        async with create("local", config) as sb:
            r = await sb.exec(probe, timeout=30)
            assert "CONNECTED" not in r.output and "ConnectionRefusedError" in r.output
            r = await sb.exec("cat /etc/resolv.conf", timeout=30)
            assert r.exit_code != 0
        config.network = True
        async with create("local", config) as sb:  # the same probe can succeed: it is a real test
            r = await sb.exec(probe, timeout=30)
            assert "CONNECTED" in r.output
    finally:
        server.close()


async def test_fork_bomb_is_contained_and_the_shell_recovers(sandbox):
    assert sandbox.status()["limits"]["processes"].startswith(("cgroup", "rlimit"))
    script = textwrap.dedent("""\
        import os, time
        n = 0
        try:
            for _ in range(500):
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
                n += 1
        except OSError as exc:
            print("fork refused after", n, exc.errno, flush=True)
        time.sleep(600)
        """)
    await sandbox.write_file("bomb.py", script.encode())
    r = await sandbox.exec("python bomb.py", timeout=3)
    assert r.timed_out
    line = next(ln for ln in r.output.splitlines() if ln.startswith("fork refused after"))
    assert int(line.split()[3]) < 64  # max_processes
    r = await sandbox.exec("bomb(){ bomb | bomb; }; bomb", timeout=3)  # the classic one
    assert r.timed_out
    for _ in range(50):  # killed processes may take a moment to be reaped
        r = await sandbox.exec("ps -e --no-headers -o stat | grep -vc '^Z'")
        if int(r.output.strip()) < 10:
            break
        await asyncio.sleep(0.1)
    assert r.exit_code == 0 and int(r.output.strip()) < 10, r.output
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


async def test_memory_hog_is_stopped_and_the_shell_survives(sandbox):
    r = await sandbox.exec("python -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))'",
                           timeout=60)
    assert r.exit_code != 0 and "1073741824" not in r.output
    assert "memory" in r.output.lower()  # "killed for exceeding ... memory" or MemoryError
    assert (await sandbox.exec("echo alive")).output == "alive\n"


async def test_file_api_is_confined_to_the_workspace(sandbox, config, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret")
    await sandbox.write_file(f"{WORKSPACE}/data/a.txt", b"hello")
    assert await sandbox.read_file("data/a.txt") == b"hello"
    assert (config.workspace / "data" / "a.txt").read_bytes() == b"hello"
    # the agent plants symlinks to host paths; the server must not follow them out
    await sandbox.exec(f"ln -s {outside} escape; ln -s {outside}/secret.txt file; ln -s ../.. up")
    for path in ["escape/secret.txt", "file", "up/outside/secret.txt", "../outside/secret.txt",
                 "/etc/passwd", f"{WORKSPACE}/../x"]:
        with pytest.raises(SandboxPathError):
            await sandbox.read_file(path)
    for path in ["escape/new.txt", "file", "/tmp/x", "../x"]:
        with pytest.raises(SandboxPathError):
            await sandbox.write_file(path, b"pwned")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "s3cret"


async def test_background_job_streams_and_keeps_its_output(sandbox):
    chunks: list[str] = []
    job = await sandbox.start_background(
        "for i in 1 2 3; do echo step $i; sleep 0.2; done; printf '10%%\\r100%%\\n'; exit 4",
        on_output=chunks.append)
    for _ in range(300):
        status = await sandbox.job_status(job)
        if not status["running"]:
            break
        await asyncio.sleep(0.1)
    assert status["exit_code"] == 4 and status["log_path"] == f"{STATE}/jobs/{job}.log"
    for _ in range(100):  # the tail loop may be one poll behind
        if "100%" in "".join(chunks):
            break
        await asyncio.sleep(0.1)
    assert "".join(chunks) == "step 1\nstep 2\nstep 3\n100%\n"
    assert await sandbox.job_output(job) == "step 1\nstep 2\nstep 3\n100%\n"
    assert await sandbox.job_output(job, offset=7) == "step 2\nstep 3\n100%\n"
    r = await sandbox.exec(f"tail -n 1 {status['log_path']}")
    assert "100%" in r.output


async def test_killing_a_job_kills_its_processes_but_not_the_shell(sandbox):
    job = await sandbox.start_background("sleep 1000 & sleep 1001; echo never")
    r = await sandbox.exec("sleep 0.3; ps -eo args")
    assert "sleep 1000" in r.output and "sleep 1001" in r.output
    # a long command in the shell does not block the kill
    long = asyncio.create_task(sandbox.exec("sleep 5; echo shell-done", timeout=30))
    await asyncio.sleep(0.3)
    await sandbox.kill_job(job)
    status = await sandbox.job_status(job)
    assert not status["running"] and status["exit_code"] == 137
    assert "shell-done" in (await long).output
    r = await sandbox.exec("ps -eo args")
    assert "sleep 100" not in r.output


async def test_a_dead_shell_is_replaced(sandbox):
    await sandbox.exec("mkdir -p keep && cd keep")
    r = await sandbox.exec("kill -9 $$", timeout=30)
    assert r.shell_restarted and r.exit_code == -1
    r = await sandbox.exec("pwd; echo works")
    assert r.output == f"{WORKSPACE}/keep\nworks\n" and not r.shell_restarted
    assert sandbox.status()["shell_restarts"] == 1


async def test_run_isolated_sees_only_its_mounts(sandbox, config, tmp_path):
    (config.workspace / "agent_file.txt").write_text("agent")
    task = tmp_path / "pristine"
    task.mkdir()
    (task / "evaluate.py").write_text(
        "import os, sys\n"
        "print('ws:', os.path.exists('/home/agent/workspace/agent_file.txt'))\n"
        "open('/eval/out/scores.json', 'w').write('{\"acc\": 1.0}')\n"
        "try:\n    open('/eval/task/evaluate.py', 'a')\n"
        "except OSError as e:\n    print('ro:', e.errno)\n")
    out = tmp_path / "out"
    out.mkdir()
    r = await sandbox.run_isolated(
        ["python", "/eval/task/evaluate.py"], timeout=60,
        mounts=[Mount(task, "/eval/task"), Mount(out, "/eval/out", writable=True)],
        cwd="/eval/task")
    assert r.exit_code == 0, r.output
    assert "ws: False" in r.output  # the agent's workspace is not there
    assert "ro: 30" in r.output  # EROFS
    assert (out / "scores.json").read_text() == '{"acc": 1.0}'
    r = await sandbox.run_isolated(["sleep", "1000"], timeout=1)
    assert r.timed_out and r.exit_code == 137


async def test_sandbox_dies_with_the_server(config, tmp_path, kind):
    """A server killed with SIGKILL leaves no sandbox process behind."""
    marker = f"4242.{os.getpid()}{secrets.randbelow(10**6):06d}"  # unique to this run
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from mlgym.env_server.sandbox import SandboxConfig, create
        async def main():
            sb = create("local", SandboxConfig(workspace=Path({str(config.workspace)!r})))
            await sb.start()
            await sb.start_background("sleep {marker}")
            await sb.exec("sleep {marker} &")
            print("ready", flush=True)
            await asyncio.sleep(1000)
        asyncio.run(main())
        """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        await _check_sandbox_dies_with(proc, marker)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _check_sandbox_dies_with(proc: asyncio.subprocess.Process, marker: str) -> None:

    def sleepers() -> int:
        n = 0
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and (p / "cmdline").read_text() == f"sleep\0{marker}\0":
                    n += 1
            except OSError:
                pass
        return n

    for _ in range(100):  # the job's sleep may still be starting
        if sleepers() == 2:
            break
        await asyncio.sleep(0.1)
    assert sleepers() == 2
    proc.kill()
    await proc.wait()
    for _ in range(100):
        if sleepers() == 0:
            break
        await asyncio.sleep(0.1)
    assert sleepers() == 0


async def test_plain_fallback_runs_unisolated_at_host_paths_and_says_so(config, tmp_path,
                                                                         monkeypatch):
    """No bubblewrap and no namespaces (forced here with MLGYM_NO_BWRAP=plain): plain
    processes, host paths used consistently (shell, workspace_inside, the file API, the
    evaluation run), one warning per process saying what is not isolated."""
    monkeypatch.setenv(nobwrap.ENV, "plain")
    missing = tmp_path / "no" / "bwrap"
    host_ws = str(config.workspace.resolve())
    with structlog.testing.capture_logs() as logs:
        sb = create("local", config, bwrap=missing)
        second = create("local", config, bwrap=missing)
        await sb.start()
        await second.start()
        try:
            r = await sb.exec("pwd; echo $HOME; echo hi > note.txt")
            status = sb.status()
            assert await sb.read_file(f"{host_ws}/note.txt") == b"hi\n"  # its inside path
            assert await sb.read_file(f"{WORKSPACE}/note.txt") == b"hi\n"  # the usual one
            with pytest.raises(SandboxPathError):
                await sb.read_file(f"{host_ws}/../x")
            task = tmp_path / "task"
            task.mkdir()
            (task / "run.py").write_text("import os; print(os.getcwd())")
            iso = await sb.run_isolated(["python", "/eval/run.py"], timeout=60,
                                        mounts=[Mount(task, "/eval")], cwd="/eval")
        finally:
            await sb.stop()
            await second.stop()
    assert status["isolated"] is False and status["stand_in"] == "plain"
    assert "WITHOUT ISOLATION" in status["warning"] and nobwrap.INSTALL in status["warning"]
    assert r.warning == status["warning"] and sb.workspace_inside == host_ws
    assert r.output.split() == [host_ws, host_ws] and r.cwd == host_ws
    assert iso.exit_code == 0 and iso.output.strip() == str(task.resolve()) and iso.warning
    said = [e for e in logs if e["event"] == "sandbox_not_isolated"]
    assert len(said) == 1 and said[0]["log_level"] == "warning"  # once, for two sandboxes


async def test_stand_in_is_chosen_and_named_when_bubblewrap_is_missing(config, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv(nobwrap.ENV, "auto")
    chosen = nobwrap.stand_in(nobwrap.not_found(str(tmp_path / "no-bwrap")))
    require(chosen.mode == "namespaces",
            f"the stand-in needs namespaces, which this machine refuses: {chosen.warning}")
    assert "stand-in" in chosen.warning and nobwrap.INSTALL in chosen.warning
    assert "WITHOUT ISOLATION" not in chosen.warning
    sb = create("local", config, bwrap=tmp_path / "no-bwrap")
    async with sb:
        r = await sb.exec("pwd; id -un")
    assert r.output.split() == [WORKSPACE, "agent"] and r.warning == chosen.warning
    assert sb.status()["bwrap"] == chosen.launcher


def test_stand_in_refuses_what_it_cannot_do(tmp_path):
    """nsbox.py is given bubblewrap's options; one it does not know is an error that names
    it, never silently ignored (a dropped --ro-bind would widen the sandbox)."""
    nsbox = [sys.executable, "-I", "-S", str(nobwrap.NSBOX)]
    cases = [(["--seccomp", "3", "--", "true"], "unsupported option '--seccomp'"),
             (["--cap-drop", "CAP_NET_RAW", "--", "true"], "only ALL"),
             (["--unshare-all"], "no command given")]
    if nobwrap.stand_in(nobwrap.not_found(str(tmp_path / "no-bwrap"))).mode == "namespaces":  # gets that far
        cases.append((["--ro-bind", "/nonexistent-src", "/x", "--", "true"],
                      "cannot open bind source /nonexistent-src"))
    for args, why in cases:
        r = subprocess.run([*nsbox, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and why in r.stderr, (args, r.stderr)


THREADS_UNTIL_REFUSED = (
    "python -c 'import threading\nev = threading.Event()\ntry:\n"
    "    [threading.Thread(target=ev.wait, daemon=True).start() for _ in range(500)]\n"
    "except RuntimeError:\n    print(\"refused\")\nev.set()'")


async def test_a_command_that_hits_the_process_limit_loses_what_it_started(sandbox):
    """The pids cgroup counts every refused fork: a command that drove the sandbox to its
    limit loses all it started, its `&` jobs too (a bomb may be a job, or stall below the
    shell's own purge threshold), with a note; jobs from before it are spared."""
    require(sandbox.status()["limits"]["processes"].startswith("cgroup"),
            "no writable pids cgroup on this machine")
    await sandbox.exec("sleep 2001 &")
    r = await sandbox.exec(f"sleep 2002 & {THREADS_UNTIL_REFUSED}", timeout=60)
    assert "refused" in r.output and "hit its process limit" in r.output, r.output
    ps = (await sandbox.exec("ps -eo args")).output
    assert "sleep 2001" in ps and "sleep 2002" not in ps, ps
    r = await sandbox.exec("sleep 2003 & echo calm")  # under the limit: nothing is killed
    assert "hit its process limit" not in r.output
    assert "sleep 2003" in (await sandbox.exec("ps -eo args")).output


async def test_each_sandbox_has_a_cpu_share_of_its_own(sandbox):
    """Its processes sit in a cpu cgroup of its own (seen from the host), so a sandbox running
    many busy processes in sessions of their own gets one share, not one per session
    (measured: `mlgym bench cpu_share`)."""
    share = sandbox.status()["limits"]["cpu_share"]
    require(share.startswith("cgroup"), f"no writable cpu cgroup on this machine: {share}")
    seconds = f"1{secrets.randbelow(10**6):06d}"
    await sandbox.exec(f"setsid sleep {seconds} &")
    for _ in range(100):  # `&` returns before the job has exec'd sleep
        pids = [e.name for e in os.scandir("/proc")
                if e.name.isdigit() and _cmdline(e.name) == f"sleep {seconds} "]
        if pids:
            break
        await asyncio.sleep(0.05)
    assert pids, "the sandbox's sleep is not seen on the host"
    lines = Path(f"/proc/{pids[0]}/cgroup").read_text().splitlines()
    v1 = [ln for ln in lines if "cpu" in ln.split(":")[1].split(",")]
    cpu = v1 or [ln for ln in lines if ln.startswith("0::")]  # v1's cpu, else v2's one line
    assert cpu and "/mlgym-" in cpu[0], lines


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_the_wrapper_never_calls_what_the_agent_redefines(sandbox):
    """The classic bomb redefines `:`; the shell's own loops (waiting for the watcher, the
    watcher itself) must not call it, or every later command re-fires the bomb."""
    await sandbox.exec(":() { echo called >> /tmp/colon-calls; }")
    r = await sandbox.exec("(sleep 1001 &); echo left")  # the watcher kills the leftover
    assert "stopped when it ended" in r.output
    r = await sandbox.exec("sleep 30", timeout=1)  # an interrupt: the next command syncs
    r = await sandbox.exec("cat /tmp/colon-calls 2>&1; unset -f :")
    assert "No such file" in r.output, r.output


async def test_cpu_time_and_file_size_limits(config, kind):
    config.cpu_seconds = 2
    config.file_size_mb = 1
    async with create("local", config) as sb:
        r = await sb.exec("python -c 'while True: pass'", timeout=120)
        assert not r.timed_out and r.exit_code == 128 + 24, r.output  # SIGXCPU
        r = await sb.exec("head -c 2000000 /dev/zero > big.bin; echo rc=$?; stat -c %s big.bin")
        assert "rc=153" in r.output  # 128 + SIGXFSZ
        assert r.output.split()[-1] == str(1024 * 1024)
        assert (await sb.exec("echo alive")).output == "alive\n"


async def test_a_bubblewrap_that_cannot_work_here_is_replaced(config, tmp_path, monkeypatch):
    """In a container without privileges bwrap is installed but refused namespaces: the
    sandbox must notice at start and fall back like when bwrap is missing, saying why. (The
    refusing bwrap is a script that fails as bwrap fails there: a real one cannot be made to.)"""
    refused = tmp_path / "bwrap"
    refused.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                       "exit 1\n")
    refused.chmod(0o755)
    monkeypatch.setenv(nobwrap.ENV, "plain")  # the fallback itself is tested above
    sb = create("local", config, bwrap=refused)
    async with sb:
        r = await sb.exec("pwd")
    assert sb.stand_in is not None and sb.stand_in.mode == "plain"
    assert r.warning.startswith(f"bubblewrap ({refused}) cannot make a sandbox here (bwrap: No "
                                "permissions to create new namespace)")
    assert r.output.strip() == str(config.workspace.resolve())


def test_the_stand_in_survives_its_home_being_removed(tmp_path, monkeypatch):
    """The launcher lives under $MLGYM_HOME/bin; a process that changes or loses that folder
    (tests do) gets a new launcher, not a dead path."""
    missing = nobwrap.not_found(str(tmp_path / "no-bwrap"))
    monkeypatch.setenv("MLGYM_HOME", str(tmp_path / "home1"))
    first = nobwrap.stand_in(missing)
    require(first.mode == "namespaces",
            f"the stand-in needs namespaces, which this machine refuses: {first.warning}")
    shutil.rmtree(tmp_path / "home1")
    monkeypatch.setenv("MLGYM_HOME", str(tmp_path / "home2"))
    again = nobwrap.stand_in(missing)
    assert again.launcher != first.launcher and os.access(again.launcher, os.X_OK)
