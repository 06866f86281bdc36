"""The ``ocapd`` command line: its arguments, and how a command's failure is reported.

Every command is one short CapTP conversation with the daemon over its Unix
socket (``ocapd.conversation``). Imports are lazy and the client is blocking,
so a command costs little more than starting Python. Errors are one line on
stderr and a non-zero exit; ``--debug`` shows tracebacks. The commands live in
``lifecycle`` (the daemon itself), ``commands`` (what agents do) and ``run``
(the daemon process, wired with its gateway and chat).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import NoReturn

from . import __version__
from .conversation import CliError
from .render import describe_error

__all__ = ["build_parser", "main"]

REPLACE_HELP = "if the name is in use, give it to the new value (without --replace an existing name is refused)"
TIMEOUT_HELP = "cancel the work, and terminate its worker, if it has not finished after S seconds"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command, or with ``only`` just that one.

    A command runs with a parser that knows only itself (``main``): building
    all forty subparsers costs more than the rest of a typical command's own
    work. Its usage, errors and ``--help`` are the same either way; the full
    parser serves bare ``ocapd``, ``--help`` and unknown commands.
    """
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--as", dest="as_agent", metavar="AGENT", help="act as this agent (a pet name path)")
    base.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--json", action="store_true", help="print JSON for machines")

    p = argparse.ArgumentParser(prog="ocapd", description="ocapd: an object-capability daemon")
    p.add_argument("--version", action="version", version=f"ocapd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: str, help: str, parent: argparse.ArgumentParser = common) -> argparse.ArgumentParser | None:
        """A command's subparser (None if it is not the one wanted); ``fn`` is "module.function" in this package."""
        if only is not None and name != only:
            return None
        sp = sub.add_parser(name, help=help, description=help, parents=[parent])
        sp.set_defaults(fn=fn, json=False)
        return sp

    port_help = "the gateway's port on 127.0.0.1 (default 8920; 0: any free port)"
    if sp := add("start", "lifecycle.cmd_start", "start the daemon in the background; returns when it is ready"):
        sp.add_argument("-q", "--quiet", action="store_true")
        sp.add_argument("--port", type=int, help=port_help)
    if sp := add("run-daemon", "run.cmd_run_daemon", "run the daemon in the foreground"):
        sp.add_argument(
            "--examples",
            nargs="?",
            const="",
            metavar="DIR",
            help="install the weblets in DIR (default: the examples shipped with ocapd), each folder once, when ready",
        )
        sp.add_argument("--print-chat-url", action="store_true", help="print the chat URL when ready")
        sp.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
        sp.add_argument("-q", "--quiet", action="store_true", help="log only to the log file")
        sp.add_argument("--port", type=int, help=port_help)
    if sp := add("stop", "lifecycle.cmd_stop", "stop the daemon"):
        sp.add_argument("-q", "--quiet", action="store_true")
        sp.set_defaults(quiet_if_stopped=False)
    if sp := add("restart", "lifecycle.cmd_restart", "stop the daemon (if running) and start it again"):
        sp.add_argument("-q", "--quiet", action="store_true")
        sp.add_argument("--port", type=int, help=port_help)
    add("ping", "lifecycle.cmd_ping", "check that the daemon answers")
    if sp := add("purge", "lifecycle.cmd_purge", "stop the daemon and delete all its state"):
        sp.add_argument("-f", "--force", action="store_true", help="do not ask")
    if sp := add("log", "lifecycle.cmd_log", "print the daemon log"):
        sp.add_argument("-f", "--follow", action="store_true")
    if sp := add("where", "lifecycle.cmd_where", "print where ocapd keeps its files"):
        sp.add_argument("what", nargs="?", choices=["state", "run", "sock", "log", "cache", "gateway"])
    add("doctor", "lifecycle.cmd_doctor", "report which worker confinement this machine supports")
    add("inspect", "lifecycle.cmd_inspect", "live incarnations, workers and CapTP sessions")
    if sp := add("tokens", "commands.cmd_tokens", "list, mint or revoke gateway tokens (what a browser trades for an agent)"):
        sp.add_argument("action", choices=["list", "mint", "revoke"])
        sp.add_argument("id", nargs="?", help="revoke: the token's id or a unique prefix of it")
        sp.add_argument("--label", help="mint: a note for `tokens list` (default: the agent's name)")
    if sp := add("chat", "commands.cmd_chat", "print the Chat UI's URL (with a token for the agent in its fragment)"):
        sp.add_argument("--open", action="store_true", help="also open it in a browser")

    if sp := add("list", "commands.cmd_list", "list names (of the agent, or of a directory)"):
        sp.add_argument("path", nargs="?")
        sp.add_argument("-f", "--follow", action="store_true", help="keep reporting changes")
        sp.add_argument("-l", "--long", action="store_true", help="show types and ids")
    if sp := add("show", "commands.cmd_show", "show the value a name refers to"):
        sp.add_argument("path")
        from .commands import SHOW_TIMEOUT

        sp.add_argument(
            "--timeout",
            type=float,
            default=SHOW_TIMEOUT,
            metavar="S",
            help=f"give up after S seconds if the value is still being computed (default {SHOW_TIMEOUT:g}; 0: wait)",
        )
    if sp := add("remove", "commands.cmd_remove", "forget names"):
        sp.add_argument("paths", nargs="+")
    if sp := add("move", "commands.cmd_move", "rename, within or across directories"):
        sp.add_argument("source")
        sp.add_argument("dest")
    if sp := add("copy", "commands.cmd_copy", "give a value a second name"):
        sp.add_argument("source")
        sp.add_argument("dest")
    if sp := add("mkdir", "commands.cmd_mkdir", "make a directory"):
        sp.add_argument("path")
    if sp := add("store", "commands.cmd_store", "store a value or a file and name it", base):
        group = sp.add_mutually_exclusive_group(required=True)
        group.add_argument("--text", help="a string")
        group.add_argument("--json", dest="json_value", metavar="JSON", help="a JSON value")
        group.add_argument("--bigint", help="an integer of any size")
        group.add_argument("--path", help="a file (stored as a blob)")
        group.add_argument("--stdin", action="store_true", help="standard input (stored as a blob)")
        sp.add_argument("-n", "--name", required=True, help="the pet name or dotted path (docs.cfg)")
        sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    if sp := add("mktext", "commands.cmd_mktext", "make a text store: text that outlives restarts (get, set, append), e.g. for a weblet's notes"):
        sp.add_argument("name")
        sp.add_argument("text", nargs="?", help="the text it starts with (default: empty)")
    if sp := add(
        "eval",
        "commands.cmd_eval",
        "evaluate Python in a worker: eval SOURCE [name:petname ...]; what it prints is printed before the result",
    ):
        sp.add_argument("source")
        sp.add_argument("endowments", nargs="*", metavar="name:petname")
        sp.add_argument("-w", "--worker", help="worker name (MAIN, an existing or a new name; default: a fresh worker)")
        sp.add_argument("-n", "--name", help="name the result (it is recomputed from its recipe after a restart)")
        sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
        sp.add_argument("--timeout", type=float, metavar="S", help=TIMEOUT_HELP)
    if sp := add("spawn", "commands.cmd_spawn", "make named workers"):
        sp.add_argument("names", nargs="+")
    if sp := add("make", "commands.cmd_make", "run a module's make(powers, context) in a worker"):
        sp.add_argument("specifier", nargs="?", help="a module file or module name")
        sp.add_argument("-b", "--bundle", help="a stored bundle (zip) instead of a module")
        sp.add_argument("-p", "--powers", default="NONE", help="NONE, ENDO, HOST or comma-separated pet names (default NONE)")
        sp.add_argument("-w", "--worker")
        sp.add_argument("-n", "--name")
        sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
        sp.add_argument("--timeout", type=float, metavar="S", help=TIMEOUT_HELP)
    if sp := add("install", "commands.cmd_install", "install a weblet: its own guest, endowed by the power level"):
        sp.add_argument("bundle", help="a zip, a single HTML file, a folder, or the name of a stored bundle")
        sp.add_argument("-n", "--name", required=True)
        sp.add_argument("-p", "--powers", default="NONE", help="NONE (default), ENDO, HOST (trusted code only) or pet names")
        sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    if sp := add("open", "commands.cmd_open", "open a weblet instance; prints its URL"):
        sp.add_argument("name")
    if only in (None, "weblets"):
        from .weblets_cli import add_parser

        add_parser(sub, common, base)
    if only in (None, "audit"):
        from .agent_cli import add_audit_parser

        add_audit_parser(sub, common)
    if only in (None, "agent"):
        from .agent_cli import add_agent_parser

        add_agent_parser(sub, common)
    if sp := add("mcp", "mcp_server.cmd_mcp", "serve the chat agent's tools over MCP on stdin/stdout (for an MCP client)", base):
        sp.set_defaults(json=False)
    if sp := add(
        "cancel",
        "commands.cmd_cancel",
        "cancel a value and everything depending on it; work still running is stopped by terminating its worker",
    ):
        sp.add_argument("path", help="a name, or an id as `ocapd inspect` prints it (a unique prefix of 8 or more hex digits)")
        sp.add_argument("reason", nargs="?", default="cancelled")
    if sp := add("mkhost", "commands.cmd_mkhost", "make another host agent"):
        sp.add_argument("handle_name")
        sp.add_argument("agent_name", nargs="?", help="default: HANDLE-agent")
    if sp := add("mkguest", "commands.cmd_mkguest", "make a guest agent"):
        sp.add_argument("handle_name")
        sp.add_argument("agent_name", nargs="?", help="default: HANDLE-agent")
        sp.add_argument("--introduce", action="append", default=[], metavar="host-name:guest-name")
    if sp := add("inbox", "commands.cmd_inbox", "list messages"):
        sp.add_argument("-f", "--follow", action="store_true")
    if sp := add("send", "commands.cmd_send", 'send a message: send AGENT "text with @edge:petname"'):
        sp.add_argument("to")
        sp.add_argument("text")
    if sp := add("request", "commands.cmd_request", "ask an agent for something and wait for the answer"):
        sp.add_argument("to")
        sp.add_argument("description")
        sp.add_argument("-n", "--name", help="name the answer")
    if sp := add("resolve", "commands.cmd_resolve", "answer a request with a named value"):
        sp.add_argument("number", type=int)
        sp.add_argument("path")
    if sp := add("reject", "commands.cmd_reject", "decline a request"):
        sp.add_argument("number", type=int)
        sp.add_argument("reason", nargs="?", default="declined")
    if sp := add("adopt", "commands.cmd_adopt", "name a capability that came with a message"):
        sp.add_argument("number", type=int)
        sp.add_argument("edge")
        sp.add_argument("-n", "--name")
    if sp := add("dismiss", "commands.cmd_dismiss", "delete a message"):
        sp.add_argument("number", type=int)
    if sp := add("network", "peers_cli.cmd_network", "listen for OCapN peers, show this daemon's peer identity and sessions, or stop listening"):
        sp.add_argument("action", choices=["listen", "show", "stop"])
        sp.add_argument("--netlayer", help="listen: the netlayer (tls-ed25519)")
        sp.add_argument("--port", type=int, help="listen: the TCP port (default 0: any free port; kept for restarts)")
        sp.add_argument("--host", default="127.0.0.1", help="listen: the address to listen on (default 127.0.0.1); also the one given peers unless --advertise")
        sp.add_argument("--advertise", metavar="HOST[:PORT]",
                        help="listen: the address peers dial, written into URIs (needed with --host 0.0.0.0 or ::; default --host and the bound port)")
    if sp := add("share", "peers_cli.cmd_share", "print a sturdyref URI (ocapn://…/s/…) through which peers reach a value"):
        sp.add_argument("target", nargs="?", metavar="NAME", help="the value to share; with --revoke a name or a sturdyref URI")
        sp.add_argument("--revoke", action="store_true", help="revoke that sturdyref, or every share of the named value")
        sp.add_argument("--list", action="store_true", help="list your shares")
    if sp := add("enliven", "peers_cli.cmd_enliven", "name the object at a peer that a sturdyref URI designates"):
        sp.add_argument("uri", help="an ocapn://…/s/… URI (from `ocapd share` on the other daemon)")
        sp.add_argument("-n", "--name", required=True, help="the pet name or dotted path to give it")
        sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    if sp := add("invite", "peers_cli.cmd_invite", "invite an agent on another daemon; prints the invitation URI for its `ocapd accept`"):
        sp.add_argument("name", help="the name its handle will have here once it accepts")
    if sp := add("accept", "peers_cli.cmd_accept", "accept an invitation from an agent on another daemon, and name that agent"):
        sp.add_argument("invitation", help="the URI `ocapd invite` printed there")
        sp.add_argument("name", help="the name the inviting agent will have here")
    if only is not None and only not in sub.choices:  # not a command: the full parser says so
        return build_parser()
    return p


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"ocapd: {message}", file=sys.stderr)
    raise SystemExit(code)


def _command_function(name: str) -> Callable[[argparse.Namespace], None]:
    """``"commands.cmd_list"`` -> the function: a command imports only its own module."""
    module, function = name.split(".")
    fn: Callable[[argparse.Namespace], None] = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    return fn


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    first = argv[0] if argv and not argv[0].startswith("-") else None
    parser = build_parser(only=first)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ocapd`: what can I do?
        parser.print_help()
        return
    fn = _command_function(args.fn)
    if args.debug:
        fn(args)
        return
    try:
        fn(args)
    except CliError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(1) from None
    except Exception as e:  # one clear line, never a traceback (use --debug)
        _fail(describe_error(e))
