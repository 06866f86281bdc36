"""The model path: a chat message to an OpenAI-compatible chat-completions endpoint, with tool calling.

One conversation per message (:func:`converse`): the system prompt of
``prompt.build_prompt`` (manifest text only as quoted, capped data between
the nonce delimiters), the user's text, and the visible tools as function
tools. Their names map ``.`` to ``__`` (OpenAI names allow
``[a-zA-Z0-9_-]``; a slug or command never contains ``__``, see
:func:`wire_name`), and their descriptions are fixed text pointing at the
tool's entry in the data: no manifest string travels outside the
delimiters. Each tool call the model returns is handed to ``run_tool`` —
the service's ``call(…, asked_by="model")``, with the same argument checks,
Allow and audit as a typed command — and its outcome goes back to the model
as a ``tool`` message; the model's final text is the reply.

Bounds: each request must be answered within the configured timeout (at
most :data:`MAX_TIMEOUT`), an answer is at most :data:`MAX_RESPONSE` bytes,
a conversation at most :data:`MAX_ROUNDS` requests and :data:`MAX_CALLS`
tool calls. Anything else — no connection, an HTTP error, a malformed
answer, a timeout — is a :class:`ModelError` with a one-line message.

The key is read from the daemon's environment variable the setting names,
at call time; it is sent only in the ``Authorization`` header of requests
to the configured URL, and never stored or shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .prompt import Prompt
from .tools import Tool

__all__ = [
    "DEFAULT_KEY_ENV", "DEFAULT_TIMEOUT", "MAX_TIMEOUT", "ModelConfig", "ModelError", "ToolOutcome", "converse",
    "endpoint", "function_tools", "make_config", "wire_name", "wire_names",
]  # fmt: skip

DEFAULT_KEY_ENV = "OCAPD_AGENT_KEY"
#: Seconds one request may take: a hosted model answering a short prompt.
DEFAULT_TIMEOUT = 30.0
#: Never longer: a chat message that waits five minutes has failed.
MAX_TIMEOUT = 300.0
#: One answer of the model (bytes): a chat reply and a few tool calls, not a document.
MAX_RESPONSE = 1024 * 1024
#: Requests per message: tool calls, their results back, the final answer.
MAX_ROUNDS = 4
#: Tool calls per message: a model looping over tools stops here.
MAX_CALLS = 8
#: The reply shown in the chat, in characters.
MAX_REPLY = 4000
#: What a tool's outcome tells the model (JSON characters).
MAX_TOOL_RESULT = 8 * 1024
MAX_MODEL_NAME = 200
#: Hosts plain http may reach: nothing leaves the machine.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: OpenAI's limit on a function's name (and what MCP clients such as Claude accept).
MAX_WIRE_NAME = 64
_WIRE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_URL = 2048
_KEY_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class ModelError(Exception):
    """The model could not answer: one line saying why."""


@dataclass(frozen=True)
class ModelConfig:
    """One host's model setting (``ocapd agent set``): everything but the key itself."""

    url: str
    model: str
    key_env: str = DEFAULT_KEY_ENV
    timeout: float = DEFAULT_TIMEOUT

    def public(self) -> dict[str, Any]:
        """What ``ocapd agent show`` prints: whether the key variable is set, never its value."""
        return {"url": self.url, "model": self.model, "key_env": self.key_env, "key_set": bool(os.environ.get(self.key_env)),
                "timeout": self.timeout}  # fmt: skip


def make_config(url: Any, model: Any, key_env: Any = None, timeout: Any = None) -> ModelConfig:
    """A checked setting, or ValueError naming the option that is wrong (one line)."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise ValueError("--url: give the endpoint's http(s) URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ValueError("--url: give the endpoint's http(s) URL (no user name, password or fragment in it)")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ValueError("--url: use https (plain http only to this machine: localhost, 127.0.0.1, ::1), the key and your messages travel in it")
    if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_NAME or not model.isprintable():
        raise ValueError(f"--model: give the model's name (1 to {MAX_MODEL_NAME} printable characters)")
    key_env = DEFAULT_KEY_ENV if key_env is None else key_env
    if not isinstance(key_env, str) or not _KEY_ENV.fullmatch(key_env):
        raise ValueError("--key-env: give the name of an environment variable (letters, digits, _)")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise ValueError(f"--timeout: a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return ModelConfig(url=url, model=model, key_env=key_env, timeout=float(timeout))


def endpoint(url: str) -> str:
    """The chat-completions URL: ``url`` itself if it names it, else ``url`` + ``/chat/completions`` (a base URL)."""
    if urlsplit(url).path.rstrip("/").endswith("/chat/completions"):
        return url
    return url.rstrip("/") + "/chat/completions"


def wire_name(name: str) -> str:
    """``counter.increment`` -> ``counter__increment``: what :func:`wire_names` tries first."""
    return name.replace(".", "__")


def wire_names(names: Iterable[str]) -> dict[str, str]:
    """A name per tool that model APIs and MCP clients accept (``[a-zA-Z0-9_-]{1,64}``), unique: wire name -> tool name.

    Mostly :func:`wire_name`; a command name may hold ``.`` or ``_`` and be
    long, so a name that is too long or already taken is cut and given a
    short hash of the tool's name. Calls are mapped back through this
    table, never by rewriting the name.
    """
    out: dict[str, str] = {}
    for name in names:
        wire = wire_name(name)
        if len(wire) > MAX_WIRE_NAME or wire in out or not _WIRE.fullmatch(wire):
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            wire = re.sub(r"[^a-zA-Z0-9_-]", "_", wire)[: MAX_WIRE_NAME - 9] + "_" + digest
        out[wire] = name
    return out


def function_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The tools as OpenAI function tools. The descriptions are ours: manifest text is only in the prompt's data."""
    by_name = {t.name: t for t in tools}
    return [
        {
            "type": "function",
            "function": {
                "name": wire,
                "description": f"Runs {name} (see its entry in the WEBLET-DATA list)."
                + ("" if by_name[name].read_only else " Changes things: runs only after the user allows it."),
                "parameters": by_name[name].parameters(),
            },
        }
        for wire, name in wire_names(t.name for t in tools).items()
    ]


@dataclass(frozen=True)
class ToolOutcome:
    """What running one tool call gave: JSON for the model, and the call (if one was made) for the chat."""

    content: dict[str, Any]
    call: Any = None


RunTool = Callable[[str, Any], Awaitable[ToolOutcome]]


def _malformed(what: str) -> ModelError:
    return ModelError(f"the model's answer was malformed ({what})")


def _parse(data: bytes) -> tuple[str | None, list[tuple[str, str, str]], dict[str, Any]]:
    """(text, [(call id, function name, raw arguments)], the assistant message) of a chat-completions answer."""
    try:
        answer = json.loads(data)
    except ValueError:
        raise _malformed("not JSON") from None
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _malformed("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _malformed("no message")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise _malformed("content is not text")
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _malformed("tool_calls is not a list")
    calls: list[tuple[str, str, str]] = []
    for raw in raw_calls:
        fn = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(fn, dict) or not isinstance(raw.get("id"), str) or not isinstance(fn.get("name"), str):
            raise _malformed("a tool call without an id or a function name")
        arguments = fn.get("arguments", "{}")
        if isinstance(arguments, dict):  # some servers send the object itself
            arguments = json.dumps(arguments)
        if not isinstance(arguments, str):
            raise _malformed("a tool call's arguments are neither a JSON string nor an object")
        calls.append((raw["id"][:128], fn["name"][:256], arguments))
    echoed: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        echoed["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]
    return text, calls, echoed


async def _post(client: Any, config: ModelConfig, body: dict[str, Any]) -> bytes:
    import httpx
    import trio

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = os.environ.get(config.key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        with trio.fail_after(config.timeout):  # the whole request, however slowly the server drips
            async with client.stream("POST", endpoint(config.url), json=body, headers=headers) as response:
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_RESPONSE:
                        raise ModelError(f"the model's answer was larger than {MAX_RESPONSE // 1024} KiB")
    except (trio.TooSlowError, httpx.TimeoutException):
        raise ModelError(f"the model did not answer within {config.timeout:g} s") from None
    except httpx.HTTPError as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelError(f"could not reach the model at {urlsplit(config.url).netloc} ({reason})") from None
    if response.status_code != 200:
        detail: Any = ""
        try:
            err = json.loads(data).get("error")
            detail = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else ""
        except (ValueError, AttributeError):
            pass
        line = " ".join(str(detail or "").split())[:200]
        raise ModelError(f"the model answered HTTP {response.status_code}" + (f": {line}" if line else ""))
    return data


async def converse(config: ModelConfig, prompt: Prompt, text: str, tools: Sequence[Tool], run_tool: RunTool) -> tuple[str, list[Any]]:
    """One message through the model: (the reply, the calls made). Raises :class:`ModelError` before any call ran.

    Once a tool call has run, a later failure does not raise (the router must
    not run the message a second time): it is the reply's last line.
    """
    import httpx

    offered = wire_names(t.name for t in tools)
    messages: list[dict[str, Any]] = [{"role": "system", "content": prompt.text}, {"role": "user", "content": text}]
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    if tools:
        body["tools"] = function_tools(tools)
    calls: list[Any] = []
    ran = 0
    async with httpx.AsyncClient(trust_env=False, timeout=config.timeout, follow_redirects=False) as client:
        for _ in range(MAX_ROUNDS):
            try:
                reply, tool_calls, echoed = _parse(await _post(client, config, body))
            except ModelError as e:
                if not calls:
                    raise
                return _cap(f"The model stopped answering: {e}."), calls
            if not tool_calls:
                return _cap(reply or ""), calls
            messages.append(echoed)
            for call_id, name, arguments in tool_calls:
                if ran >= MAX_CALLS:
                    content: dict[str, Any] = {"status": "error", "error": f"at most {MAX_CALLS} tool calls per message"}
                else:
                    ran += 1
                    try:
                        args = json.loads(arguments) if arguments.strip() else {}
                    except ValueError:
                        args = arguments  # the service refuses it as arguments that are not an object, and audits it
                    outcome = await run_tool(offered.get(name, name), args)
                    content = outcome.content
                    if outcome.call is not None:
                        calls.append(outcome.call)
                shown = json.dumps(content, ensure_ascii=False, default=str)
                if len(shown) > MAX_TOOL_RESULT:
                    shown = json.dumps({"status": content.get("status"), "error": "the result was too long to show"})
                messages.append({"role": "tool", "tool_call_id": call_id, "content": shown})
    return _cap(f"The model asked for more than {MAX_ROUNDS} rounds of tool calls; stopped."), calls


def _cap(text: str) -> str:
    return text if len(text) <= MAX_REPLY else text[: MAX_REPLY - 1] + "…"
