"""The hook the daemon is handed: the gateway comes up beside a daemon already serving.

Importing the web stack (quart, hypercorn and what they pull in) costs about as
much CPU as the rest of the daemon's start-up together. So ``gateway_hook``
binds the listening socket at once (cheap, and the one step that fails for a
reason the user must hear: the port is taken) and returns; once the daemon
has said it is ready (``services.daemon_ready``), the import runs in a worker
thread and hypercorn is handed the bound socket when it is done, while the
daemon already answers its CLI. A port that cannot be bound raises
``GatewayBindError`` (a ``StartError``) from the hook, so the daemon never reports ready and
``ocapd start`` fails with the reason. Whatever needs the gateway
(``ocapd chat``, opening a weblet) waits for ``kernel.services.gateway_ready``,
which is set once the gateway is serving — or has failed to, which it logs
and ``ocapd chat`` reports.

This module stays light: the CLI (the composition root) imports it to build
the hook without importing the web stack.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ocapd.daemon.service import StartError

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "GatewayBindError", "GatewayHook", "bind_listener", "gateway_hook"]

log = logging.getLogger("ocapd.gateway")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8920

GatewayHook = Callable[["Kernel", Any, trio.Nursery], Awaitable[None]]

#: Listen backlog: a page reconnecting many sockets at once should not see resets.
LISTEN_BACKLOG = 1024


class GatewayBindError(StartError):
    """The gateway's port cannot be listened on (taken, not permitted): the daemon does not start."""


def bind_listener(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound and listening; ``GatewayBindError`` with the reason if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # CapTP sends small frames, often two in a row (a result, then a gc
        # message): without TCP_NODELAY the second waits for the peer's
        # delayed ACK, tens of milliseconds per call. Accepted sockets
        # inherit the option from the listener on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        sock.set_inheritable(False)  # workers must not inherit it
    except OSError as e:
        sock.close()
        why = (e.strerror or str(e)).lower()
        raise GatewayBindError(f"the gateway cannot listen on {host}:{port}: {why}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def gateway_hook(
    port: int = DEFAULT_PORT,
    *,
    host: str = DEFAULT_HOST,
    static_dir: Path | None = None,
    enable_echo: bool = False,
) -> GatewayHook:
    """The hook ``run_daemon(..., gateway=…)`` calls to start the gateway in its nursery."""

    async def start(kernel: Kernel, facet: Any, nursery: trio.Nursery) -> None:
        sock = bind_listener(host, port)  # GatewayBindError: the daemon does not start
        ready = trio.Event()
        kernel.services.gateway_ready = ready

        async def bring_up() -> None:
            if kernel.services.daemon_ready is not None:
                # Not before: the import holds the GIL for long stretches and
                # would delay the daemon's last steps to ready.
                await kernel.services.daemon_ready.wait()
            try:
                app = await trio.to_thread.run_sync(importlib.import_module, "ocapd.gateway.app")
                await app.start_gateway(
                    kernel, nursery, port=port, host=host, static_dir=static_dir, enable_echo=enable_echo, sock=sock
                )
            except Exception:
                sock.close()
                log.exception("gateway: could not start; the daemon runs without it")
            finally:
                ready.set()

        nursery.start_soon(bring_up)

    return start
