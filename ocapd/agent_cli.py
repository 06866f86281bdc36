"""``ocapd audit``, ``ocapd weblets grants`` and ``ocapd agent``: the chat agent from the command line.

The audit and the grants go through the host's chat agent (``E(host).agent()``,
chat_host's ``HostAgent``), the object the Chat page and the REST API use too;
the model setting through the host's console (``E(facet).agent_console(host)``),
which only the daemon's socket reaches.
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

from .conversation import CliError, Conversation, agent_command
from .render import print_json

__all__ = ["add_agent_parser", "add_audit_parser", "cmd_agent", "cmd_audit", "grants"]

#: How often ``ocapd audit -f`` asks for new rows.
FOLLOW_INTERVAL = 0.5


def add_audit_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``audit`` command (called by ``cli.build_parser``)."""
    sp = sub.add_parser("audit", help="the chat agent's audit log", description="Every agent call: allowed, denied, failed, expired.",
                        parents=[common])  # fmt: skip
    sp.set_defaults(fn="agent_cli.cmd_audit", json=False)
    sp.add_argument("-n", "--lines", type=int, default=50, help="show the newest N rows first (default 50)")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new rows as they are written")


def add_agent_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``agent`` command: ``set``, ``show``, ``unset`` (called by ``cli.build_parser``)."""
    sp = sub.add_parser("agent", help="the chat agent's model: an OpenAI-compatible endpoint, or none (the built-in router)",
                        description="Send chat messages to an OpenAI-compatible chat-completions endpoint with tool calling, "
                                    "or (unset) only to the built-in router.", parents=[common])  # fmt: skip
    sp.set_defaults(fn="agent_cli.cmd_agent", json=False)
    actions = sp.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = actions.add_parser("set", help="use a model for this host's chat messages", parents=[common])
    st.add_argument("--url", required=True, help="the endpoint's base URL (https://api.openai.com/v1) or its /chat/completions URL")
    st.add_argument("--model", required=True, help="the model's name, as the endpoint knows it")
    st.add_argument("--key-env", metavar="VAR", help="the daemon's environment variable holding the API key (default OCAPD_AGENT_KEY)")
    st.add_argument("--timeout", type=float, metavar="S", help="give up on a request after S seconds (default 30, at most 300)")
    actions.add_parser("show", help="print the model setting (never the key)", parents=[common])
    actions.add_parser("unset", help="stop using a model: the built-in router answers", parents=[common])


@agent_command
def cmd_agent(conv: Conversation, args: argparse.Namespace) -> None:
    from ocapd.captp import RemoteError

    console = conv.call(conv.E(conv.facet).agent_console(conv.agent))
    try:
        if args.action == "set":
            shown = conv.call(conv.E(console).set_model(args.url, args.model, args.key_env, args.timeout))
        elif args.action == "unset":
            removed = conv.call(conv.E(console).unset_model())
            if args.json:
                print_json({"removed": removed})
            elif not removed:
                print("no model was set")
            return
        else:
            shown = conv.call(conv.E(console).model())
    except RemoteError as e:
        raise CliError(f"agent {args.action}: {e.message}") from None
    if args.json:
        print_json({"model": shown})
    elif shown is None:
        print("no model: chat messages go to the built-in router (`ocapd agent set --url URL --model NAME` to use one)")
    else:
        key = "set" if shown["key_set"] else "NOT set (requests go without a key)"
        print(f"model {shown['model']} at {shown['url']}\nkey from ${shown['key_env']} in the daemon's environment: {key}\n"
              f"timeout {shown['timeout']:g} s")  # fmt: skip


def _line(row: dict[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(row["time"]).strftime("%Y-%m-%d %H:%M:%S")
    return (f"{when}  {row['weblet_name']}.{row['command']} {row['args']}  asked by {row['asked_by']}: "
            f"{row['decision']} -> {row['outcome']}  {row['detail'][:120]}")  # fmt: skip


@agent_command
def cmd_audit(conv: Conversation, args: argparse.Namespace) -> None:
    agent = conv.call(conv.E(conv.agent).agent())
    rows: list[dict[str, Any]] = conv.call(conv.E(agent).audit(-1, max(1, min(args.lines, 1000))))
    after = 0
    while True:
        for row in rows:
            if args.json:
                print_json(row)
            else:
                print(_line(row), flush=True)
            after = row["seq"]
        if not args.follow:
            return
        time.sleep(FOLLOW_INTERVAL)
        rows = conv.call(conv.E(agent).audit(after, 1000))


def grants(conv: Conversation, args: argparse.Namespace) -> None:
    """``ocapd weblets grants [--json]``; ``ocapd weblets grants NAME[.COMMAND] --revoke``."""
    agent = conv.call(conv.E(conv.agent).agent())
    if args.revoke:
        if not args.target:
            raise CliError("weblets grants --revoke: give the weblet's name (or NAME.COMMAND)")
        weblet, _, command = str(args.target).partition(".")
        removed = conv.call(conv.E(agent).revoke(weblet, command or None))
        if args.json:
            print_json({"revoked": removed})
        else:
            print(f"revoked {removed} grant{'s' if removed != 1 else ''}")
        return
    listed: list[dict[str, Any]] = conv.call(conv.E(agent).grants())
    if args.json:
        print_json(listed)
        return
    if not listed:
        print('no "always" grants (a write command asks each time)')
    for g in listed:
        print(f"{g['weblet_name']}.{g['command']:24} always allowed since {datetime.datetime.fromtimestamp(g['created']):%Y-%m-%d %H:%M}")
