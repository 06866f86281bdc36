"""``ocapd audit`` and ``ocapd weblets grants``: the chat agent's audit log and "always" grants from the command line.

Both talk to the host's chat agent (``E(host).agent()``, chat_host's
``HostAgent``), the object the Chat page and the REST API use too.
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

from .conversation import CliError, Conversation, agent_command
from .render import print_json

__all__ = ["add_audit_parser", "cmd_audit", "grants"]

#: How often ``ocapd audit -f`` asks for new rows.
FOLLOW_INTERVAL = 0.5


def add_audit_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``audit`` command (called by ``cli.build_parser``)."""
    sp = sub.add_parser("audit", help="the chat agent's audit log", description="Every agent call: allowed, denied, failed, expired.",
                        parents=[common])  # fmt: skip
    sp.set_defaults(fn="agent_cli.cmd_audit", json=False)
    sp.add_argument("-n", "--lines", type=int, default=50, help="show the newest N rows first (default 50)")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new rows as they are written")


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
