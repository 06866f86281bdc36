"""The daemon process: one trio nursery owning the database, the kernel, the
worker launcher, the Unix socket the CLI connects to, and (through a hook) the
gateway.

Start-up: take the state folder's lock (two daemons never share a state), open
and migrate the database, load formulas, create the root host on first run,
listen on ``run/ocapd.sock`` (its 0700 folder is the CLI's authority), then
report readiness. The workers' fork server starts alongside, not waited for:
only the first worker needs it. The gateway's web stack is imported after
ready, so that it does not compete with start-up for the GIL. SIGTERM/SIGINT or ``stop()`` end it cleanly: workers are
terminated, sessions aborted, the socket and pid file removed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from ocapd.captp import far, open_stream_connection

from . import formulas as F
from .catalogue import MAKERS
from .db import Database
from .hosts import stage_host
from .kernel import ChatAgents, Kernel, Services
from .limits import DaemonLimits, load_limits, raise_fd_limit, shared_budget
from .paths import Paths, ensure_dirs
from .petstore import ChangeStream

__all__ = ["run_daemon", "AgentHook", "AlreadyRunning", "StartError", "DaemonFacet", "GatewayHook"]

log = logging.getLogger("ocapd")

#: The gateway (another layer) plugs in here: it is started in the daemon's
#: nursery with the kernel and root host, without the daemon importing it.
#: It sets its control object as ``kernel.services.gateway`` (what
#: ``DaemonFacet.gateway()`` returns) and ``kernel.services.gateway_ready``, and
#: may add ``async () -> None`` callables to ``kernel.services.before_stop``,
#: awaited first on stop.
GatewayHook = Callable[[Kernel, Any, trio.Nursery], Awaitable[None]]
#: The chat agent (``ocapd.chat_host``) plugs in here: called once with the
#: kernel, it returns what ``kernel.services.agent`` holds (``Host.agent()``
#: and the gateway's agent routes reach it there, never by import).
AgentHook = Callable[[Kernel], ChatAgents]


class AlreadyRunning(RuntimeError):
    """Another daemon holds this state folder."""


class StartError(RuntimeError):
    """A part of the daemon could not come up (the gateway's port is taken): it does not start.

    The message is one line for the user; ``run_daemon`` raises it as itself.
    """


@contextmanager
def state_lock(paths: Paths) -> Iterator[None]:
    fd = os.open(paths.lockfile, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise AlreadyRunning(
                    f"another ocapd daemon (pid {holder}) is using {paths.state}"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@far("Ocapd")
class DaemonFacet:
    """What the CLI reaches over the Unix socket (filesystem permission is the authority)."""

    def __init__(self, kernel: Kernel, root_host_id: str, stop: trio.Event) -> None:
        self._kernel = kernel
        self._root = root_host_id
        self._stop = stop

    def ping(self) -> str:
        return "pong"

    async def host(self) -> Any:
        """The root host agent."""
        return await self._kernel.provide(self._root)

    async def agent(self, path: str) -> Any:
        """The agent named ``path`` in the root host (for ``--as``)."""
        host = await self._kernel.provide(self._root)
        fid = await host.identify(path)
        if fid is None:
            raise LookupError(f"unknown agent {path!r}")
        if self._kernel.type_of(fid) not in ("host", "guest"):
            raise TypeError(f"{path!r} is a {self._kernel.type_of(fid)}, not an agent")
        return await self._kernel.provide(fid)

    def stop(self) -> None:
        self._stop.set()

    async def cancel(self, id_prefix: str, reason: str = "cancelled") -> list[str]:
        """Cancel the value whose formula id starts with ``id_prefix`` (``ocapd inspect``'s ids), as ``Host.cancel``.

        Reaches what no name does yet, such as the fresh worker of an ``eval`` still running.
        """
        from .hosts import cancel_reason

        prefix = str(id_prefix).lower()
        matches = self._kernel.ids_starting_with(prefix) if len(prefix) >= 8 else []
        if len(matches) != 1:
            raise LookupError(f"no name or id {id_prefix!r}" if not matches else f"{id_prefix!r} is the start of several ids")
        return await self._kernel.cancel(matches[0], cancel_reason(prefix[:16], reason))

    def where(self) -> dict[str, str]:
        p = self._kernel.services.paths
        assert p is not None  # run_daemon sets it before the CLI can connect
        table = {"state": str(p.state), "run": str(p.run), "sock": str(p.sock), "log": str(p.daemon_log), "cache": str(p.cache)}
        gateway = self._kernel.services.gateway
        if gateway is not None and gateway.info()["url"]:
            table["gateway"] = gateway.info()["url"]
        return table

    async def agent_console(self, agent: Any) -> Any:
        """A host's chat-agent console: its model setting and MCP (``ocapd agent``, ``ocapd mcp``).

        Only here, behind the socket's folder permission: the model setting
        chooses where chat messages go and which environment variable of the
        daemon is sent as the key, so a gateway token must not reach it.
        """
        agents = self._kernel.services.agent
        if agents is None:
            raise RuntimeError("this daemon runs without the chat agent")
        agent_id = self._kernel.identify_value(agent)
        if agent_id is None or self._kernel.type_of(agent_id) != "host":
            raise TypeError("the chat agent's console is a host's")
        return await agents.console_for(agent)

    async def gateway(self) -> Any:
        """The gateway's control object (tokens, chat URL), if this daemon runs one.

        The gateway comes up just after the daemon is ready; this waits for it.
        """
        gateway = await self._kernel.gateway()
        if gateway is None:
            raise LookupError("this daemon runs without a gateway")
        return gateway

    def inspect(self) -> dict[str, Any]:
        """Live incarnations, workers and CapTP sessions, for operators."""
        k = self._kernel
        return {
            "daemon": {
                "pid": os.getpid(),
                "uptime_s": round(time.time() - k.started, 3),
                "rss_bytes": _rss_bytes(os.getpid()),
                "formulas": len(k.formulas),
                "followers": len(ChangeStream.live),
                "budget": k.services.budget.stats() if k.services.budget is not None else None,
            },
            "incarnations": k.live(),
            "workers": [w.control.info() for w in list(k.services.workers.values())],
            "sessions": [
                {"name": name, **conn.stats()} for name, conn in list(k.services.sessions.items())
            ]
            + [  # the daemon's side of each worker's pipe
                {"name": f"worker-{w.id[:12]}", **w.worker.connection.stats()}
                for w in list(k.services.workers.values())
            ],
            "ocapn": _ocapn_report(k),
        }

    async def network(self) -> Any:
        """The daemon's OCapN listener: ``listen``, ``stop``, ``show`` (``ocapd network``)."""
        from .peers import NetworkControl

        return NetworkControl(self._kernel)

    def doctor(self) -> dict[str, Any]:
        from ocapd.workers import probe

        return probe()


def _ocapn_report(kernel: Kernel) -> dict[str, Any] | None:
    """The peers this daemon knows (their formulas) and its OCapN sessions; None before it first peered."""
    network = kernel.services.network
    peers = [
        {"id": fid, "locator": f.locator, "live": kernel.is_live(fid)}
        for fid, f in list(kernel.formulas.items())
        if isinstance(f, F.PeerFormula)
    ]
    shares = sum(1 for f in list(kernel.formulas.values()) if isinstance(f, F.ShareFormula))
    if network is None and not peers:
        return None
    return {
        **(network.show() if network is not None else {"listening": False, "uri": None, "sessions": []}),
        "peers": peers,
        "shares": shares,
        # Peers that fetched a share that still exists: who holds what this daemon gave out.
        "holders": network.fetches.holders() if network is not None else [],
    }


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def _ensure_root(kernel: Kernel) -> str:
    """The root host's id, creating the root formulas on first start."""
    root = kernel.db.get_meta("root_host")
    if root is not None:
        kernel.services.least_authority = kernel.db.get_meta("least_authority")
        return root
    txn = kernel.txn()
    least = txn.formula(F.LeastAuthorityFormula())
    endo_id = F.new_formula_id()
    host_id = stage_host(txn, endo=endo_id)
    txn.formula(F.EndoFormula(host=host_id, least_authority=least), endo_id)
    txn.batch.set_meta("root_host", host_id)
    txn.batch.set_meta("least_authority", least)
    await kernel.commit(txn)
    kernel.services.least_authority = least
    return host_id


async def _serve_cli(kernel: Kernel, facet: DaemonFacet, listener: trio.SocketListener) -> None:
    counter = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal counter
        counter += 1
        name = f"cli-{counter}"
        async with open_stream_connection(stream, facet, name=name) as conn:
            kernel.services.sessions[name] = conn
            try:
                await conn.wait_closed()
            finally:
                kernel.services.sessions.pop(name, None)

    await trio.serve_listeners(handle, [listener])


async def run_daemon(
    paths: Paths,
    *,
    on_ready: Callable[[], None] | None = None,
    gateway: GatewayHook | None = None,
    agent: AgentHook | None = None,
) -> None:
    """Run the daemon until stopped (SIGTERM, SIGINT or ``stop()``).

    ``gateway`` starts the HTTP side in the daemon's nursery; ``agent`` makes
    the chat agent for the kernel (both are other layers, handed in by the
    composition root, ``ocapd/run.py``).
    """
    ensure_dirs(paths)
    limits = load_limits()  # a bad OCAPD_LIMITS stops us here, before anything is opened
    with state_lock(paths):
        db = await Database.open(paths.db)
        try:
            await _run(paths, db, on_ready, gateway, limits, agent)
        finally:
            await db.aclose()
            for p in (paths.sock, paths.pidfile):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


async def _run(
    paths: Paths,
    db: Database,
    on_ready: Callable[[], None] | None,
    gateway: GatewayHook | None,
    limits: DaemonLimits,
    agent: AgentHook | None = None,
) -> None:
    from ocapd.workers import Launcher

    stop = trio.Event()
    launcher = Launcher()
    try:
        async with trio.open_nursery() as nursery:
            # The fork server imports for a while in a process of its own
            # (on the other core, if there is one): the daemon serves
            # meanwhile, and a worker launched before it is ready waits for it
            # (Launcher.launch). Started after ready it would cost start-up
            # nothing, but tests/test_stopping.py's worker counting assumes
            # it comes up with the daemon.
            nursery.start_soon(launcher.start)
            daemon_ready = trio.Event()
            services = Services(
                paths=paths,
                launcher=launcher,
                names=db.load_names(),
                limits=limits,
                # Workers' and gateway sessions share one budget; the owner's CLI has none.
                budget=shared_budget(limits),
                fd_limit=raise_fd_limit(),
                daemon_ready=daemon_ready,
            )
            kernel = Kernel(db, nursery, MAKERS, services)
            kernel.load()
            root = await _ensure_root(kernel)
            facet = DaemonFacet(kernel, root, stop)
            if agent is not None:
                kernel.services.agent = agent(kernel)

            if gateway is not None:
                # First: a gateway that cannot listen (a taken port) fails the
                # start before anything answers (the hook raises StartError).
                await gateway(kernel, facet, nursery)
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                os.unlink(paths.sock)  # stale socket of a daemon that died; we hold the lock
            except FileNotFoundError:
                pass
            await sock.bind(str(paths.sock))
            os.chmod(paths.sock, 0o600)
            sock.listen(128)
            listener = trio.SocketListener(sock)
            nursery.start_soon(_serve_cli, kernel, facet, listener)
            nursery.start_soon(_watch_signals, stop)
            with open(paths.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
            log.info("ocapd ready: pid %d, socket %s", os.getpid(), paths.sock)
            if on_ready is not None:
                on_ready()
            daemon_ready.set()
            if db.get_meta("ocapn_listen"):
                from .peers import resume_listening

                nursery.start_soon(resume_listening, kernel)
            await stop.wait()
            log.info("ocapd stopping")
            kernel.services.stopping = True
            for before_stop in kernel.services.before_stop:
                await before_stop()
            for sess in list(kernel.services.sessions.values()):
                sess.close("closed: daemon stopping")
            for fid in list(kernel.services.workers):
                await kernel.cancel(fid, "daemon stopping")
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], StartError):
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            await launcher.aclose()


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()
            return


def configure_logging(paths: Paths, *, to_stderr: bool) -> None:
    paths.daemon_log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handlers: list[logging.Handler] = [logging.FileHandler(paths.daemon_log)]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
