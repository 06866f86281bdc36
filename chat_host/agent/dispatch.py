"""Running a tool: a built-in in process, a weblet's backend ``invoke(name, args)``, or its open page's handler.

Order for a weblet: its backend when it has one and its ``make()`` object
answers ``invoke`` (works with no browser open); otherwise a page of the
weblet that registered handlers through ``weblet.js``'s ``commands.handle``
(one of the visible panels first), reached through the gateway's
``invoke_command`` — which again refuses a command the manifest does not
declare. Results must be plain JSON data (capped); anything else, an error
or a timeout becomes one :class:`CommandFailed` line shown as the weblet's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import E, RemoteError
from ocapd.daemon.weblets import backend_of

from .tools import Tool

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel
    from ocapd.daemon.registry import InstalledWeblet

__all__ = ["MAX_RESULT_BYTES", "CommandFailed", "dispatch"]

#: A command's result as JSON: what a chat transcript shows, not a bulk transfer.
MAX_RESULT_BYTES = 64 * 1024
#: Names listed by ``inventory.list`` at most.
MAX_INVENTORY = 500


class CommandFailed(Exception):
    """The command ran (or could not be reached) and failed; the message is one line for the chat."""


def _plain(tool: Tool, value: Any) -> Any:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise CommandFailed(f"{tool.name} answered something that is not plain data") from None
    if len(text.encode("utf-8")) > MAX_RESULT_BYTES:
        raise CommandFailed(f"{tool.name} answered more than {MAX_RESULT_BYTES // 1024} KiB")
    return json.loads(text)


def _one_line(error: BaseException) -> str:
    text = error.message if isinstance(error, RemoteError) and error.message else str(error)
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return text[:500]


async def _builtin(kernel: Kernel, host: Any, tool: Tool) -> Any:
    if tool.weblet == "inventory" and tool.command == "list":
        names = [n for n in host.list() if isinstance(n, str)][:MAX_INVENTORY]
        out = []
        for name in names:
            fid = await host.identify(name)
            out.append({"name": name, "type": kernel.type_of(fid) if fid in kernel.formulas else "unknown"})
        return {"names": out}
    if tool.weblet == "inbox" and tool.command == "pending":
        waiting = [m for m in host.list_messages() if m.get("type") == "request" and m.get("settled") is None]
        return {"requests": [{"number": m["number"], "from": m.get("from_names", [])[:1], "description": m.get("description", "")} for m in waiting]}
    raise CommandFailed(f"the built-in {tool.weblet} has no command {tool.command!r}")


async def _page(kernel: Kernel, record: InstalledWeblet, tool: Tool, args: dict[str, Any], visible: Sequence[str]) -> Any:
    gateway = kernel.services.gateway
    if gateway is None:
        raise CommandFailed(f"{tool.title} answers {tool.command} from its page, and no gateway is running")
    pages = [i for i in gateway.list_instances() if i.get("weblet") == record.formula and i.get("commands")]
    pages.sort(key=lambda i: i.get("panel") not in visible)
    if not pages:
        raise CommandFailed(f"{tool.title} answers {tool.command} from its page: open it in the chat, then ask again")
    return await gateway.invoke_command(pages[0]["label"], tool.command, args)


async def dispatch(
    kernel: Kernel, host: Any, record: InstalledWeblet | None, tool: Tool, args: dict[str, Any], visible: Sequence[str], *, timeout: float
) -> Any:
    """Run ``tool`` with checked ``args``; its plain-data result, or :class:`CommandFailed`."""
    try:
        with trio.fail_after(timeout):
            if tool.builtin or record is None:
                result = await _builtin(kernel, host, tool)
            else:
                weblet = await kernel.provide(record.formula)
                backend = backend_of(weblet)
                answered = False
                result = None
                if backend is not None:
                    try:
                        result = await E(backend).invoke(tool.command, dict(args))
                        answered = True
                    except RemoteError as e:
                        if not (e.name == "TypeError" and "has no method 'invoke'" in (e.message or "")):
                            raise
                if not answered:
                    result = await _page(kernel, record, tool, args, visible)
    except trio.TooSlowError:
        raise CommandFailed(f"{tool.name} did not answer within {timeout:g} s") from None
    except CommandFailed:
        raise
    except Exception as e:
        raise CommandFailed(_one_line(e)) from None
    return _plain(tool, result)
