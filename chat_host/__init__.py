"""chat_host: the Chat web UI, shipped as static ES modules, and (later) the server side of chat.

``STATIC_DIR`` is the folder the gateway serves the chat page from: the page,
``captp.js`` (the browser's CapTP), ``weblet.js`` (the weblet SDK) and the
vendored ``@msgpack/msgpack`` ES module. It is package data, so an installed
wheel serves the same files as a checkout.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR"]

#: The chat page and the browser runtime, as the gateway serves them.
STATIC_DIR = Path(__file__).resolve().parent / "static"
