"""The hook the daemon is handed: the gateway comes up beside a daemon already serving.

Importing the web stack (quart, hypercorn and what they pull in) costs about as
much CPU as the rest of the daemon's start-up together. So ``gateway_hook``
returns at once: the import runs in a worker thread and the gateway starts when
it is done, while the daemon already answers its CLI. Whatever needs the
gateway (``ocapd chat``, opening a weblet) waits for
``kernel.services.gateway_ready``, which is set once the gateway is
listening — or has failed to, which it logs and ``ocapd chat`` reports.

This module stays light: the CLI (the composition root) imports it to build
the hook without importing the web stack.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "GatewayHook", "gateway_hook"]

log = logging.getLogger("ocapd.gateway")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8920

GatewayHook = Callable[["Kernel", Any, trio.Nursery], Awaitable[None]]


def gateway_hook(
    port: int = DEFAULT_PORT,
    *,
    host: str = DEFAULT_HOST,
    static_dir: Path | None = None,
    enable_echo: bool = False,
) -> GatewayHook:
    """The hook ``run_daemon(..., gateway=…)`` calls to start the gateway in its nursery."""

    async def start(kernel: Kernel, facet: Any, nursery: trio.Nursery) -> None:
        ready = trio.Event()
        kernel.services.gateway_ready = ready

        async def bring_up() -> None:
            try:
                app = await trio.to_thread.run_sync(importlib.import_module, "ocapd.gateway.app")
                await app.start_gateway(
                    kernel, nursery, port=port, host=host, static_dir=static_dir, enable_echo=enable_echo
                )
            except Exception:
                log.exception("gateway: could not start; the daemon runs without it")
            finally:
                ready.set()

        nursery.start_soon(bring_up)

    return start
