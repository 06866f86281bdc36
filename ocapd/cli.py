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
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from . import __version__, agent_cli, commands, lifecycle, run, weblets_cli
from .conversation import CliError
from .render import describe_error

__all__ = ["build_parser", "main"]

REPLACE_HELP = "if the name is in use, give it to the new value (without --replace an existing name is refused)"
TIMEOUT_HELP = "cancel the work, and terminate its worker, if it has not finished after S seconds"


def build_parser() -> argparse.ArgumentParser:
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--as", dest="as_agent", metavar="AGENT", help="act as this agent (a pet name path)")
    base.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--json", action="store_true", help="print JSON for machines")

    p = argparse.ArgumentParser(prog="ocapd", description="ocapd: an object-capability daemon")
    p.add_argument("--version", action="version", version=f"ocapd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str, parent: Any = common) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[parent])
        sp.set_defaults(fn=fn, json=False)
        return sp

    port_help = "the gateway's port on 127.0.0.1 (default 8920; 0: any free port)"
    sp = add("start", lifecycle.cmd_start, "start the daemon in the background; returns when it is ready")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--port", type=int, help=port_help)
    sp = add("run-daemon", run.cmd_run_daemon, "run the daemon in the foreground")
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
    sp = add("stop", lifecycle.cmd_stop, "stop the daemon")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(quiet_if_stopped=False)
    sp = add("restart", lifecycle.cmd_restart, "stop the daemon (if running) and start it again")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--port", type=int, help=port_help)
    add("ping", lifecycle.cmd_ping, "check that the daemon answers")
    sp = add("purge", lifecycle.cmd_purge, "stop the daemon and delete all its state")
    sp.add_argument("-f", "--force", action="store_true", help="do not ask")
    sp = add("log", lifecycle.cmd_log, "print the daemon log")
    sp.add_argument("-f", "--follow", action="store_true")
    sp = add("where", lifecycle.cmd_where, "print where ocapd keeps its files")
    sp.add_argument("what", nargs="?", choices=["state", "run", "sock", "log", "cache", "gateway"])
    add("doctor", lifecycle.cmd_doctor, "report which worker confinement this machine supports")
    add("inspect", lifecycle.cmd_inspect, "live incarnations, workers and CapTP sessions")
    sp = add("tokens", commands.cmd_tokens, "list, mint or revoke gateway tokens (what a browser trades for an agent)")
    sp.add_argument("action", choices=["list", "mint", "revoke"])
    sp.add_argument("id", nargs="?", help="revoke: the token's id or a unique prefix of it")
    sp.add_argument("--label", help="mint: a note for `tokens list` (default: the agent's name)")
    sp = add("chat", commands.cmd_chat, "print the Chat UI's URL (with a token for the agent in its fragment)")
    sp.add_argument("--open", action="store_true", help="also open it in a browser")

    sp = add("list", commands.cmd_list, "list names (of the agent, or of a directory)")
    sp.add_argument("path", nargs="?")
    sp.add_argument("-f", "--follow", action="store_true", help="keep reporting changes")
    sp.add_argument("-l", "--long", action="store_true", help="show types and ids")
    sp = add("show", commands.cmd_show, "show the value a name refers to")
    sp.add_argument("path")
    sp.add_argument(
        "--timeout",
        type=float,
        default=commands.SHOW_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds if the value is still being computed (default {commands.SHOW_TIMEOUT:g}; 0: wait)",
    )
    sp = add("remove", commands.cmd_remove, "forget names")
    sp.add_argument("paths", nargs="+")
    sp = add("move", commands.cmd_move, "rename, within or across directories")
    sp.add_argument("source")
    sp.add_argument("dest")
    sp = add("copy", commands.cmd_copy, "give a value a second name")
    sp.add_argument("source")
    sp.add_argument("dest")
    sp = add("mkdir", commands.cmd_mkdir, "make a directory")
    sp.add_argument("path")
    sp = add("store", commands.cmd_store, "store a value or a file and name it", base)
    group = sp.add_mutually_exclusive_group(required=True)
    group.add_argument("--text", help="a string")
    group.add_argument("--json", dest="json_value", metavar="JSON", help="a JSON value")
    group.add_argument("--bigint", help="an integer of any size")
    group.add_argument("--path", help="a file (stored as a blob)")
    group.add_argument("--stdin", action="store_true", help="standard input (stored as a blob)")
    sp.add_argument("-n", "--name", required=True, help="the pet name or dotted path (docs.cfg)")
    sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    sp = add("mktext", commands.cmd_mktext, "make a text store: text that outlives restarts (get, set, append), e.g. for a weblet's notes")
    sp.add_argument("name")
    sp.add_argument("text", nargs="?", help="the text it starts with (default: empty)")
    sp = add(
        "eval",
        commands.cmd_eval,
        "evaluate Python in a worker: eval SOURCE [name:petname ...]; what it prints is printed before the result",
    )
    sp.add_argument("source")
    sp.add_argument("endowments", nargs="*", metavar="name:petname")
    sp.add_argument("-w", "--worker", help="worker name (MAIN, an existing or a new name; default: a fresh worker)")
    sp.add_argument("-n", "--name", help="name the result (it is recomputed from its recipe after a restart)")
    sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    sp.add_argument("--timeout", type=float, metavar="S", help=TIMEOUT_HELP)
    sp = add("spawn", commands.cmd_spawn, "make named workers")
    sp.add_argument("names", nargs="+")
    sp = add("make", commands.cmd_make, "run a module's make(powers, context) in a worker")
    sp.add_argument("specifier", nargs="?", help="a module file or module name")
    sp.add_argument("-b", "--bundle", help="a stored bundle (zip) instead of a module")
    sp.add_argument("-p", "--powers", default="NONE", help="NONE, ENDO, HOST or comma-separated pet names (default NONE)")
    sp.add_argument("-w", "--worker")
    sp.add_argument("-n", "--name")
    sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    sp.add_argument("--timeout", type=float, metavar="S", help=TIMEOUT_HELP)
    sp = add("install", commands.cmd_install, "install a weblet: its own guest, endowed by the power level")
    sp.add_argument("bundle", help="a zip, a single HTML file, a folder, or the name of a stored bundle")
    sp.add_argument("-n", "--name", required=True)
    sp.add_argument("-p", "--powers", default="NONE", help="NONE (default), ENDO, HOST (trusted code only) or pet names")
    sp.add_argument("--replace", action="store_true", help=REPLACE_HELP)
    sp = add("open", commands.cmd_open, "open a weblet instance; prints its URL")
    sp.add_argument("name")
    weblets_cli.add_parser(sub, common, base)
    agent_cli.add_audit_parser(sub, common)
    sp = add(
        "cancel",
        commands.cmd_cancel,
        "cancel a value and everything depending on it; work still running is stopped by terminating its worker",
    )
    sp.add_argument("path", help="a name, or an id as `ocapd inspect` prints it (a unique prefix of 8 or more hex digits)")
    sp.add_argument("reason", nargs="?", default="cancelled")
    sp = add("mkhost", commands.cmd_mkhost, "make another host agent")
    sp.add_argument("handle_name")
    sp.add_argument("agent_name", nargs="?", help="default: HANDLE-agent")
    sp = add("mkguest", commands.cmd_mkguest, "make a guest agent")
    sp.add_argument("handle_name")
    sp.add_argument("agent_name", nargs="?", help="default: HANDLE-agent")
    sp.add_argument("--introduce", action="append", default=[], metavar="host-name:guest-name")
    sp = add("inbox", commands.cmd_inbox, "list messages")
    sp.add_argument("-f", "--follow", action="store_true")
    sp = add("send", commands.cmd_send, 'send a message: send AGENT "text with @edge:petname"')
    sp.add_argument("to")
    sp.add_argument("text")
    sp = add("request", commands.cmd_request, "ask an agent for something and wait for the answer")
    sp.add_argument("to")
    sp.add_argument("description")
    sp.add_argument("-n", "--name", help="name the answer")
    sp = add("resolve", commands.cmd_resolve, "answer a request with a named value")
    sp.add_argument("number", type=int)
    sp.add_argument("path")
    sp = add("reject", commands.cmd_reject, "decline a request")
    sp.add_argument("number", type=int)
    sp.add_argument("reason", nargs="?", default="declined")
    sp = add("adopt", commands.cmd_adopt, "name a capability that came with a message")
    sp.add_argument("number", type=int)
    sp.add_argument("edge")
    sp.add_argument("-n", "--name")
    sp = add("dismiss", commands.cmd_dismiss, "delete a message")
    sp.add_argument("number", type=int)
    return p


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"ocapd: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ocapd`: what can I do?
        parser.print_help()
        return
    if args.debug:
        args.fn(args)
        return
    try:
        args.fn(args)
    except CliError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(1) from None
    except Exception as e:  # one clear line, never a traceback (use --debug)
        _fail(describe_error(e))

