"""``ocapd run-daemon``: the composition root that wires the daemon, its gateway and the chat together.

The daemon never imports the gateway (DESIGN §1): it is handed a hook that
starts the gateway in its nursery, and the gateway is handed the chat page's
folder. This module is the one place that knows all three.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .conversation import bundle_bytes, connect, state_paths
from .render import describe_error


def cmd_run_daemon(args: argparse.Namespace) -> None:
    import trio

    from ocapd.daemon.service import AlreadyRunning, StartError, configure_logging, run_daemon

    paths = state_paths()
    from ocapd.daemon.paths import ensure_dirs

    ensure_dirs(paths)
    configure_logging(paths, to_stderr=not args.quiet)
    if args.examples == "":  # --examples with no folder: the ones shipped with ocapd
        from ocapd.examples import WEBLETS_DIR

        args.examples = str(WEBLETS_DIR)

    def on_ready() -> None:
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)
        elif not args.quiet:
            print(f"ocapd is running (socket {paths.sock}); stop it with Ctrl-C or `ocapd stop`", flush=True)
        if args.examples or args.print_chat_url:
            import threading

            # A plain thread with the blocking client: it talks to this very
            # daemon over its socket, like any other command would.
            threading.Thread(target=_welcome, args=(args.examples,), daemon=True).start()

    # The composition root: the daemon never imports the gateway, and the
    # gateway is handed the chat page's folder rather than looking for it.
    from ocapd.chat_host import STATIC_DIR
    from ocapd.gateway import DEFAULT_PORT, gateway_hook

    hook = gateway_hook(DEFAULT_PORT if args.port is None else args.port, static_dir=STATIC_DIR)
    try:
        trio.run(lambda: run_daemon(paths, on_ready=on_ready, gateway=hook, agent=_LazyChatAgents))
    except (AlreadyRunning, StartError) as e:
        # One line; `ocapd start` (whose daemon's stderr is the log) reports it as the reason.
        print(f"ocapd: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _welcome(examples: str | None) -> None:
    """Install the example weblets (once) and print the chat URL."""
    try:
        with connect() as client:
            from ocapd.captp import E

            host = client.wait(E(client.bootstrap()).host())
            names = set(client.wait(E(host).list()))
            if examples:
                for folder in sorted(os.listdir(examples)):
                    path = os.path.join(examples, folder)
                    if folder in names or not os.path.isdir(path):
                        continue
                    client.wait(E(host).install_weblet(bundle_bytes(path), folder, "NONE"))
                    print(f"installed the example weblet {folder!r}", flush=True)
            gateway = client.wait(E(client.bootstrap()).gateway())
            url = client.wait(E(gateway).chat_url(host))
            print(f"\nOpen the chat: {url}\n", flush=True)
    except Exception as e:  # the daemon runs on; say what went wrong in one line
        print(f"ocapd: could not finish setting up: {describe_error(e)}", file=sys.stderr, flush=True)


class _LazyChatAgents:
    """The chat agent (``ocapd.chat_host.agent``), imported once the daemon is ready.

    Importing it brings the manifest models and the fetch stack (~100 ms),
    which the daemon does not need to answer its first command: like the
    gateway's web stack, it is imported in a thread after ready, and a call
    that comes first waits for it. It offers what ``ChatAgents`` promises.
    """

    def __init__(self, kernel: Any) -> None:
        import trio

        self._kernel = kernel
        self._agents: Any = None
        self._lock = trio.Lock()
        kernel.nursery.start_soon(self._warm)

    async def _warm(self) -> None:
        ready = self._kernel.services.daemon_ready
        if ready is not None:
            await ready.wait()
        await self._get()

    async def _get(self) -> Any:
        import importlib

        import trio

        async with self._lock:
            if self._agents is None:
                module = await trio.to_thread.run_sync(importlib.import_module, "ocapd.chat_host.agent")
                self._agents = module.agent_hook(self._kernel)
        return self._agents

    async def for_host(self, host: Any) -> Any:
        return await (await self._get()).for_host(host)

    async def console_for(self, host: Any) -> Any:
        return await (await self._get()).console_for(host)
