"""Containment: what a NONE (ENDO, custom) worker must not be able to do to anything outside itself.

Each test is one attack of issue 9 (items 1-6), run from inside a real
confined worker started through the fork server, with raw syscalls through
ctypes where Python has no wrapper. Where an attack is refused by the kernel
the test checks the refusal *and* that the target outside is unchanged.
Nothing here waits on the clock for correctness, and no test attacks a
process it did not start for the purpose.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from ocapd.captp import E, RemoteError, SessionAborted
from ocapd.workers import Launcher, WorkerLimits, WorkerSpec, open_worker, probe

PROBE = probe()
MiB = 1024 * 1024

#: Small budgets so that exceeding them is quick.
SMALL = WorkerLimits(memory_bytes=128 * MiB, tasks=32, scratch_bytes=8 * MiB, log_bytes=64 * 1024)

#: Prepended to every attack: raw syscalls that report errno instead of raising.
PRELUDE = """
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return ctypes.get_errno() if r < 0 else 0
"""


def spec_for(tmp_path: Path, name: str, level: str = "NONE", limits: WorkerLimits | None = SMALL) -> WorkerSpec:
    return WorkerSpec(name, level, tmp_path / "work" / name, tmp_path / "logs" / f"{name}.log", limits=limits)


@pytest.fixture
async def launcher():
    async with Launcher() as launcher:  # strict: a worker missing required confinement does not start
        assert launcher.fork_server_pid is not None
        yield launcher


@pytest.fixture
def bystander():
    """A process outside every sandbox, started for the purpose of being attacked."""
    process = subprocess.Popen(["sleep", "600"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def attack(worker, source: str, **names: object) -> object:
    return await E(worker.facet).evaluate(PRELUDE + source, list(names), list(names.values()))


def _limits_of(pid: int) -> str:
    return Path(f"/proc/{pid}/limits").read_text()


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


# -- 1. other processes: cannot be named, seen or affected ----------------------------------------

AFFECT_ANOTHER = """
import resource
new = (ctypes.c_ulong * 2)(3, 3)
mask = ctypes.c_ulong(1)
param = ctypes.c_int(0)
out = {
    "prlimit64": sc(302, pid, resource.RLIMIT_NOFILE, ctypes.byref(new), 0),
    "setpriority": sc(141, 0, pid, 19),
    "sched_setaffinity": sc(203, pid, 8, ctypes.byref(mask)),
    "sched_setscheduler": sc(144, pid, 3, ctypes.byref(param)),
    "sched_setparam": sc(142, pid, ctypes.byref(param)),
    "ioprio_set": sc(251, 1, pid, 3 << 13),
    "process_vm_readv": sc(310, pid, 0, 0, 0, 0, 0),
    "pidfd_open": sc(434, pid, 0),
    "kill": sc(62, pid, 0),
}
# Its own limits and priority stay its own to lower.
resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
os.nice(1)
out
"""


async def test_a_worker_cannot_change_the_limits_priority_or_memory_of_another_process(tmp_path, launcher, bystander):
    limits_before, stat_before = _limits_of(bystander.pid), _stat_fields(bystander.pid)
    async with open_worker(spec_for(tmp_path, "prlimit"), launcher) as worker:
        for pid in (bystander.pid, os.getpid()):
            out = await attack(worker, AFFECT_ANOTHER, pid=pid)
            assert all(code != 0 for code in out.values()), out
    assert _limits_of(bystander.pid) == limits_before
    # nice (field 19 of stat, index 16 here) and policy (index 38) are unchanged
    assert _stat_fields(bystander.pid)[16] == stat_before[16]
    assert _stat_fields(bystander.pid)[38] == stat_before[38]


SEE_PIDS = """
def exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
[os.getpid(), sorted({p for p in [*range(1, 1 << 15), *known] if exists(p)})]
"""


async def test_a_worker_sees_no_process_but_itself(tmp_path, launcher, bystander):
    async with open_worker(spec_for(tmp_path, "pids"), launcher) as worker:
        assert worker.confinement["namespaces"]["applied"] is True
        own, seen = await attack(worker, SEE_PIDS, known=[bystander.pid, os.getpid(), os.getppid()])
        assert own == 1
        assert seen == [1]
        # The daemon still knows it by its real pid.
        assert worker.pid != 1 and (await E(worker.facet).info())["pid"] == worker.pid


# -- 2. no new namespaces, no setns -------------------------------------------------------------

NEW_NAMESPACES = """
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, CLONE_THREAD = 0x10000000, 0x40000000, 0x20000, 0x10000
{
    "unshare(NEWUSER)": sc(272, CLONE_NEWUSER),
    "unshare(NEWUSER|NEWNET)": sc(272, CLONE_NEWUSER | CLONE_NEWNET),
    "unshare(NEWNS)": sc(272, CLONE_NEWNS),
    # Without the filter the kernel answers EINVAL for both (an fd that is no
    # namespace; a thread that does not share signal handlers): EPERM means refused first.
    "setns": sc(308, 0, 0),
    "clone(THREAD|NEWNET)": sc(56, CLONE_THREAD | CLONE_NEWNET, 0, 0, 0, 0),
}
"""


@pytest.mark.parametrize("level", ["NONE", "ENDO", "CUSTOM"])
async def test_a_worker_cannot_make_or_enter_namespaces(tmp_path, launcher, level):
    async with open_worker(spec_for(tmp_path, f"userns-{level}", level), launcher) as worker:
        out = await attack(worker, NEW_NAMESPACES)
        assert out == dict.fromkeys(out, errno.EPERM), out
        threads = "import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()\n'threads work'"
        assert await E(worker.facet).evaluate(threads, [], []) == "threads work"


# -- 3. sockets: nothing but its own pairs ----------------------------------------------------------

SOCKETS = """
import socket
out = {}
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
a.send(b"own")
out["pair"] = b.recv(10).decode()
def attempt(name, f):
    try:
        f()
        out[name] = "done"
    except OSError as e:
        out[name] = e.errno
attempt("sendto(path)", lambda: a.sendto(b"leak", path))
attempt("sendmsg(path)", lambda: a.sendmsg([b"leak"], [], 0, path))
attempt("connect(path)", lambda: a.connect(path))
attempt("bind(abstract)", lambda: b.bind(b"\\0ocapd-test"))
attempt("AF_VSOCK", lambda: socket.socket(40, socket.SOCK_STREAM))
attempt("netlink route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
attempt("netlink audit", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9))
attempt("AF_INET", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
attempt("AF_UNIX", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
attempt("socketpair(AF_INET)", lambda: socket.socketpair(socket.AF_INET))
out
"""


async def test_a_worker_can_send_only_on_its_own_socket_pairs(tmp_path, launcher):
    path = str(tmp_path / "outside.sock")
    outside = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    outside.bind(path)
    outside.setblocking(False)
    try:
        async with open_worker(spec_for(tmp_path, "sockets"), launcher) as worker:
            out = await attack(worker, SOCKETS, path=path)
        assert out.pop("pair") == "own"
        assert "done" not in out.values(), out
        with pytest.raises(BlockingIOError):  # a datagram sent by then would be queued already
            outside.recv(100)
    finally:
        outside.close()


# -- 4. no shared IPC namespace, no keyring -------------------------------------------------------

IPC_CREAT, IPC_RMID = 0o1000, 0


def _host_msgq(key: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.msgget(key, 0)


def _remove_host_ipc(key: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if (qid := libc.msgget(key, 0)) >= 0:
        libc.msgctl(qid, IPC_RMID, None)
    if (shmid := libc.shmget(key, 0, 0)) >= 0:
        libc.shmctl(shmid, IPC_RMID, None)


LEAVE_MESSAGE = """
qid = libc.msgget(key, 0o1600)
msg = struct.pack("l", 1) + b"secret"
[qid, libc.msgsnd(qid, msg, 6, 0)]
"""

READ_MESSAGE = """
qid = libc.msgget(key, 0)
buf = ctypes.create_string_buffer(64)
got = libc.msgrcv(qid, buf, 56, 0, 0o4000) if qid >= 0 else -1  # IPC_NOWAIT
buf.raw[8:8 + got].decode() if got > 0 else ctypes.get_errno() if qid < 0 else "empty"
"""


async def test_two_workers_share_no_sysv_message_queue(tmp_path, launcher):
    key = secrets.randbelow(1 << 30) + 1
    try:
        async with open_worker(spec_for(tmp_path, "msg-a"), launcher) as a, open_worker(spec_for(tmp_path, "msg-b"), launcher) as b:
            qid, sent = await attack(a, LEAVE_MESSAGE, key=key)
            assert qid >= 0 and sent == 0  # its own queue works, in its own namespace
            assert await attack(b, READ_MESSAGE, key=key) == errno.ENOENT
        assert _host_msgq(key) == -1
    finally:
        _remove_host_ipc(key)


KEYRING = """
KEY_SPEC_USER_KEYRING, KEYCTL_GET_KEYRING_ID, KEYCTL_UNLINK = -4, 0, 9
ctypes.set_errno(0)
key = libc.syscall(248, b"user", name, b"secret", 6, KEY_SPEC_USER_KEYRING)
added = ctypes.get_errno() if key < 0 else 0
if key > 0:
    libc.syscall(250, KEYCTL_UNLINK, key, KEY_SPEC_USER_KEYRING)  # leave nothing behind if it got through
{
    "add_key": added,
    "request_key": sc(249, b"user", name, 0, 0),
    "keyctl": sc(250, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0),
}
"""


async def test_a_worker_cannot_use_the_kernel_keyring(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "keys"), launcher) as worker:
        out = await attack(worker, KEYRING, name=f"ocapd-test-{secrets.token_hex(4)}".encode())
    assert out == dict.fromkeys(out, errno.EPERM), out


# -- 5. memory, shared memory included ----------------------------------------------------------------

FILL_MEMFD = """
fd = os.memfd_create("fill")
chunk = b"x" * (1 << 20)
for _ in range(mib):
    os.write(fd, chunk)
os.fstat(fd).st_size
"""

FILL_SYSV_SHM = """
libc.shmget.restype = ctypes.c_int
libc.shmat.restype = ctypes.c_void_p
size = mib << 20
shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)  # IPC_PRIVATE
addr = libc.shmat(shmid, None, 0)
ctypes.memset(addr, 1, size)
size
"""


@pytest.mark.parametrize("how", ["memfd", "sysv-shm"])
async def test_shared_memory_counts_against_the_workers_budget_and_only_it_fails(tmp_path, launcher, how):
    async with open_worker(spec_for(tmp_path, "bystander"), launcher) as other:
        async with open_worker(spec_for(tmp_path, f"fill-{how}"), launcher) as worker:
            assert worker.confinement["cgroup"]["applied"] is True
            with pytest.raises(SessionAborted):
                await attack(worker, FILL_MEMFD if how == "memfd" else FILL_SYSV_SHM, mib=2 * SMALL.memory_bytes // MiB)
            assert await worker.wait_exited() == -signal.SIGKILL
            assert "memory limit" in (worker.exit_reason or ""), worker.exit_reason
        assert await E(other.facet).evaluate("1 + 1", [], []) == 2


LEAVE_SHM = """
libc.shmget.restype = ctypes.c_int
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget(key, ctypes.c_size_t(1 << 20), 0o1600)
addr = libc.shmat(shmid, None, 0)
ctypes.memmove(addr, b"secret", 6)
libc.shmdt(ctypes.c_void_p(addr))
shmid
"""


async def test_sysv_shared_memory_does_not_outlive_its_worker(tmp_path, launcher):
    key = secrets.randbelow(1 << 30) + 1
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        async with open_worker(spec_for(tmp_path, "shm-a"), launcher) as worker:
            assert await attack(worker, LEAVE_SHM, key=key) >= 0
            await worker.terminate()
        assert libc.shmget(key, 0, 0) == -1 and ctypes.get_errno() == errno.ENOENT
        async with open_worker(spec_for(tmp_path, "shm-b"), launcher) as worker:
            assert await attack(worker, "libc.shmget(key, 0, 0) == -1 and ctypes.get_errno()", key=key) == errno.ENOENT
    finally:
        _remove_host_ipc(key)


# -- 6. scratch, log and tasks --------------------------------------------------------------------------

FILL_SCRATCH = """
chunk = b"x" * (1 << 20)
with open("big", "wb") as f:
    for _ in range(mib):
        f.write(chunk)
        f.flush()
"""


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


async def test_scratch_is_capped_and_only_that_worker_fails(tmp_path, launcher):
    spec = spec_for(tmp_path, "scratch")
    async with open_worker(spec_for(tmp_path, "bystander"), launcher) as other:
        async with open_worker(spec, launcher) as worker:
            with pytest.raises(RemoteError) as info:
                await attack(worker, FILL_SCRATCH, mib=2 * SMALL.scratch_bytes // MiB)
            assert info.value.name == "OSError"
            assert "scratch limit" in info.value.message and "8 MiB" in info.value.message
            assert await E(worker.facet).evaluate("import os\nos.remove('big')\n'space again'", [], []) == "space again"
        assert await E(other.facet).evaluate("1 + 1", [], []) == 2
    assert _disk_bytes(spec.workdir) < MiB  # nothing of it landed on the disk


async def test_the_log_is_capped_with_a_clear_note(tmp_path, launcher):
    spec = spec_for(tmp_path, "chatty")
    async with open_worker(spec, launcher) as worker:
        with pytest.raises(RemoteError):  # its output channel is closed once the cap is reached
            await E(worker.facet).evaluate("for i in range(512):\n    print('x' * 1023)", [], [])
    log = spec.log_path.read_bytes()
    assert len(log) <= SMALL.log_bytes + 1024
    assert b"log limit of 64 KiB reached" in log


THREAD_BOMB = """
import threading
stop = threading.Event()
for n in range(500):
    threading.Thread(target=stop.wait, daemon=True).start()
n
"""


async def test_a_thread_bomb_stops_at_the_task_limit_and_others_keep_answering(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "bystander"), launcher) as other:
        async with open_worker(spec_for(tmp_path, "bomb"), launcher) as worker:
            with pytest.raises(RemoteError) as info:
                await E(worker.facet).evaluate(THREAD_BOMB, [], [])
            assert "task limit of 32" in info.value.message
            assert await E(other.facet).evaluate("1 + 1", [], []) == 2  # while the bomb's threads live
            assert await E(worker.facet).evaluate("'still answering'", [], []) == "still answering"


# -- what was applied, and what happens when it cannot be -------------------------------------------------


async def test_a_worker_whose_required_confinement_fails_does_not_start_unless_allowed(tmp_path):
    async with Launcher(use_cgroups=False) as launcher:
        with pytest.raises(Exception, match="required confinement was not applied: cgroup"):
            async with open_worker(spec_for(tmp_path, "strict"), launcher):
                pass
    async with Launcher(use_cgroups=False, allow_partial_confinement=True) as launcher:
        async with open_worker(spec_for(tmp_path, "lenient"), launcher) as worker:
            assert worker.confinement["cgroup"]["applied"] is False
            assert "reason" in worker.confinement["cgroup"]
            assert await E(worker.facet).evaluate("1 + 1", [], []) == 2


def test_probe_reports_every_containment_step():
    assert PROBE["namespaces"]["supported"] is True, PROBE["namespaces"]
    assert PROBE["seccomp"]["supported"] is True, PROBE["seccomp"]
    assert PROBE["cgroups"]["supported"] is True, PROBE["cgroups"]
    assert set(PROBE["cgroups"]["controllers"]) >= {"memory", "pids"}


async def test_many_workers_start_and_end_cleanly_with_their_cgroups_removed(tmp_path, launcher):
    for i in range(10):
        async with open_worker(spec_for(tmp_path, f"short{i % 3}"), launcher) as worker:
            assert await E(worker.facet).evaluate("1", [], []) == 1
        await trio.sleep(0)
    assert launcher.live_cgroups() == []
