"""gateway: the single HTTP + WebSocket port of the daemon (the Chat UI and CapTP for browsers).

Started inside the daemon's nursery through ``gateway_hook`` (the daemon
never imports this package); see ``app.py`` for routes and policies,
``hook.py`` for how it starts, and docs/gateway.md for the user's view.

The web stack is imported on first use of a name that needs it, so building
the hook (``from gateway import gateway_hook``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from .hook import DEFAULT_HOST, DEFAULT_PORT, GatewayBindError, GatewayHook, gateway_hook

_LAZY = {
    "Gateway": "app",
    "GatewayConfig": "app",
    "GatewayControl": "app",
    "GatewayService": "app",
    "Site": "site",
    "chat_csp": "app",
    "start_gateway": "app",
    "build_table": "static",
    "INVALID_TOKEN_MESSAGE": "tokens",
    "FailureThrottle": "tokens",
    "InvalidToken": "tokens",
    "TokenRecord": "tokens",
    "TokenStore": "tokens",
    "QuartWebSocketTransport": "transport",
    "WebletBootstrap": "weblets",
    "WebletHosting": "weblets",
    "WebletInstance": "weblets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "GatewayBindError", "GatewayHook", "gateway_hook", *_LAZY]
