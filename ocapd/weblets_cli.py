"""``ocapd weblets …``: the widget manager from the command line (list, install, enable, disable, update, store, remove, digest).

Each action is one conversation with the daemon through the host's
``weblets()`` manager (``daemon/weblet_manager.py``), the object the Chat
page and the REST API use too. A weblet is named by its pet name or its
registry id (or a unique prefix of the id). Downloads show a progress line on
stderr; ``--json`` prints what the daemon answered.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .conversation import CliError, Conversation, agent_command, bundle_bytes, parse_powers
from .render import print_json

__all__ = ["add_parser", "cmd_weblets", "cmd_digest"]

ACTIONS = ("list", "install", "enable", "disable", "update", "store", "remove", "digest", "grants")


def add_parser(sub: Any, common: argparse.ArgumentParser, base: argparse.ArgumentParser) -> None:
    """The ``weblets`` command and its actions (called by ``cli.build_parser``)."""
    sp = sub.add_parser(
        "weblets",
        help="the widget manager: installed weblets, stores, updates",
        description="The widget manager. Actions: list, install, enable, disable, update, store, remove, digest, grants.",
        parents=[common],
    )
    sp.set_defaults(fn="weblets_cli.cmd_weblets", json=False)
    sp.add_argument("action", choices=ACTIONS)
    sp.add_argument(
        "target",
        nargs="?",
        help="install: a file or folder, an https:// URL, or with --store the weblet's id; "
        "enable/disable/update/remove: a weblet's name or id; store: the store's name; digest: a bundle",
    )
    sp.add_argument("-n", "--name", help="install: the pet name (default: from the store id or the title)")
    sp.add_argument("-p", "--powers", default="NONE", help="install: NONE (default), ENDO, HOST (trusted code only) or pet names")
    sp.add_argument("--store", help="install: the store to install from (see `ocapd weblets store`)")
    sp.add_argument("--version", dest="version", help="install/update from a store: this version (default: the newest)")
    sp.add_argument("--accept-powers", default="", help="update: the new powers you accept, comma-separated")
    sp.add_argument("-y", "--yes", action="store_true", help="update: accept the powers a new version adds without asking")
    sp.add_argument("--file", help="update: the new bundle of a weblet installed from a file")
    sp.add_argument("--revoke", action="store_true", help='grants: drop "always" for the target (NAME or NAME.COMMAND)')


def cmd_weblets(args: argparse.Namespace) -> None:
    if args.action == "digest":
        cmd_digest(args)
        return
    _in_conversation(args)


@agent_command
def _in_conversation(conv: Conversation, args: argparse.Namespace) -> None:
    if args.action == "grants":
        from .agent_cli import grants

        grants(conv, args)
        return
    manager = conv.call(conv.E(conv.agent).weblets())
    action = {
        "list": _list,
        "install": _install,
        "enable": _enable,
        "disable": _enable,
        "update": _update,
        "store": _store,
        "remove": _remove,
    }[args.action]
    action(conv, manager, args)


def _need_target(args: argparse.Namespace, what: str) -> str:
    if not args.target:
        raise CliError(f"weblets {args.action}: give {what}")
    return str(args.target)


def _find(conv: Conversation, manager: Any, key: str) -> dict[str, Any]:
    weblets: list[dict[str, Any]] = conv.call(conv.E(manager).list())
    exact = [w for w in weblets if w["name"] == key or w["id"] == key]
    if exact:
        return exact[0]
    prefixed = [w for w in weblets if not w["builtin"] and w["id"].startswith(key)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise CliError(f"{key!r} is the start of {len(prefixed)} weblet ids; give more of it")
    raise CliError(f"no installed weblet {key!r} (see `ocapd weblets list`)")


def _human(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _follow(conv: Conversation, job: Any) -> Any:
    """Show a job's progress on stderr, then return its result (or raise its error)."""
    tty = sys.stderr.isatty()
    shown = False
    while True:
        event = conv.call(conv.E(job).next())
        if event.get("done"):
            break
        progress = event["value"].get("progress")
        if progress is None:
            continue
        got, total = progress["received"], progress["total"]
        line = f"downloading {_human(got)}" + (f" of {_human(total)} ({got * 100 // total}%)" if total else "")
        if tty:
            print("\r" + line.ljust(60), end="", file=sys.stderr, flush=True)
            shown = True
        elif total and got == total:
            print(line, file=sys.stderr)
    if shown:
        print(file=sys.stderr)
    return conv.call(conv.E(job).result())


def _list(conv: Conversation, manager: Any, args: argparse.Namespace) -> None:
    weblets = conv.call(conv.E(manager).list())
    if args.json:
        print_json(weblets)
        return
    for w in weblets:
        if w["builtin"]:
            source = "built-in"
        elif w["source"] == "store":
            source = f"store {w['store']}/{w['store_id']}"
        else:
            source = f"{w['source']} {w['source_ref']}".strip()
        state = "enabled" if w["enabled"] else "disabled"
        update = f"  update: {w['update']['version']}" if w.get("update") else ""
        panels = len(w["instances"])
        print(f"{w['name']:20} {w['version']:10} {state:9} {panels} panel{'s' if panels != 1 else ' '}  {source}{update}")


def _install(conv: Conversation, manager: Any, args: argparse.Namespace) -> None:
    target = _need_target(args, "a file or folder, an https:// URL, or a store weblet's id with --store")
    spec: dict[str, Any] = {"powers": parse_powers(args.powers)}
    if args.name:
        spec["name"] = args.name
    bundle = None
    if args.store:
        spec.update(store=args.store, id=target)
        if args.version:
            spec["version"] = args.version
    elif target.startswith(("https://", "http://")):
        spec["url"] = target
    else:
        bundle = bundle_bytes(target)
        spec["filename"] = os.path.basename(os.path.normpath(target))[:255]
    job = conv.call(conv.E(manager).start_install(spec, bundle))
    weblet = _follow(conv, job)
    if args.json:
        print_json(weblet)
    else:
        print(f"installed {weblet['title']} {weblet['version']} as {weblet['name']} (from {weblet['source']}, powers {args.powers})")


def _enable(conv: Conversation, manager: Any, args: argparse.Namespace) -> None:
    weblet = _find(conv, manager, _need_target(args, "a weblet's name or id"))
    result = conv.call(conv.E(manager).enable(weblet["id"], args.action == "enable"))
    if args.json:
        print_json(result)
    else:
        print(f"{result['name']} is {'enabled' if result['enabled'] else 'disabled'}")


def _remove(conv: Conversation, manager: Any, args: argparse.Namespace) -> None:
    weblet = _find(conv, manager, _need_target(args, "a weblet's name or id"))
    result = conv.call(conv.E(manager).remove(weblet["id"]))
    if args.json:
        print_json(result)
    else:
        print(f"removed {result['name']}")


def _update(conv: Conversation, manager: Any, args: argparse.Namespace) -> None:
    from ocapd.captp import RemoteError

    weblet = _find(conv, manager, _need_target(args, "a weblet's name or id"))
    accepted = [p for p in args.accept_powers.split(",") if p]
    bundle = bundle_bytes(args.file) if args.file else None
    if weblet["source"] == "store" and not args.yes:
        preview = conv.call(conv.E(manager).check_update(weblet["id"], args.version))
        added = [p for p in preview["powers_added"] if p not in accepted]
        if added and preview["version"] != weblet["version"]:
            accepted += _ask_for_powers(weblet["name"], preview["version"], added)
    try:
        job = conv.call(conv.E(manager).start_update(weblet["id"], args.version, accepted, bundle))
        result = _follow(conv, job)
    except RemoteError as e:
        if e.name == "PowersNeedConsent":
            raise CliError(f"{e.message} (pass --accept-powers or --yes)") from None
        raise
    if args.json:
        print_json(result)
    elif result["updated"]:
        print(f"updated {weblet['name']} from {weblet['version']} to {result['weblet']['version']}")
    else:
        print(f"{weblet['name']} is up to date ({weblet['version']})")


def _ask_for_powers(name: str, version: str, added: list[str]) -> list[str]:
    if not sys.stdin.isatty():
        raise CliError(
            f"{name} {version} asks for more powers: {', '.join(added)}; "
            "accept them with --accept-powers " + ",".join(added) + " (or --yes), or keep the installed version"
        )
    answer = input(f"{name} {version} asks for more powers: {', '.join(added)}. Accept them? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError(f"kept the installed version of {name}")
    return added


def _store(conv: Conversation, manager: Any, args: argparse.Namespace) -> None:
    name = args.target or "examples"
    store = conv.call(conv.E(manager).store(name))
    if args.json:
        print_json(store)
        return
    print(f"{store['title'] or store['store']} (store {store['store']}; others: {', '.join(conv.call(conv.E(manager).stores()))})")
    for w in store["weblets"]:
        installed = w["installed"]
        state = "" if installed is None else f"  installed {installed['version']}" + ("  (update available)" if w["update_available"] else "")
        powers = w["versions"][0]["powers"]
        asks = f"  asks for: {', '.join(powers)}" if powers else ""
        print(f"{w['id']:20} {w['latest']:10} {w['title']}{asks}{state}")


def cmd_digest(args: argparse.Namespace) -> None:
    """Print a bundle's content digest and, for a file, its sha256: what a store catalogue pins."""
    import hashlib

    from ocapd.daemon.weblet import BundleError, read_bundle

    target = _need_target(args, "a bundle: a zip, a single HTML file or a folder")
    if not os.path.exists(target):
        raise CliError(f"no such file or folder: {target}")
    try:
        bundle = read_bundle(target)
    except BundleError as e:
        raise CliError(str(e)) from None
    out: dict[str, Any] = {"version": bundle.manifest.version, "powers": list(bundle.manifest.powers), "digest": bundle.digest}
    if os.path.isfile(target):
        with open(target, "rb") as f:
            out["sha256"] = hashlib.sha256(f.read()).hexdigest()
    if args.json:
        print_json(out)
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
