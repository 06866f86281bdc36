"""gateway: the single HTTP + WebSocket port of the daemon (the Chat UI and CapTP for browsers).

Started inside the daemon's nursery through ``gateway_hook`` (the daemon
never imports this package); see ``app.py`` for routes and policies and
docs/gateway.md for the user's view.
"""

from __future__ import annotations

from .app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Gateway,
    GatewayConfig,
    GatewayControl,
    GatewayService,
    Site,
    chat_csp,
    gateway_hook,
)
from .static import build_table
from .tokens import INVALID_TOKEN_MESSAGE, FailureThrottle, InvalidToken, TokenRecord, TokenStore
from .transport import QuartWebSocketTransport
from .weblets import WebletBootstrap, WebletHosting, WebletInstance

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FailureThrottle",
    "Gateway",
    "GatewayConfig",
    "GatewayControl",
    "GatewayService",
    "INVALID_TOKEN_MESSAGE",
    "InvalidToken",
    "QuartWebSocketTransport",
    "Site",
    "TokenRecord",
    "TokenStore",
    "WebletBootstrap",
    "WebletHosting",
    "WebletInstance",
    "build_table",
    "chat_csp",
    "gateway_hook",
]
