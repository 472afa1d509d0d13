"""A stand-in for bubblewrap, used by the `local` sandbox where `bwrap` is not installed.

It reads the same options `local.py` gives bubblewrap (the subset it uses, listed in
`main`'s parser) and builds the same sandbox with Linux namespaces: user (where the kernel
allows it; as root without one), mount, pid, ipc, uts, cgroup and network; a new root on a
tmpfs with the requested binds, /proc, /dev and tmpfs; capabilities dropped, no new
privileges, the command run as pid 2 under a reaping pid 1, everything killed when its parent
dies. So the agent sees exactly what bubblewrap would show it: its workspace at
/home/agent/workspace and nothing of the host it was not given.

What it is not: bubblewrap's years of review. It is small, written for this one caller, and
run only when bubblewrap is missing (nobwrap.py decides, and says so in a warning).

Runs as a script with only the standard library (`python -I -S nsbox.py OPTIONS -- COMMAND`),
so it starts in ~20 ms and imports nothing of mlgym. Exit status: the command's, 128+N when
it was killed by signal N, 1 with a message on stderr when the sandbox could not be made.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER = 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC = 32, 1024, 2048, 4096, 8192, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SIGKILL, SIGPIPE, SIGXFSZ = 9, 13, 25
SIG_DFL = 0
CAP_LAST = 63  # capabilities above the kernel's last one are refused with EINVAL (ignored)
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}
# statvfs flag -> mount flag: a read-only remount must repeat these (the kernel locks them
# on mounts that came from a more privileged user namespace)
KEPT_FLAGS = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
              os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME,
              os.ST_RELATIME: MS_RELATIME}
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")
NEWROOT = "/tmp"  # the new root is a tmpfs mounted here, in the private mount namespace

_libc = ctypes.CDLL(None, use_errno=True)  # the interpreter links libc: its symbols are here


class Refused(Exception):
    """The sandbox cannot be made as asked (bad option, missing source, a refused syscall)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        raise Refused(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {src or fstype} on {dst}")


def _prctl(option: int, arg: int, arg3: int = 0) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                       ctypes.c_ulong(0))


# -- the options ----------------------------------------------------------------------------

class Op:
    """One filesystem step, in the order given: bind, dir, symlink, tmpfs, proc, dev, file."""

    def __init__(self, kind: str, dest: str, source: str = "", fd: int = -1,
                 mode: int | None = None, size: int | None = None) -> None:
        self.kind, self.dest, self.source = kind, dest, source
        self.fd = fd  # bind: an O_PATH descriptor of `source`; data ops: the data's pipe
        self.mode, self.size = mode, size


class Options:
    """What to build and run. (Plain classes: dataclasses would cost a few ms of start-up.)"""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.user = "auto"  # "yes" (--unshare-user), "try" (--unshare-all), "auto": if not root
        self.uid: int | None = None
        self.gid: int | None = None
        self.namespaces: set[str] = set()
        self.hostname = ""
        self.chdir = ""
        self.env: dict[str, str] = dict(os.environ)
        self.die_with_parent = False
        self.new_session = False
        self.command: list[str] = []


ALL = {"ipc", "pid", "net", "uts", "cgroup"}


def parse(argv: list[str]) -> Options:
    """bubblewrap's options as `local.py` uses them; anything else is refused by name."""
    o = Options()
    args = list(argv)
    pending: dict[str, int] = {}
    binds = {"--bind": "bind", "--ro-bind": "ro-bind", "--dev-bind": "dev-bind"}
    while args:
        a = args.pop(0)

        def take(n: int) -> list[str]:
            if len(args) < n:
                raise Refused(f"{a} needs {n} argument(s)")
            return [args.pop(0) for _ in range(n)]

        if a == "--" or not a.startswith("--"):  # the command begins
            o.command = args if a == "--" else [a, *args]
            break
        if a == "--args":
            fd = int(take(1)[0])
            with os.fdopen(fd, "rb") as f:
                blob = f.read()
            args = [x.decode() for x in blob.split(b"\0")[:-1]] + args
        elif a in binds or a.removesuffix("-try") in binds:
            src, dst = take(2)
            if a.endswith("-try") and not os.path.exists(src):
                continue
            o.ops.append(Op(binds[a.removesuffix("-try")], dst, src))
        elif a in ("--dir", "--tmpfs", "--proc", "--dev", "--remount-ro"):
            o.ops.append(Op(a[2:], take(1)[0], mode=pending.pop("perms", None),
                            size=pending.pop("size", None)))
        elif a == "--symlink":
            target, dst = take(2)
            o.ops.append(Op("symlink", dst, target))
        elif a in ("--file", "--ro-bind-data", "--bind-data"):
            fd, dst = take(2)
            o.ops.append(Op(a[2:], dst, fd=int(fd), mode=pending.pop("perms", None)))
        elif a == "--chmod":
            mode, dst = take(2)
            o.ops.append(Op("chmod", dst, mode=int(mode, 8)))
        elif a == "--perms":
            pending["perms"] = int(take(1)[0], 8)
        elif a == "--size":
            pending["size"] = int(take(1)[0])
        elif a == "--unshare-all":
            o.namespaces |= ALL
            o.user = "try" if o.user == "auto" else o.user
        elif a in ("--unshare-user", "--unshare-user-try"):
            o.user = "yes" if a == "--unshare-user" else "try"
        elif a.startswith("--unshare-") and a[10:].removesuffix("-try") in ALL:
            o.namespaces.add(a[10:].removesuffix("-try"))
        elif a == "--share-net":
            o.namespaces.discard("net")
        elif a in ("--uid", "--gid"):
            setattr(o, a[2:], int(take(1)[0]))
        elif a == "--hostname":
            o.hostname = take(1)[0]
        elif a == "--chdir":
            o.chdir = take(1)[0]
        elif a == "--clearenv":
            o.env = {}
        elif a == "--setenv":
            k, v = take(2)
            o.env[k] = v
        elif a == "--unsetenv":
            o.env.pop(take(1)[0], None)
        elif a == "--die-with-parent":
            o.die_with_parent = True
        elif a == "--new-session":
            o.new_session = True
        elif a == "--cap-drop":
            if take(1)[0].upper() != "ALL":
                raise Refused("--cap-drop: only ALL is supported")
        else:
            raise Refused(f"unsupported option {a!r}")
    if not o.command:
        raise Refused("no command given (OPTIONS -- COMMAND ...)")
    return o


# -- namespaces -----------------------------------------------------------------------------

def enter_namespaces(o: Options) -> bool:
    """unshare(2) into new namespaces; returns whether a user namespace was made. Without
    root, a mount namespace needs a user namespace; as root one is made when asked to or
    `--unshare-all` found it possible."""
    flags = CLONE_NEWNS
    for name, bit in (("ipc", CLONE_NEWIPC), ("pid", CLONE_NEWPID), ("net", CLONE_NEWNET),
                      ("uts", CLONE_NEWUTS)):
        if name in o.namespaces:
            flags |= bit
    if "cgroup" in o.namespaces and os.path.exists("/proc/self/ns/cgroup"):
        flags |= CLONE_NEWCGROUP
    want_user = o.user == "yes" or os.geteuid() != 0 or o.uid is not None
    uid, gid = os.geteuid(), os.getegid()
    if want_user or o.user == "try":
        if _libc.unshare(flags | CLONE_NEWUSER) == 0:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{o.uid if o.uid is not None else uid} {uid} 1")
            _write("/proc/self/gid_map", f"{o.gid if o.gid is not None else gid} {gid} 1")
            return True
        if want_user:
            raise Refused(f"cannot make a user namespace: {os.strerror(ctypes.get_errno())}")
    _check(_libc.unshare(flags), "unshare (mount, pid, ipc, uts, net namespaces)")
    return False


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class _IfReq(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short), ("pad", ctypes.c_char * 22)]


def loopback_up() -> None:
    """A new network namespace has `lo` down; bubblewrap brings it up, so do we. (ctypes, not
    the socket module: importing that costs more than the rest of the set-up.)"""
    fd = _libc.socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM | SOCK_CLOEXEC
    if fd < 0:
        raise Refused(f"socket: {os.strerror(ctypes.get_errno())}")
    try:
        req = _IfReq(b"lo")
        _check(_libc.ioctl(fd, SIOCGIFFLAGS, ctypes.byref(req)), "ioctl(SIOCGIFFLAGS, lo)")
        req.flags |= IFF_UP
        _check(_libc.ioctl(fd, SIOCSIFFLAGS, ctypes.byref(req)), "ioctl(SIOCSIFFLAGS, lo)")
    finally:
        os.close(fd)


# -- the new root ---------------------------------------------------------------------------

def open_sources(o: Options) -> None:
    """Open every bind source first (following symlinks, as bubblewrap does), so mounting the
    new root over NEWROOT cannot hide one that lives there."""
    for op in o.ops:
        if op.kind in ("bind", "ro-bind", "dev-bind"):
            try:
                op.fd = os.open(op.source, os.O_PATH | os.O_CLOEXEC)
            except OSError as exc:
                raise Refused(f"cannot open bind source {op.source}: {exc.strerror}") from None


def _inside(dest: str) -> str:
    return os.path.normpath(NEWROOT + "/" + dest)


def _mount_point(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _mounts_under(path: str) -> list[str]:
    """Mount points at or below `path`, from this namespace's mountinfo, outermost first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            point = point.encode().decode("unicode_escape")  # \040 for spaces etc.
            if point == path or point.startswith(path.rstrip("/") + "/"):
                out.append(point)
    return out


def remount(path: str, flags: int) -> None:
    """Add `flags` (read-only, nosuid, nodev) to a recursive bind and every mount under it,
    keeping each mount's own locked flags."""
    for point in _mounts_under(path) if os.path.isdir(path) else [path]:
        try:
            st = os.statvfs(point)
        except OSError:
            continue
        want = MS_REMOUNT | MS_BIND | flags
        for stflag, msflag in KEPT_FLAGS.items():
            if st.f_flag & stflag:
                want |= msflag
        if st.f_flag & os.ST_RDONLY:
            want |= MS_RDONLY  # never make a read-only mount writable
        try:
            _mount(None, point, None, want)
        except Refused:
            if point == path:
                raise


def build_root(o: Options, pidns: bool) -> None:
    """Mount a tmpfs at NEWROOT and lay the sandbox out in it, in the order of the options."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
    _mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for op in o.ops:
        dst = _inside(op.dest)
        if op.kind in ("bind", "ro-bind", "dev-bind"):
            _mount_point(dst, os.path.isdir(f"/proc/self/fd/{op.fd}"))
            flags = MS_BIND | MS_REC
            _mount(f"/proc/self/fd/{op.fd}", dst, None, flags)
            os.close(op.fd)
            if op.kind != "dev-bind":
                remount(dst, MS_NOSUID | MS_NODEV | (MS_RDONLY if op.kind == "ro-bind" else 0))
        elif op.kind == "dir":
            os.makedirs(dst, exist_ok=True)
            if op.mode is not None:
                os.chmod(dst, op.mode)
        elif op.kind == "symlink":
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(op.source, dst)
        elif op.kind == "tmpfs":
            os.makedirs(dst, exist_ok=True)
            opts = f"mode={op.mode if op.mode is not None else 0o755:o}"
            opts += f",size={op.size}" if op.size else ""
            _mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, opts)
        elif op.kind == "proc":
            make_proc(dst, pidns)
        elif op.kind == "dev":
            make_dev(dst)
        elif op.kind in ("file", "ro-bind-data", "bind-data"):
            _mount_point(dst, False)
            with os.fdopen(op.fd, "rb") as src, open(dst, "wb") as out:
                out.write(src.read())
            os.chmod(dst, op.mode if op.mode is not None else 0o644)
            if op.kind != "file":
                _mount(dst, dst, None, MS_BIND)
                remount(dst, MS_NOSUID | MS_NODEV | (MS_RDONLY if op.kind == "ro-bind-data" else 0))
        elif op.kind == "chmod":
            os.chmod(dst, op.mode or 0)
        elif op.kind == "remount-ro":
            remount(dst, MS_RDONLY)


def make_proc(dst: str, pidns: bool) -> None:
    """/proc, with the kernel's knobs read-only as bubblewrap leaves them (they matter where
    the sandbox runs as root: without a user namespace, uid 0 may write many sysctls)."""
    os.makedirs(dst, exist_ok=True)
    if pidns:
        _mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        _mount("/proc", dst, None, MS_BIND | MS_REC)
    for knob in PROC_READ_ONLY:
        path = f"{dst}/{knob}"
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            remount(path, MS_RDONLY | MS_NOSUID | MS_NODEV)


def make_dev(dst: str) -> None:
    """A minimal /dev, as bubblewrap's --dev: a few host nodes bound in, shm, pts, links."""
    os.makedirs(dst, exist_ok=True)
    _mount("tmpfs", dst, "tmpfs", MS_NOSUID, "mode=0755")
    for name in DEV_NODES:
        if os.path.exists(f"/dev/{name}"):
            _mount_point(f"{dst}/{name}", False)
            _mount(f"/dev/{name}", f"{dst}/{name}", None, MS_BIND)
    os.makedirs(f"{dst}/shm")
    os.makedirs(f"{dst}/pts")
    try:
        _mount("devpts", f"{dst}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=620")
    except Refused:
        pass  # no pseudo-terminals then; nothing here needs one
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{dst}/{name}")


def enter_root() -> None:
    """Make NEWROOT the root: move it over / and chroot into it (the host's tree is left
    behind, unreachable without capabilities)."""
    os.chdir(NEWROOT)
    _mount(NEWROOT, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


# -- privileges -----------------------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_privileges() -> None:
    """Empty the bounding and ambient sets, then this process's own capabilities; forbid
    gaining any back (setuid binaries, file capabilities)."""
    for cap in range(CAP_LAST + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(no_new_privs)")
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")


# -- processes ------------------------------------------------------------------------------

def _status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def wait_for(pid: int, reap_all: bool) -> int:
    """Wait for `pid` (as pid 1, reaping every orphan meanwhile); its exit status."""
    while True:
        try:
            got, st = os.waitpid(-1 if reap_all else pid, 0)
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if got == pid:
            return _status(st)


def run(o: Options) -> int:
    if o.die_with_parent:
        _prctl(PR_SET_PDEATHSIG, SIGKILL)
    enter_namespaces(o)
    open_sources(o)  # in the new mount namespace: its copies of the mounts can be bound
    pidns = "pid" in o.namespaces
    init = os.fork() if pidns else 0
    if init:  # outside: wait for the sandbox's pid 1
        for op in o.ops:
            if op.fd >= 0:
                os.close(op.fd)
        return wait_for(init, reap_all=False)
    if o.die_with_parent:
        _prctl(PR_SET_PDEATHSIG, SIGKILL)
    build_root(o, pidns)
    if "net" in o.namespaces:
        loopback_up()
    if o.hostname:
        name = o.hostname.encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")
    enter_root()
    if o.chdir:
        os.chdir(o.chdir)
    drop_privileges()
    _prctl(PR_SET_DUMPABLE, 0)
    child = os.fork() if pidns else 0
    if child:  # pid 1: reap until the command ends
        return wait_for(child, reap_all=True)
    for sig in (SIGPIPE, SIGXFSZ):  # Python ignores these; an exec would keep them ignored
        _libc.signal(sig, SIG_DFL)
    if o.new_session:
        os.setsid()
    if o.die_with_parent:
        _prctl(PR_SET_PDEATHSIG, SIGKILL)
    _prctl(PR_SET_DUMPABLE, 1)
    os.execvpe(o.command[0], o.command, o.env)


def main(argv: list[str]) -> int:
    try:
        o = parse(argv)
        return run(o)
    except (Refused, OSError) as exc:
        print(f"nsbox: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
