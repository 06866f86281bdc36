"""Commands an agent runs through the daemon: names, values, evaluation, weblets, mail, tokens and the chat URL.

Each is ``cmd_NAME(conversation, args)``, wrapped by ``agent_command`` so it
runs inside one conversation with the daemon as the agent ``--as`` names.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from .conversation import (
    CliError,
    Conversation,
    agent_command,
    bundle_bytes,
    looks_like_a_path,
    parse_message,
    parse_pairs,
    parse_powers,
)
from .render import format_message, is_reference, print_json, print_name_event, show_value

#: How long ``ocapd show`` waits for a value still being computed (``--timeout``).
SHOW_TIMEOUT = 10.0


@agent_command
def cmd_list(conv: Conversation, args: argparse.Namespace) -> None:
    if args.follow:
        stream = conv.on_agent("follow_name_changes", args.path)
        conv.follow(stream, print_name_event(args))
        return
    target = conv.agent if args.path is None else conv.on_agent("lookup", args.path)
    if args.json or args.long:
        entries = conv.call(conv.E(target).list_entries())
        if args.json:
            print_json(entries)
        else:
            for e in entries:
                print(f"{e['name']:24} {e['type']:16} {'live' if e['live'] else '-':5} {e['id'][:16]}")
        return
    for name in conv.call(conv.E(target).list()):
        print(name)


@agent_command
def cmd_show(conv: Conversation, args: argparse.Namespace) -> None:
    info = conv.on_agent("describe", args.path)
    try:
        # A value is computed on first use; never wait for ever. The work goes
        # on without us (it is shared): `cancel` is what stops it.
        value = conv.call(conv.E(conv.agent).lookup(args.path), timeout=args.timeout or None)
    except TimeoutError:
        raise CliError(
            f"{args.path} is still being computed; `ocapd show {args.path}` again waits for it, "
            f"`ocapd cancel {args.path}` stops it"
        ) from None
    if args.json:
        print_json({**info, "value": value})
    elif not is_reference(value):  # copy data: a stored value, or what a computation returned
        print(show_value(value))
    else:
        print(f"<{info['type']} {info['id'][:16]}>")


@agent_command
def cmd_remove(conv: Conversation, args: argparse.Namespace) -> None:
    # All or nothing: every name is checked before any is removed.
    missing = [path for path in args.paths if not conv.on_agent("has", path)]
    if missing:
        raise CliError(f"no name {missing[0]!r}; nothing was removed")
    removed: list[str] = []
    for path in args.paths:
        try:
            conv.on_agent("remove", path)
        except Exception as e:
            if not removed:
                raise
            raise CliError(f"removed {', '.join(removed)}, then could not remove {path!r}: {e}") from None
        removed.append(path)


@agent_command
def cmd_move(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("move", args.source, args.dest)


@agent_command
def cmd_copy(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("copy", args.source, args.dest)


@agent_command
def cmd_mkdir(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("make_directory", args.path)


@agent_command
def cmd_store(conv: Conversation, args: argparse.Namespace) -> None:
    if args.path is not None:
        try:
            data = open(args.path, "rb").read()
        except OSError as e:
            raise CliError(f"cannot read {args.path}: {e.strerror}") from None
        _naming(conv, "store_blob", data, args.name, _replace(args))
        return
    if args.stdin:
        _naming(conv, "store_blob", sys.stdin.buffer.read(), args.name, _replace(args))
        return
    if args.json_value is not None:
        import json

        try:
            value = json.loads(args.json_value)
        except json.JSONDecodeError as e:
            raise CliError(f"--json: not valid JSON: {e.msg} at column {e.colno}") from None
    elif args.bigint is not None:
        try:
            value = int(args.bigint)
        except ValueError:
            raise CliError(f"--bigint: not an integer: {args.bigint!r}") from None
    else:
        value = args.text
    _naming(conv, "store_value", value, args.name, _replace(args))


@agent_command
def cmd_mktext(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("make_text_store", args.name, args.text or "")


@agent_command
def cmd_eval(conv: Conversation, args: argparse.Namespace) -> None:
    from ocapd.captp import Far

    names, paths = parse_pairs(args.endowments, "eval")
    # What the code prints comes back while it runs: its stdout to ours
    # (stderr with --json, which keeps stdout for the result), its stderr to ours.
    out = sys.stderr if args.json else sys.stdout

    def write(stream: str, text: str) -> None:
        target = sys.stderr if stream == "stderr" else out
        target.write(text)
        target.flush()

    options = {**_replace(args), "output": Far("Output", write=write)}
    if args.timeout is not None:
        options["timeout"] = _positive(args.timeout, "--timeout")
    value = _naming(conv, "evaluate", args.worker, args.source, names, paths, args.name, options)
    if args.json:
        print_json(value)
    else:
        _print_result(value, args.name)


@agent_command
def cmd_spawn(conv: Conversation, args: argparse.Namespace) -> None:
    for name in args.names:
        conv.on_agent("provide_worker", name)


@agent_command
def cmd_make(conv: Conversation, args: argparse.Namespace) -> None:
    powers = parse_powers(args.powers)
    options = _replace(args)
    if args.timeout is not None:
        options["timeout"] = _positive(args.timeout, "--timeout")
    if args.bundle is not None:
        value = _naming(conv, "make_bundle", args.worker, args.bundle, powers, args.name, options)
    elif args.specifier is not None:
        spec = args.specifier
        if os.path.exists(spec):
            spec = os.path.abspath(spec)
        value = _naming(conv, "make_unconfined", args.worker, spec, powers, args.name, options)
    else:
        raise CliError("make: give a module file or name, or --bundle NAME")
    _print_result(value, args.name)


@agent_command
def cmd_install(conv: Conversation, args: argparse.Namespace) -> None:
    # A file or folder is read here; anything else names a stored bundle.
    bundle: Any = bundle_bytes(args.bundle) if os.path.exists(args.bundle) or looks_like_a_path(args.bundle) else args.bundle
    weblet = _naming(conv, "install_weblet", bundle, args.name, parse_powers(args.powers), _replace(args))
    manifest = conv.call(conv.E(weblet).manifest())
    if args.json:
        print_json(manifest)
    else:
        print(f"installed {manifest['title']} {manifest['version']} as {args.name} (powers {args.powers})")
        if manifest.get("webrtc") is True:
            print(f"warning: {args.name} declares WebRTC: its page may send data to any address", file=sys.stderr)


@agent_command
def cmd_open(conv: Conversation, args: argparse.Namespace) -> None:
    kind = conv.on_agent("describe", args.name)["type"]
    if kind != "weblet":
        raise CliError(f"{args.name} names {_a(kind)}, not a weblet")
    instance = conv.call(conv.E(conv.on_agent("lookup", args.name)).open())
    if args.json:
        print_json(instance)
    else:
        print(instance["url"])


@agent_command
def cmd_cancel(conv: Conversation, args: argparse.Namespace) -> None:
    import re

    if re.fullmatch(r"[0-9a-f]{8,64}", args.path) and not conv.on_agent("has", args.path):
        # An id as `ocapd inspect` prints it: also what no name reaches yet
        # (the fresh worker of an eval still running). The CLI's socket is
        # the daemon's whole authority, as for inspect.
        cancelled = conv.call(conv.E(conv.facet).cancel(args.path, args.reason))
    else:
        cancelled = conv.on_agent("cancel", args.path, args.reason)
    if args.json:
        print_json(cancelled)


@agent_command
def cmd_mkhost(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("provide_host", args.handle_name, args.agent_name or f"{args.handle_name}-agent")


@agent_command
def cmd_mkguest(conv: Conversation, args: argparse.Namespace) -> None:
    host_names, guest_names = parse_pairs(args.introduce, "--introduce")
    conv.on_agent(
        "provide_guest",
        args.handle_name,
        args.agent_name or f"{args.handle_name}-agent",
        dict(zip(host_names, guest_names, strict=True)),
    )


@agent_command
def cmd_inbox(conv: Conversation, args: argparse.Namespace) -> None:
    if args.follow:
        stream = conv.on_agent("follow_messages")

        def show(event: dict[str, Any]) -> None:
            if args.json:
                print_json(event)
            elif "add" in event:
                print(format_message({"from_names": [], **event["add"]}))
            sys.stdout.flush()

        conv.follow(stream, show)
        return
    # Page by page: each page fits a frame, however much mail there is.
    messages: list[dict[str, Any]] = []
    while page := conv.on_agent("list_messages", messages[-1]["number"] if messages else -1):
        messages += page
    if args.json:
        print_json(messages)
        return
    for m in messages:
        print(format_message(m))


@agent_command
def cmd_send(conv: Conversation, args: argparse.Namespace) -> None:
    strings, edges, pets = parse_message(args.text)
    conv.on_agent("send", args.to, strings, edges, pets)


@agent_command
def cmd_request(conv: Conversation, args: argparse.Namespace) -> None:
    value = conv.on_agent("request", args.to, args.description, args.name)
    _print_result(value, args.name)


@agent_command
def cmd_resolve(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("resolve", args.number, args.path)


@agent_command
def cmd_reject(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("reject", args.number, args.reason)


@agent_command
def cmd_adopt(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("adopt", args.number, args.edge, args.name or args.edge)


@agent_command
def cmd_dismiss(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("dismiss", args.number)


def _gateway(conv: Conversation) -> Any:
    return conv.call(conv.E(conv.facet).gateway())


@agent_command
def cmd_tokens(conv: Conversation, args: argparse.Namespace) -> None:
    gateway = _gateway(conv)
    if args.action == "list":
        tokens = conv.call(conv.E(gateway).list_tokens())
        if args.json:
            print_json(tokens)
            return
        for t in tokens:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(t["created"]))
            print(f"{t['id'][:12]}  {created}  {t['agent_type']:6} {t['agent'][:16]}  {t['label']}")
    elif args.action == "mint":
        label = args.label if args.label is not None else (args.as_agent or "host")
        minted = conv.call(conv.E(gateway).mint(conv.agent, label))
        if args.json:
            print_json(minted)
        else:
            print(minted["token"])
    else:
        if not args.id:
            raise CliError("tokens revoke: give a token id (or a unique prefix of one)")
        revoked = conv.call(conv.E(gateway).revoke(args.id))
        if args.json:
            print_json(revoked)


@agent_command
def cmd_chat(conv: Conversation, args: argparse.Namespace) -> None:
    url = conv.call(conv.E(_gateway(conv)).chat_url(conv.agent))
    if args.json:
        print_json({"url": url})
    else:
        print(url)
    if args.open:
        import webbrowser

        webbrowser.open(url)


def _replace(args: argparse.Namespace) -> dict[str, Any]:
    return {"replace": True} if getattr(args, "replace", False) else {}


def _positive(value: float, option: str) -> float:
    if not value > 0:
        raise CliError(f"{option}: give a positive number of seconds")
    return value


def _naming(conv: Conversation, method: str, *call_args: Any) -> Any:
    """Call a method that names its result: a name in use is refused unless --replace (one rule for all)."""
    from ocapd.captp import RemoteError

    try:
        return conv.on_agent(method, *call_args)
    except RemoteError as e:
        if e.name == "NameTaken":
            raise CliError(f"{e.message}; pass --replace to replace it") from None
        raise


def _print_result(value: Any, name: str | None) -> None:
    """What a command that may name its result (-n) prints: the value, unless it was named and is a reference."""
    if is_reference(value):
        if name is None:
            print("<a reference: name it with -n to keep it>")
        return
    if name is None or value is not None:
        print(show_value(value))


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
