"""OS confinement for a worker process, applied in the child before untrusted code runs.

Python cannot confine code inside one process, so a worker's confinement is
its process boundary plus what the kernel offers. ``apply()`` runs in the
worker child (the fork server's child, or a plain subprocess) and returns a
report of what was *actually* applied; every step that fails is reported as
not applied, with the kernel's reason. Nothing here ever claims more.

By power level:

- every level: scrubbed environment, cwd = workdir, umask 077, rlimits
  (no core dumps, bounded open files), no inherited fds beyond 0/1/2 and
  the two protocol pipes, and the worker's cgroup (memory and task budget)
  when it has one;
- NONE, ENDO, CUSTOM: additionally its own PID namespace (pid 1, alone),
  IPC and mount namespaces, a new network namespace (no interfaces but a
  down loopback), a size-capped tmpfs as its scratch workdir, Landlock
  (read-only: the Python installation, the worker's own packages and the
  bundle folder; read-write: the workdir; TCP bind/connect denied; abstract
  Unix sockets and signals scoped to the worker), the seccomp policy of
  ``workers.syscalls`` (compiled by libseccomp), no_new_privs, an
  address-space cap, and all capabilities dropped;
- HOST: the basics only — the user chose to trust it.

``probe()`` says what this machine supports, by trying it in a throwaway
forked child (unsharing in the daemon itself would be wrong).

Linux x86_64 syscall numbers are used for Landlock, and the seccomp policy
is checked there only; elsewhere those steps report themselves as
unsupported.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys
from pathlib import Path
from typing import Any

from . import cgroups
from .limits import WorkerLimits as WorkerLimitsJSON

__all__ = ["LEVELS", "CONFINED_LEVELS", "apply", "probe", "scrubbed_env", "worker_packages"]

LEVELS = ("NONE", "ENDO", "HOST", "CUSTOM")
#: Levels that get no network and a Landlock-limited filesystem.
CONFINED_LEVELS = frozenset({"NONE", "ENDO", "CUSTOM"})

#: Open files per worker. Enough for trio and ordinary code; stops fd exhaustion.
MAX_OPEN_FILES = 1024
#: Address space for confined workers. Python + trio use well under 1 GiB of
#: virtual memory even with glibc's per-thread arenas; 4 GiB stops a runaway
#: allocation long before the machine swaps.
MAX_ADDRESS_SPACE = 4 * 1024**3
#: PATH for a worker: nothing from the daemon's environment leaks in.
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"

#: Read-only for confined workers: where the dynamic loader finds the shared
#: libraries that Python's extension modules link against. Operating-system
#: code, not user data.
SYSTEM_LIBRARY_PATHS = ("/etc/ld.so.cache", "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")

_IS_X86_64 = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")

# -- kernel constants (linux uapi) ----------------------------------------------
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNS = 0x00020000
MS_NOSUID = 2
MS_NODEV = 4
MS_REC = 16384
MS_PRIVATE = 1 << 18
#: Files and folders in a scratch tmpfs: each costs kernel memory.
SCRATCH_INODES = 65536
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECUREBITS = 28
PR_SET_NAME = 15

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
SYS_CAPGET = 125
SYS_CAPSET = 126
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

# Filesystem access rights, and the ABI that introduced the later ones.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6
#: Rights that apply to a regular file (a rule on a file may only grant these).
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies.

    Workers die with the fork server, and the fork server with the daemon, so a
    daemon killed with -9 leaves no process behind (a worker stuck in a loop
    would otherwise never read the end of its pipe). If the parent is already
    gone by the time the request is made, exit at once.
    """
    _lib().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # As pid 1 of its own PID namespace a child cannot see its parent
    # (getppid() is 0): then the check is skipped. If the fork server died in
    # that instant, the worker still ends with the daemon: EOF on its pipes.
    if os.getppid() != expected_parent and os.getpid() != 1:
        os._exit(0)


def _errno_text() -> str:
    e = ctypes.get_errno()
    return f"{os.strerror(e)} (errno {e})"


# -- environment, files, limits ---------------------------------------------------


def worker_packages() -> list[str]:
    """The folders of the packages a worker runs from: ``ocapd`` (for ``ocapd.sdk``), ``ocapd.captp``, ``ocapd.workers``.

    In an installed wheel they lie inside site-packages; in a development
    checkout (an editable install) they are the repository's own folders,
    which the editable install's import hook maps to these names.
    """
    import importlib.util

    folders: list[str] = []
    for name in ("ocapd", "ocapd.captp", "ocapd.workers"):
        # Where the package lies, found without importing it (the root package
        # is the composition root, which workers do not import).
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.extend(str(Path(p).resolve()) for p in spec.submodule_search_locations)
    return folders


def scrubbed_env(workdir: str | os.PathLike[str]) -> dict[str, str]:
    """The whole environment a worker gets: nothing of the daemon's leaks in."""
    workdir = os.fspath(workdir)
    return {
        "PATH": MINIMAL_PATH,
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _close_inherited_fds(keep: tuple[int, ...]) -> list[int]:
    """Close every fd above 2 except ``keep``; return what stays open."""
    try:
        open_fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = list(range(3, 4096))
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    return [0, 1, 2, *sorted(keep)]


def _set_rlimits(confined: bool) -> dict[str, Any]:
    applied: dict[str, Any] = {}

    def lower(name: str, which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        new_hard = value if hard == resource.RLIM_INFINITY else min(hard, value)
        try:
            resource.setrlimit(which, (new_hard, new_hard))
            applied[name] = new_hard
        except (OSError, ValueError) as e:
            applied[name] = f"not applied: {e}"

    lower("core", resource.RLIMIT_CORE, 0)
    lower("nofile", resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    if confined:
        lower("as", resource.RLIMIT_AS, MAX_ADDRESS_SPACE)
    return applied


# -- namespaces -------------------------------------------------------------------


def _write_id_maps() -> None:
    # In a fresh user namespace our uid is unmapped until we map it to itself.
    uid, gid = os.getuid(), os.getgid()
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def _unshare(flags: int) -> tuple[bool, str]:
    """unshare(flags); when not privileged, inside a new user namespace. (ok, how or why not)."""
    libc = _lib()
    if libc.unshare(flags) == 0:
        return True, "unshare"
    first = _errno_text()
    if libc.unshare(CLONE_NEWUSER) == 0:
        try:
            _write_id_maps()
        except OSError as e:
            return False, f"unshare: {first}; user namespace id map: {e}"
        if libc.unshare(flags) == 0:
            return True, "unshare inside a new user namespace"
    return False, f"unshare: {first}; in a new user namespace: {_errno_text()}"


class PidNamespaceForChildren:
    """In a template process: fork the next child as pid 1 of a new PID namespace.

    ``unshare(CLONE_NEWPID)`` only affects the caller's *next* children, and
    ``setns`` back to the template's own namespace makes the one after that
    independent again: one fork, no extra process, the pidfd names the
    worker itself. This needs CAP_SYS_ADMIN over the template's own PID
    namespace (root, or a daemon in a container); otherwise ``available`` is
    False and each worker makes its namespace itself (``apply``: one more
    fork, with a waiting parent).
    """

    def __init__(self) -> None:
        self._own = -1
        self.available = False
        self.reason = ""
        if sys.platform != "linux":
            self.reason = "PID namespaces need Linux"
            return
        try:
            self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.reason = f"/proc/self/ns/pid: {e}"
            return
        if _lib().unshare(CLONE_NEWPID) != 0:
            self.reason = f"unshare(CLONE_NEWPID): {_errno_text()}"
            return
        if _lib().setns(self._own, CLONE_NEWPID) != 0:
            self.reason = f"setns back to the template's PID namespace: {_errno_text()}"
            return
        self.available = True

    def before_fork(self) -> bool:
        return self.available and _lib().unshare(CLONE_NEWPID) == 0

    def after_fork(self) -> None:
        if _lib().setns(self._own, CLONE_NEWPID) != 0:  # pragma: no cover - worked at start
            self.available = False


def _become_pid_namespace_init() -> tuple[bool, str]:
    """Make the rest of this worker run as pid 1 of a new PID namespace.

    unshare, then fork: the child returns (it is the worker); this process
    stays as its parent, closes every fd (so the daemon's pipes end with the
    worker) and exits with the worker's status. Used when no template did it
    for us (a subprocess worker, or a template without the privilege).
    """
    ok, how = _unshare(CLONE_NEWPID)
    if not ok:
        return False, how
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _lib().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return True, f"{how}, then fork (a parent process waits outside)"
    del parent
    os.closerange(0, 65536)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _outer_pid() -> int:
    """This process's pid as the daemon sees it (NSpid's first field), read before /proc is out of reach."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return os.getpid()


def _mount_scratch(workdir: str, size: int) -> dict[str, Any]:
    """A private tmpfs of ``size`` bytes over ``workdir``: capped, in memory (charged to the
    worker's memory cgroup) and gone with the worker's mount namespace."""
    libc = _lib()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return {"applied": False, "reason": f"making mounts private: {_errno_text()}"}
    options = f"size={size},nr_inodes={SCRATCH_INODES},mode=0700,uid={os.getuid()},gid={os.getgid()}"
    if libc.mount(b"tmpfs", os.fsencode(workdir), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        return {"applied": False, "reason": f"mount tmpfs on {workdir}: {_errno_text()}"}
    return {"applied": True, "bytes": size, "tmpfs": workdir}


def _enter_namespaces(workdir: str, scratch_bytes: int | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """New PID, IPC, mount and network namespaces, and the scratch tmpfs. Reports (namespaces, network, scratch)."""
    if sys.platform != "linux":
        why = f"namespaces need Linux (this is {sys.platform})"
        return {"applied": False, "reason": why}, {"applied": False, "reason": why}, {"applied": False, "reason": why}
    namespaces: dict[str, Any] = {}
    if os.getpid() == 1:
        pid: dict[str, Any] = {"applied": True, "method": "forked as pid 1 by the fork server"}
    else:
        ok, how = _become_pid_namespace_init()
        pid = {"applied": ok, "method" if ok else "reason": how}
    namespaces["pid"] = pid
    ok, how = _unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS)
    for name in ("ipc", "mount"):
        namespaces[name] = {"applied": ok, "method" if ok else "reason": how}
    if ok:
        network = {"applied": True, "method": f"{how}(CLONE_NEWNET)"}
    else:  # perhaps the network alone works
        net_ok, net_how = _unshare(CLONE_NEWNET)
        network = {"applied": net_ok, "method" if net_ok else "reason": f"{net_how}(CLONE_NEWNET)" if net_ok else net_how}
    if scratch_bytes is None:
        scratch: dict[str, Any] = {"applied": False, "reason": "no scratch limit for this worker: its workdir is on disk"}
    elif not namespaces["mount"]["applied"]:
        scratch = {"applied": False, "reason": "no private mount namespace"}
    else:
        scratch = _mount_scratch(workdir, scratch_bytes)
    applied = all(namespaces[n]["applied"] for n in ("pid", "ipc", "mount"))
    return {"applied": applied, **namespaces}, network, scratch


def _unshare_network() -> dict[str, Any]:
    """Enter a new, empty network namespace. Report how, or why not (for ``probe``)."""
    if sys.platform != "linux":
        return {"applied": False, "reason": f"network namespaces need Linux (this is {sys.platform})"}
    ok, how = _unshare(CLONE_NEWNET)
    return {"applied": ok, "method" if ok else "reason": f"{how}(CLONE_NEWNET)" if ok else how}


# -- Landlock ---------------------------------------------------------------------


def landlock_abi() -> tuple[int | None, str]:
    """The kernel's Landlock ABI version, or None and why not."""
    if not _IS_X86_64:
        return None, f"Landlock syscalls are wired for Linux x86_64 only (this is {sys.platform}/{platform.machine()})"
    r = _lib().syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    if r < 0:
        return None, f"the kernel refuses Landlock: {_errno_text()}"
    return int(r), ""


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def _landlock(read_only: list[str], list_only: list[str], read_write: list[str]) -> dict[str, Any]:
    """Restrict this process (and its future children) to the given paths."""
    abi, why = landlock_abi()
    if abi is None:
        return {"applied": False, "reason": why}
    libc = _lib()
    handled = _handled_fs(abi)
    attr = struct.pack("<Q", handled)
    handled_net = scoped = 0
    if abi >= 4:
        handled_net = NET_BIND_TCP | NET_CONNECT_TCP
        attr += struct.pack("<Q", handled_net)
    if abi >= 6:
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        attr += struct.pack("<Q", scoped)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), 0)
    if ruleset < 0:
        return {"applied": False, "abi": abi, "reason": f"landlock_create_ruleset: {_errno_text()}"}
    read = FS_READ_FILE | FS_READ_DIR
    write = handled & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_IOCTL_DEV | FS_EXECUTE)
    granted: dict[str, list[str]] = {"read_only": [], "list_only": [], "read_write": []}
    skipped: list[str] = []
    try:
        for group, paths, rights in (
            ("read_only", read_only, read),
            ("list_only", list_only, FS_READ_DIR),
            ("read_write", read_write, write),
        ):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    skipped.append(path)
                    continue
                try:
                    allowed = rights
                    if not os.path.isdir(path):
                        allowed &= FS_FILE_RIGHTS
                    rule = ctypes.create_string_buffer(struct.pack("<Qi", allowed, fd), 12)
                    if libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0) != 0:
                        return {"applied": False, "abi": abi, "reason": f"landlock_add_rule({path}): {_errno_text()}"}
                    granted[group].append(path)
                finally:
                    os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return {"applied": False, "abi": abi, "reason": f"PR_SET_NO_NEW_PRIVS: {_errno_text()}"}
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            return {"applied": False, "abi": abi, "reason": f"landlock_restrict_self: {_errno_text()}"}
    finally:
        os.close(ruleset)
    report: dict[str, Any] = {"applied": True, "abi": abi, **granted}
    if skipped:
        report["missing_paths"] = skipped
    report["tcp_denied"] = bool(handled_net)
    report["scoped"] = [n for n, bit in (("abstract-unix-socket", SCOPE_ABSTRACT_UNIX_SOCKET), ("signal", SCOPE_SIGNAL)) if scoped & bit]
    return report


# -- seccomp --------------------------------------------------------------------------


def _seccomp() -> dict[str, Any]:
    if not _IS_X86_64:
        return {"applied": False, "reason": "the seccomp policy is checked on Linux x86_64 only"}
    # Imported by every process that confines itself before anything is
    # closed (worker.py, forkserver.py); the daemon itself never needs it.
    from . import syscalls

    return syscalls.load()


# -- capabilities -------------------------------------------------------------------------

_SECBIT_NOROOT = 1 << 0
_SECBIT_NOROOT_LOCKED = 1 << 1
_SECBIT_NO_SETUID_FIXUP = 1 << 2
_SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
_CAP_VERSION_3 = 0x20080522


#: Above the highest capability any kernel defines; dropping an unknown one is a harmless EINVAL.
_CAP_COUNT = 64


def _drop_capabilities() -> dict[str, Any]:
    """Empty every capability set, so uid 0 in a container is an ordinary user."""
    if sys.platform != "linux":
        return {"applied": False, "reason": "capabilities are a Linux feature"}
    libc = _lib()
    notes = []
    bits = _SECBIT_NOROOT | _SECBIT_NOROOT_LOCKED | _SECBIT_NO_SETUID_FIXUP | _SECBIT_NO_SETUID_FIXUP_LOCKED
    if libc.prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0:
        notes.append(f"securebits not set: {_errno_text()}")
    for cap in range(_CAP_COUNT):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL for unknown caps is fine
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = ctypes.create_string_buffer(struct.pack("<Ii", _CAP_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)  # two {effective, permitted, inheritable}
    if libc.syscall(SYS_CAPSET, header, data) != 0:
        return {"applied": False, "reason": f"capset: {_errno_text()}", "notes": notes}
    effective, permitted = _capget()
    report: dict[str, Any] = {"applied": effective == 0 and permitted == 0, "effective": effective, "permitted": permitted}
    if notes:
        report["notes"] = notes
    return report


def _capget() -> tuple[int | None, int | None]:
    """(effective, permitted) capability sets of this process, by syscall (no /proc needed)."""
    header = ctypes.create_string_buffer(struct.pack("<Ii", _CAP_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(24)
    if _lib().syscall(SYS_CAPGET, header, data) != 0:
        return None, None
    e0, p0, _i0, e1, p1, _i1 = struct.unpack("<6I", data.raw)
    return e0 | e1 << 32, p0 | p1 << 32


# -- the whole recipe -------------------------------------------------------------------------


def _is_site_packages(path: str) -> bool:
    return os.path.basename(path) in ("site-packages", "dist-packages")


def _filesystem_view(workdir: str, bundle_dir: str | None) -> tuple[list[str], list[str], list[str]]:
    """(read-only, list-only, read-write) paths for Landlock."""
    read_only: list[str] = []
    list_only: list[str] = []
    packages = [os.path.realpath(p) for p in worker_packages()]
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path):
        if not p:
            continue
        real = os.path.realpath(p)
        if any(package.startswith(real + os.sep) for package in packages) and not _is_site_packages(real):
            continue  # a source checkout: only the worker's own packages, below
        if os.path.exists(real) and real not in read_only:
            read_only.append(real)
    # In a checkout the worker's packages are folders of the repository: its
    # folder may be listed (imports need that) but only those may be read.
    for package in packages:
        if not any(package.startswith(r + os.sep) or package == r for r in read_only):
            read_only.append(package)
            parent = os.path.dirname(package)
            if parent not in list_only:
                list_only.append(parent)
    # Extension modules load shared libraries from the system (libsqlite3, libssl, ...).
    for path in SYSTEM_LIBRARY_PATHS:
        real = os.path.realpath(path)
        if os.path.exists(real) and real not in read_only:
            read_only.append(real)
    if bundle_dir:
        read_only.append(os.path.realpath(bundle_dir))
    return read_only, list_only, [os.path.realpath(workdir)]


#: Steps a confined worker must get; ``Launcher`` refuses a worker missing one
#: unless the operator opted in (``allow_partial_confinement``).
REQUIRED_STEPS = ("namespaces", "network", "landlock", "seccomp", "capabilities")


def missing_steps(report: dict[str, Any], limits: dict[str, Any] | None) -> list[str]:
    """Required steps that ``report`` says were not applied (empty for HOST without limits)."""
    limits = limits or {}
    required: list[str] = list(REQUIRED_STEPS) if report.get("level") in CONFINED_LEVELS else []
    if limits.get("memory_bytes") or limits.get("tasks"):
        required.append("cgroup")
    if limits.get("scratch_bytes") and report.get("level") in CONFINED_LEVELS:
        required.append("scratch")
    return [step for step in required if not (isinstance(report.get(step), dict) and report[step].get("applied") is True)]


def apply(
    level: str,
    workdir: str | os.PathLike[str],
    bundle_dir: str | os.PathLike[str] | None = None,
    *,
    keep_fds: tuple[int, ...] = (),
    limits: dict[str, Any] | None = None,
    cgroup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Confine the calling process for ``level``; return what was applied.

    Call only in a worker child: it is irreversible, and for confined levels
    it may fork (the caller continues as pid 1 of a new PID namespace while
    its old self waits outside). fds 0/1/2 and ``keep_fds`` stay open,
    everything else is closed. ``limits`` is ``WorkerLimits.to_json()``;
    ``cgroup`` is ``{"procs": [...]}`` (the group to join) or ``{"reason": ...}``
    (why the launcher could not make one).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown power level {level!r}; expected one of {', '.join(LEVELS)}")
    workdir = os.fspath(workdir)
    limits = limits or {}
    confined = level in CONFINED_LEVELS
    report: dict[str, Any] = {"level": level, "limits": limits}
    report["fds"] = _close_inherited_fds(keep_fds)
    env = scrubbed_env(workdir)
    os.environ.clear()
    os.environ.update(env)
    report["environment"] = sorted(env)
    if cgroup and cgroup.get("procs"):
        report["cgroup"] = cgroups.join(cgroup["procs"], limits)
    else:
        report["cgroup"] = {"applied": False, "reason": (cgroup or {}).get("reason", "no memory or task limit for this worker")}
    if confined:
        report["namespaces"], report["network"], report["scratch"] = _enter_namespaces(workdir, limits.get("scratch_bytes"))
    report["pid"] = _outer_pid()
    os.chdir(workdir)
    os.umask(0o077)
    report["cwd"] = workdir
    report["rlimits"] = _set_rlimits(confined)
    if not confined:
        for step in ("namespaces", "network", "scratch", "landlock", "seccomp", "capabilities"):
            report[step] = {"applied": False, "reason": f"not requested for level {level}"}
        report["no_new_privs"] = False
        return report
    ro, lo, rw = _filesystem_view(workdir, os.fspath(bundle_dir) if bundle_dir else None)
    report["landlock"] = _landlock(ro, lo, rw)
    report["capabilities"] = _drop_capabilities()
    report["seccomp"] = _seccomp()  # last: it refuses what the steps above needed (unshare, mount)
    report["no_new_privs"] = _lib().prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
    return report


# -- probe ---------------------------------------------------------------------------------------


def _probe_cgroups() -> dict[str, Any]:
    found, why = cgroups.Cgroups.discover()
    if found is None:
        return {"supported": False, "reason": why}
    try:
        group = found.create("probe", WorkerLimitsJSON(memory_bytes=64 << 20, tasks=8))
        group.remove()
    except OSError as e:
        return {"supported": False, "version": found.version, "reason": f"creating a group: {e}"}
    finally:
        found.close()
    return {"supported": True, "version": found.version, "controllers": list(cgroups.CONTROLLERS), "below": {c: str(p.parent) for c, p in found.bases.items()}}


def _probe_in_child() -> dict[str, Any]:
    result: dict[str, Any] = {"platform": f"{sys.platform}/{platform.machine()}", "kernel": platform.release()}
    result["cgroups"] = _probe_cgroups()  # before any namespace: as the daemon would
    template = PidNamespaceForChildren()
    result["pid_namespace_per_fork"] = {"supported": template.available, **({"reason": template.reason} if template.reason else {})}
    namespaces, network, scratch = _enter_namespaces("/tmp", 1 << 20)  # this child becomes pid 1 (its parent waits)
    result["namespaces"] = {"supported": namespaces.pop("applied"), **namespaces}
    result["netns"] = {"supported": network.pop("applied"), **network}
    result["scratch"] = {"supported": scratch.pop("applied"), **scratch}
    abi, why = landlock_abi()
    landlock: dict[str, Any] = {"abi": abi}
    if abi is None:
        landlock.update(supported=False, reason=why)
    else:
        landlock.update(
            supported=True,
            filesystem=True,
            tcp=abi >= 4,
            scoping=abi >= 6,
        )
    result["landlock"] = landlock
    result["rlimits"] = {
        name: list(resource.getrlimit(which))
        for name, which in (("core", resource.RLIMIT_CORE), ("nofile", resource.RLIMIT_NOFILE), ("as", resource.RLIMIT_AS))
    }
    if abi is not None:
        # Restrict for real and check a read is refused.
        outcome = _landlock([], [], [])
        if outcome["applied"]:
            try:
                open("/proc/self/status").close()
                landlock["enforced"] = False
                landlock["reason"] = "restrict_self succeeded but a read outside the rules was allowed"
            except OSError:
                landlock["enforced"] = True
        else:
            landlock["enforced"] = False
            landlock["reason"] = outcome["reason"]
    caps = _drop_capabilities()
    result["capabilities"] = {"droppable": caps["applied"], **({"reason": caps["reason"]} if "reason" in caps else {})}
    seccomp = _seccomp()
    result["seccomp"] = {"supported": seccomp["applied"], **({"by": seccomp["by"]} if seccomp["applied"] else {"reason": seccomp["reason"]})}
    if seccomp["applied"]:  # and it holds: a new user namespace is refused
        result["seccomp"]["enforced"] = _lib().unshare(CLONE_NEWUSER) != 0
    return result


def probe() -> dict[str, Any]:
    """What this machine supports, tried for real in a throwaway forked child.

    Synchronous and quick (two forks and a few syscalls). Keys: ``platform``,
    ``kernel``, ``cgroups`` {supported, version, controllers, below|reason},
    ``pid_namespace_per_fork`` {supported, reason?}, ``namespaces``
    {supported, pid, ipc, mount}, ``netns`` {supported, method|reason},
    ``scratch`` {supported, reason?}, ``landlock`` {abi, supported,
    filesystem, tcp, scoping, enforced, reason?}, ``seccomp`` {supported,
    by, enforced | reason}, ``capabilities`` {droppable}, ``rlimits`` (the
    current soft/hard limits).
    """
    if not hasattr(os, "fork"):
        return {"platform": sys.platform, "error": "no fork on this platform"}
    _lib()  # load libc before forking, not in the child
    from . import syscalls  # noqa: F401  # and libseccomp, before the child closes the file system
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the throwaway child: never returns
        try:
            os.close(r)
            try:
                data = json.dumps(_probe_in_child()).encode()
            except BaseException as e:  # report, never raise across the fork
                data = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        report: dict[str, Any] = json.loads(b"".join(chunks) or b'{"error": "probe child died"}')
        return report
    except ValueError:
        return {"error": "probe child sent garbage"}
