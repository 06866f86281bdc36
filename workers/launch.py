"""Starting workers from the daemon's side: ``Launcher``, ``open_worker``, ``Worker``.

    async with Launcher() as launcher:
        async with open_worker(spec, launcher) as worker:
            print(await E(worker.facet).evaluate("1 + 1", [], []))

The ``Launcher`` owns the fork server (``workers.forkserver``), one per
daemon. ``open_worker`` asks it for a child; when the fork server is not
running (never started, died, failed to start) the worker is started as a
plain subprocess (``python -m workers``) instead, and the next launch tries
to bring the fork server back. Either way the daemon holds the worker's pipe
ends — EOF on them means the worker died, and every pending promise on its
connection breaks with ``SessionAborted`` (code ``disconnected``).

A worker is ready when its facet has answered ``info()``; ``open_worker``
yields it then. Leaving the block terminates it: ``terminate()`` is asked
politely, and after ``grace`` seconds the process is killed through a pidfd
(never by a pid that might have been recycled). Terminating never raises,
however early or late it comes in the worker's life.
"""

from __future__ import annotations

import array
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ocapd.captp import Connection, E, RemoteRef, SessionAborted, open_stream_connection

from .cgroups import Cgroups, WorkerCgroup
from .confine import LEVELS, missing_steps, scrubbed_env
from .limits import WorkerLimits, format_bytes, limits_for

__all__ = ["WorkerSpec", "Worker", "Launcher", "open_worker", "WorkerStartError"]

log = logging.getLogger("ocapd.workers")

#: How long a worker may take from launch to answering ``info()``.
START_TIMEOUT = 30.0
#: How long the fork server may take to import everything and say it is ready.
FORK_SERVER_START_TIMEOUT = 30.0
#: After a failed fork-server (re)start, launches use subprocesses this long before trying again.
FORK_SERVER_RETRY_INTERVAL = 5.0
#: How long to wait for the fork server's exit report once the pidfd says the child is gone.
STATUS_TIMEOUT = 1.0
#: Set to 1 to let workers start whose required confinement could not be applied
#: (each still reports exactly what it got). The default refuses them.
ALLOW_PARTIAL_ENV = "OCAPD_ALLOW_PARTIAL_CONFINEMENT"


class WorkerStartError(RuntimeError):
    """The worker could not be started, or died before answering."""


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # for logs
    level: str  # "NONE" | "ENDO" | "HOST" | "CUSTOM": the power level; decides confinement
    workdir: Path  # private working/scratch folder (created 0700)
    log_path: Path  # the worker's stderr goes here
    bundle_dir: Path | None = None  # read-only view for bundles
    limits: WorkerLimits | None = None  # None: DEFAULT_LIMITS for the level

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown power level {self.level!r}; expected one of {', '.join(LEVELS)}")

    @property
    def effective_limits(self) -> WorkerLimits:
        return limits_for(self.level, self.limits)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "level": self.level,
            "workdir": str(Path(self.workdir).resolve()),
            "log_path": str(self.log_path),
            "bundle_dir": str(Path(self.bundle_dir).resolve()) if self.bundle_dir else None,
            "limits": self.effective_limits.to_json(),
        }


# -- processes, however they were started -------------------------------------------


class _PidfdProcess:
    """A child process watched and signalled through a pidfd, never a pid that may be recycled."""

    pid: int
    _pidfd: int

    def _signal_kill(self) -> None:
        if self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


class _ForkedProcess(_PidfdProcess):
    """A child of the fork server: a pidfd from it, and a control socket for its exit status."""

    def __init__(self, pid: int, pidfd: int, control: trio.socket.SocketType) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._control = control

    async def wait(self) -> int | None:
        await trio.lowlevel.wait_readable(self._pidfd)
        with trio.move_on_after(STATUS_TIMEOUT):
            try:
                while data := await self._control.recv(4096):
                    message = json.loads(data)
                    if "status" in message:
                        return int(message["status"])
            except (OSError, ValueError):
                pass
        return None  # the fork server died too: the child is gone, its status unknown

    def kill(self) -> None:
        self._signal_kill()

    def close(self) -> None:
        self._close_pidfd()
        self._control.close()


class _Subprocess(_PidfdProcess):
    """A child the daemon starts itself: the fork server, or a worker as ``python -m workers`` (the fallback).

    Started with ``subprocess.Popen`` on the calling (trio) thread, not in a
    worker thread as ``trio.lowlevel.open_process`` does: the kernel sends
    ``PR_SET_PDEATHSIG`` when the *thread* that forked a child ends, and
    trio's cached threads end after ten idle seconds — which would kill the
    child (and, for the fork server, every worker) while the daemon lives on.
    The fork is a vfork-and-exec of a few milliseconds, once per fork server.
    """

    def __init__(self, argv: list[str], **options: Any) -> None:
        self._popen = subprocess.Popen(argv, **options)
        self.pid = self._popen.pid
        self._pidfd = os.pidfd_open(self.pid)

    def poll(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int | None:
        if self._popen.returncode is None and self._pidfd >= 0:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self._popen.wait()

    def kill(self) -> None:
        if self._popen.returncode is None:  # once reaped there is nothing to kill
            self._signal_kill()

    def close(self) -> None:
        self._close_pidfd()


class _ForkServerGone(Exception):
    pass


# -- the worker ------------------------------------------------------------------------


class Worker:
    """A live worker. Made by ``open_worker``; valid inside its block."""

    pid: int
    spec: WorkerSpec
    started_at: float
    confinement: dict[str, Any]
    info: dict[str, Any]
    launched_by: str  # "fork-server" or "subprocess"
    facet: RemoteRef
    connection: Connection
    exit_reason: str | None  # once exited: why, when one of its limits ended it

    def __init__(
        self,
        spec: WorkerSpec,
        process: _ForkedProcess | _Subprocess,
        launched_by: str,
        started_at: float,
        cgroup: WorkerCgroup | None = None,
    ) -> None:
        self.spec = spec
        self.pid = process.pid
        self.exit_reason = None
        self._cgroup = cgroup
        self.started_at = started_at
        self.launched_by = launched_by
        self.confinement = {}
        self.info = {}
        self._process = process
        self._wait_lock = trio.Lock()
        self._exited = trio.Event()
        self._status: int | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.spec.name!r} pid={self.pid} level={self.spec.level}>"

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def sandbox_pid(self) -> int:
        """The pid of the worker's code. Usually ``pid``; for a worker that made
        its own PID namespace (a subprocess), the one child of ``pid``."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                children = f.read().split()
        except OSError:
            return self.pid
        return int(children[0]) if len(children) == 1 else self.pid

    def rss_bytes(self) -> int:
        """Resident memory from /proc/<pid>/status (0 once the process is gone)."""
        try:
            with open(f"/proc/{self.sandbox_pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0

    def pss_bytes(self) -> int | None:
        """Proportional set size (shared pages split among sharers), if the kernel reports it."""
        try:
            with open(f"/proc/{self.sandbox_pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return None

    def limit_reached(self) -> str | None:
        """Why the worker ended, if one of its limits ended it, as ``exit_reason`` — but known
        as soon as its session ends: the kernel counts the kill before the pipe closes,
        and the exit status may not be collected yet."""
        if self.exit_reason is None and self._cgroup is not None and not self._exited.is_set():
            return self._cgroup.exit_reason()
        return self.exit_reason

    async def wait_exited(self) -> int | None:
        """Wait for the process to end; its exit status when known (negative: killed by that signal)."""
        async with self._wait_lock:
            if not self._exited.is_set():
                self._status = await self._process.wait()
                if self._cgroup is not None:
                    self.exit_reason = self._cgroup.exit_reason()
                    if self.exit_reason:
                        log.warning("worker %r (pid %d) %s", self.spec.name, self.pid, self.exit_reason)
                    self._cgroup.remove()  # if the kernel still holds it, Launcher.aclose sweeps it
                self._exited.set()
        return self._status

    async def terminate(self, grace: float = 0.1) -> None:
        """Ask the worker to end; after ``grace`` seconds kill it. Never raises if it already died."""
        if not self._exited.is_set():
            if self.connection.aborted is None:
                try:
                    E.send_only(self.facet).terminate()
                except Exception:  # the session is ending under us: killing is the answer
                    pass
            with trio.move_on_after(grace):
                await self.wait_exited()
            if not self._exited.is_set():
                self._process.kill()
                await self.wait_exited()
        self.connection.close()


# -- the launcher ------------------------------------------------------------------------


class Launcher:
    """Starts workers; owns the fork server. One per daemon.

    ``use_fork_server=False`` starts every worker as a subprocess (slower,
    nothing shared). ``fork_server_log`` receives the fork server's stderr.
    """

    def __init__(
        self,
        *,
        use_fork_server: bool = True,
        fork_server_log: Path | None = None,
        python: str = sys.executable,
        use_cgroups: bool = True,
        allow_partial_confinement: bool | None = None,
    ) -> None:
        self.use_fork_server = use_fork_server
        self.fork_server_log = fork_server_log
        self.python = python
        self.use_cgroups = use_cgroups
        if allow_partial_confinement is None:
            allow_partial_confinement = os.environ.get(ALLOW_PARTIAL_ENV) == "1"
        self.allow_partial_confinement = allow_partial_confinement
        self._cgroups: Cgroups | None = None
        self._cgroups_reason = "cgroups not used by this launcher"
        self.launches = {"fork-server": 0, "subprocess": 0}
        self._server: _Subprocess | None = None
        self._sock: trio.socket.SocketType | None = None
        self._send_lock = trio.Lock()
        self._start_lock = trio.Lock()
        self._last_failure: float | None = None
        self._closed = False

    async def __aenter__(self) -> Launcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's pid while it runs."""
        if self._server is not None and self._server.poll() is None:
            return self._server.pid
        return None

    async def start(self) -> None:
        """Start the fork server. If that fails, workers start as subprocesses (logged, not raised)."""
        self._closed = False
        if self.use_cgroups and self._cgroups is None:
            self._cgroups, self._cgroups_reason = Cgroups.discover()
            if self._cgroups is None:
                log.warning("no cgroups for workers' memory and task limits: %s", self._cgroups_reason)
        if self.use_fork_server:
            await self.restart_fork_server()

    async def restart_fork_server(self) -> bool:
        """(Re)start the fork server; True when it is running afterwards."""
        async with self._start_lock:
            if self.fork_server_pid is not None:
                return True
            await self._stop_fork_server()
            try:
                await self._start_fork_server()
            except Exception as e:
                self._last_failure = time.monotonic()
                log.warning("fork server unavailable, workers will start as subprocesses: %s", e)
                await self._stop_fork_server()
                return False
            self._last_failure = None
            return True

    async def _start_fork_server(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            stderr: Any = None
            if self.fork_server_log is not None:
                self.fork_server_log.parent.mkdir(parents=True, exist_ok=True)
                stderr = os.open(self.fork_server_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            env = {k: v for k, v in scrubbed_env("/").items() if k not in ("HOME", "TMPDIR")}
            try:
                self._server = _Subprocess(
                    [self.python, "-P", "-m", "ocapd.workers.forkserver", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=env,
                    start_new_session=True,
                )
            finally:
                if isinstance(stderr, int):
                    os.close(stderr)
        finally:
            theirs.close()
        self._sock = trio.socket.from_stdlib_socket(ours)
        with trio.fail_after(FORK_SERVER_START_TIMEOUT):
            data = await self._sock.recv(4096)
        if not data or not json.loads(data).get("ready"):
            raise RuntimeError(f"fork server exited while starting (status {self._server.poll()})")
        log.info("fork server ready, pid %d", self._server.pid)

    async def _stop_fork_server(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the fork server exits on EOF; its children die with it
            self._sock = None
        server, self._server = self._server, None
        if server is not None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(2.0):
                    await server.wait()
                if server.poll() is None:
                    server.kill()
                    await server.wait()
            server.close()

    async def aclose(self) -> None:
        """Stop the fork server, and with it (``PR_SET_PDEATHSIG``) any worker it forked that still runs."""
        self._closed = True
        await self._stop_fork_server()
        if self._cgroups is not None:
            self._cgroups.close()
            self._cgroups = None

    def live_cgroups(self) -> list[Path]:
        """Worker cgroups that still exist (each is removed when its worker has ended)."""
        return self._cgroups.leftovers() if self._cgroups is not None else []

    def _make_cgroup(self, spec: WorkerSpec, limits: WorkerLimits) -> tuple[WorkerCgroup | None, dict[str, Any]]:
        if not (limits.memory_bytes or limits.tasks):
            return None, {"reason": "no memory or task limit for this worker"}
        if self._cgroups is None:
            return None, {"reason": self._cgroups_reason}
        try:
            group = self._cgroups.create(spec.name, limits)
        except OSError as e:
            return None, {"reason": f"creating the worker's cgroup: {e}"}
        return group, {"procs": group.procs_files}

    async def _fork(self, spec: dict[str, Any], fds: tuple[int, int, int]) -> _ForkedProcess:
        sock = self._sock
        if sock is None or self.fork_server_pid is None:
            raise _ForkServerGone("not running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control = trio.socket.from_stdlib_socket(ours)
        try:
            payload = json.dumps({"spec": spec}).encode()
            rights = array.array("i", [*fds, theirs.fileno()])
            async with self._send_lock:
                await sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            theirs.close()
            data, ancdata, _flags, _addr = await control.recvmsg(4096, socket.CMSG_SPACE(4))
        except OSError as e:
            theirs.close()
            control.close()
            raise _ForkServerGone(str(e)) from None
        pidfds = array.array("i")
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                pidfds.frombytes(cdata[: len(cdata) - len(cdata) % 4])
        if not data:
            for fd in pidfds:
                os.close(fd)
            control.close()
            raise _ForkServerGone("closed the request")
        message = json.loads(data)
        if "pid" not in message or len(pidfds) != 1:
            for fd in pidfds:
                os.close(fd)
            control.close()
            raise _ForkServerGone(message.get("error", "no pidfd in the reply"))
        return _ForkedProcess(int(message["pid"]), pidfds[0], control)

    async def _spawn_subprocess(self, spec: dict[str, Any], fds: tuple[int, int, int]) -> _Subprocess:
        spec = {**spec, "launch": "subprocess"}
        process = _Subprocess(
            [self.python, "-P", "-m", "ocapd.workers", "--spec", json.dumps(spec)],
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
            env=scrubbed_env(spec["workdir"]),
            cwd=spec["workdir"],
            start_new_session=True,
        )
        return process

    async def launch(self, spec: WorkerSpec) -> _Launched:
        """Start a worker process; return it, how it was started, the daemon's pipe ends and its cgroup."""
        workdir = Path(spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(workdir, 0o700)
        Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        limits = spec.effective_limits
        _rotate_log(Path(spec.log_path), limits.log_bytes)
        # The worker writes its output into a pipe; the daemon copies it to the
        # log file up to the log limit (_LogCopier).
        log_r, log_w = os.pipe2(os.O_CLOEXEC)
        to_worker_r, to_worker_w = os.pipe2(os.O_CLOEXEC)
        from_worker_r, from_worker_w = os.pipe2(os.O_CLOEXEC)
        child_fds = (to_worker_r, from_worker_w, log_w)
        data = spec.to_json()
        group, data["cgroup"] = self._make_cgroup(spec, limits)
        process: _ForkedProcess | _Subprocess | None = None
        try:
            if self.use_fork_server and not self._closed:
                if self._start_lock.locked():
                    # The fork server is starting (the daemon serves before
                    # it is ready): waiting for it beats a subprocess.
                    async with self._start_lock:
                        pass
                if self.fork_server_pid is None and (
                    self._last_failure is None or time.monotonic() - self._last_failure > FORK_SERVER_RETRY_INTERVAL
                ):
                    await self.restart_fork_server()
                try:
                    process = await self._fork(data, child_fds)
                    how = "fork-server"
                except _ForkServerGone as e:
                    log.warning("fork server unavailable (%s); starting %r as a subprocess", e, spec.name)
                    self._last_failure = None  # retry on the next launch
            if process is None:
                process = await self._spawn_subprocess(data, child_fds)
                how = "subprocess"
        except BaseException:
            for fd in (to_worker_w, from_worker_r, log_r):
                os.close(fd)
            if group is not None:
                group.remove()
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        self.launches[how] += 1
        return _Launched(process, how, to_worker_w, from_worker_r, log_r, group)


@dataclass
class _Launched:
    process: _ForkedProcess | _Subprocess
    how: str
    to_worker: int
    from_worker: int
    log_reader: int
    cgroup: WorkerCgroup | None


def _rotate_log(path: Path, limit: int | None) -> None:
    """Keep a worker's log (over many incarnations) within about twice its limit: one old file."""
    try:
        if limit is not None and path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".old"))
    except FileNotFoundError:
        pass


class _LogCopier:
    """Copies a worker's output from its pipe into its log file, up to ``limit`` bytes.

    At the limit it writes a note saying so and closes the pipe: the worker's
    next write fails (BrokenPipeError), so output beyond the limit costs the
    daemon nothing and the worker learns of it at once.
    """

    def __init__(self, fd: int, path: Path, limit: int | None) -> None:
        self._stream = trio.lowlevel.FdStream(fd)
        self._path = path
        self._limit = limit

    async def run(self) -> None:
        out = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        written = 0
        try:
            while data := await self._stream.receive_some(65536):
                if self._limit is not None and written + len(data) > self._limit:
                    os.write(out, data[: self._limit - written])
                    note = f"\n[ocapd] log limit of {format_bytes(self._limit)} reached: the rest of this worker's output is refused\n"
                    os.write(out, note.encode())
                    break
                os.write(out, data)
                written += len(data)
        except (trio.ClosedResourceError, OSError):
            pass
        finally:
            os.close(out)
            await self._stream.aclose()


class _ConnectionRunner:
    """Runs a worker's CapTP connection in a task of ``open_worker``'s nursery.

    The task is shielded: when the caller of ``open_worker`` is cancelled,
    the session must stay up until the worker has been asked to terminate
    (that request is what lets it exit at once instead of waiting to be
    killed) and then close normally. ``stop()`` ends it; ``open_worker``
    always calls it. (Not ``nursery.start``: trio keeps a task that calls
    ``started()`` after its starter was cancelled under the starter, which
    would then wait forever for this shielded task.)
    """

    def __init__(self, stream: trio.abc.Stream, name: str) -> None:
        self.connection: Connection | None = None
        self._stream = stream
        self._name = name
        self._ready = trio.Event()
        self._stop = trio.Event()

    async def run(self) -> None:
        with trio.CancelScope(shield=True):
            async with open_stream_connection(self._stream, None, name=f"daemon:{self._name}") as conn:
                self.connection = conn
                self._ready.set()
                await self._stop.wait()

    async def wait_ready(self) -> Connection:
        await self._ready.wait()
        assert self.connection is not None
        return self.connection

    def stop(self) -> None:
        self._stop.set()


@asynccontextmanager
async def open_worker(spec: WorkerSpec, launcher: Launcher) -> AsyncIterator[Worker]:
    """Start a worker; yield it once its facet answers; terminate it when the block ends."""
    started_at = time.time()
    launched = await launcher.launch(spec)
    process = launched.process
    stream = trio.StapledStream(trio.lowlevel.FdStream(launched.to_worker), trio.lowlevel.FdStream(launched.from_worker))
    worker = Worker(spec, process, launched.how, started_at, launched.cgroup)
    runner = _ConnectionRunner(stream, spec.name)
    copier = _LogCopier(launched.log_reader, Path(spec.log_path), spec.effective_limits.log_bytes)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copier.run)
            nursery.start_soon(runner.run)
            try:
                conn = await runner.wait_ready()
                worker.connection = conn
                worker.facet = conn.bootstrap()
                try:
                    with trio.fail_after(START_TIMEOUT):
                        info = await E(worker.facet).info()
                except (SessionAborted, trio.TooSlowError) as e:
                    status = None
                    if worker.connection.aborted is not None:
                        with trio.move_on_after(1.0):
                            status = await worker.wait_exited()
                    raise WorkerStartError(
                        f"worker {spec.name!r} (pid {worker.pid}) did not start: {e}; "
                        f"exit status {status}; see {spec.log_path}"
                    ) from None
                worker.info = info
                worker.confinement = info.get("confinement", {})
                missing = missing_steps(worker.confinement, spec.effective_limits.to_json())
                if missing and not launcher.allow_partial_confinement:
                    reasons = "; ".join(f"{step}: {worker.confinement.get(step, {}).get('reason', 'not reported')}" for step in missing)
                    raise WorkerStartError(
                        f"worker {spec.name!r} at level {spec.level}: required confinement was not applied: {reasons} "
                        f"(set {ALLOW_PARTIAL_ENV}=1 to run such workers anyway; see `ocapd doctor`)"
                    )
                yield worker
            finally:
                with trio.CancelScope(shield=True):
                    if hasattr(worker, "connection"):
                        await worker.terminate()
                runner.stop()
    except BaseExceptionGroup as group:
        # The connection task does not fail on its own; a lone error is the
        # caller's (or a WorkerStartError): raise it as itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if not worker.exited:  # the connection never came up: make sure the process is gone
            with trio.CancelScope(shield=True):
                process.kill()
                await worker.wait_exited()
        process.close()
