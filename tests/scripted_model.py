"""A scripted OpenAI-compatible chat-completions endpoint: a real HTTP server on 127.0.0.1 for the model tests.

The standard library's server, in a thread; each request takes the next
answer the test queued (a JSON body, ``(status, body)``, a string sent as
is, or ``"hang"``: no answer until the server closes, for the timeout
tests). What it received (bodies, headers) is kept for the test to check.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedModel", "text_answer", "tool_answer"]


class ScriptedModel:
    """An OpenAI-compatible ``/v1/chat/completions`` whose answers the test queues, one per request."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                model.bodies.append(json.loads(body))
                model.headers.append({k.lower(): v for k, v in self.headers.items()})
                answer = model.script.pop(0) if model.script else {"error": "nothing scripted"}
                status = 200
                if answer == "hang":
                    model.release.wait(30)
                    answer = text_answer("too late")
                if isinstance(answer, tuple):
                    status, answer = answer
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                if self.path != "/v1/chat/completions":
                    status, data = 404, b'{"error": "no such path"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the daemon gave up (the timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def text_answer(text: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}  # fmt: skip


def tool_answer(name: str, args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}  # fmt: skip
