"""Commands that make this daemon a peer of others over OCapN: ``network``, ``share`` and ``enliven``.

The daemon does the work (``daemon.peers``); these only pass arguments and
print. Nothing here imports the OCapN modules or cryptography: a URI is
parsed by the daemon, which says in one line what is wrong with it.
"""

from __future__ import annotations

import argparse
from typing import Any

from .conversation import CliError, Conversation, agent_command
from .render import print_json


def _network(conv: Conversation) -> Any:
    return conv.call(conv.E(conv.facet).network())


def _print_sessions(sessions: list[dict[str, Any]]) -> None:
    print(f"sessions ({len(sessions)})")
    for s in sessions:
        who = s["designator"] or "?"
        print(f"  {who[:20]:20} {s['netlayer'] or '-':12} {s['direction']:8} {s['state']:8} "
              f"exports {s.get('exports', 0)}  imports {s.get('imports', 0)}")


@agent_command
def cmd_network(conv: Conversation, args: argparse.Namespace) -> None:
    network = _network(conv)
    if args.action == "listen":
        if args.netlayer is None:
            raise CliError("network listen: give --netlayer tls-ed25519")
        shown = conv.call(conv.E(network).listen(args.netlayer, args.port or 0, args.host, args.advertise))
    elif args.action == "stop":
        stopped = conv.call(conv.E(network).stop())
        if args.json:
            print_json({"stopped": stopped})
        elif not stopped:
            print("not listening")
        return
    else:
        shown = conv.call(conv.E(network).show())
    if args.json:
        print_json(shown)
        return
    if args.action == "listen":
        print(shown["uri"])
        return
    print(f"designator {shown['designator']}")
    print(f"listening  {shown['uri'] or 'no (ocapd network listen --netlayer tls-ed25519)'}")
    if shown.get("address"):
        print(f"bound to   {shown['address']}")
    limits = shown.get("limits")
    if limits:
        print(
            f"limits     {limits['peer_sessions']} sessions a peer, "
            f"{limits['peer_connections_per_address']} connections an address, "
            f"{limits['peer_failed_fetches']} failed fetches a peer or address "
            f"(+{limits['peer_failed_fetches_per_second']:g}/s)  [OCAPD_LIMITS]"
        )
    _print_sessions(shown["sessions"])


def _when(seconds: float) -> str:
    """A time for a listing, local and to the second."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


@agent_command
def cmd_share(conv: Conversation, args: argparse.Namespace) -> None:
    if args.list:
        if args.target is not None or args.revoke:
            raise CliError("share --list takes no name")
        shares = conv.on_agent("list_shares")
        if args.json:
            print_json(shares)
            return
        for s in shares:
            names = ", ".join(s["names"]) or s["value"][:16]
            print(f"{names:24} {s['uri'] or '(not listening)'}")
            for f in s["fetched_by"]:
                times = "once" if f["count"] == 1 else f"{f['count']} times"
                print(f"  fetched by {f['peer']}  {times}, first {_when(f['first'])}, last {_when(f['last'])}")
            if not s["fetched_by"]:
                print("  not fetched yet")
        return
    if args.target is None:
        raise CliError("share: give the name of the value to share (or --list)")
    if args.revoke:
        count = conv.on_agent("revoke_share", args.target)
        if args.json:
            print_json({"revoked": count})
        else:
            print(f"revoked {count} share{'s' if count != 1 else ''}")
        return
    uri = conv.on_agent("share", args.target)
    if args.json:
        print_json({"uri": uri})
    else:
        print(uri)


@agent_command
def cmd_enliven(conv: Conversation, args: argparse.Namespace) -> None:
    from ocapd.captp import RemoteError

    options = {"replace": True} if args.replace else {}
    try:
        conv.on_agent("enliven", args.uri, args.name, options)
    except RemoteError as e:
        if e.name == "NameTaken":
            raise CliError(f"{e.message}; pass --replace to replace it") from None
        raise
    if args.json:
        print_json({"name": args.name})


@agent_command
def cmd_invite(conv: Conversation, args: argparse.Namespace) -> None:
    uri = conv.on_agent("invite", args.name)
    if args.json:
        print_json({"uri": uri})
    else:
        print(uri)


@agent_command
def cmd_accept(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("accept", args.invitation, args.name)
    if args.json:
        print_json({"name": args.name})
