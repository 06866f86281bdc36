"""The ``ocapd`` command line.

Every command is one short CapTP conversation with the daemon over its Unix
socket (see ``daemon.client``). Imports are lazy and the client is blocking,
so a command costs little more than starting Python. Errors are one line on
stderr and a non-zero exit; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["main"]

#: How long ``ocapd start`` waits for the daemon to report that it is ready.
START_TIMEOUT = 30.0
#: How long ``ocapd stop`` waits for the daemon process to exit.
STOP_TIMEOUT = 15.0


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# ---------------------------------------------------------------------------
# plumbing


def _paths() -> Any:
    from ocapd.daemon.paths import resolve_paths

    return resolve_paths()


def _connect() -> Any:
    from ocapd.daemon.client import Client, DaemonNotRunning

    try:
        return Client(str(_paths().sock))
    except DaemonNotRunning:
        raise CliError("the daemon is not running; start it with `ocapd start`") from None


class Conversation:
    """A connected client plus the agent the command acts as (``--as``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ocapd.captp import E

        self.E = E
        self.client = _connect()
        self.facet = self.client.bootstrap()
        self._as = getattr(args, "as_agent", None)
        self._agent: Any = None

    @property
    def agent(self) -> Any:
        if self._agent is None:
            if self._as:
                self._agent = self.call(self.E(self.facet).agent(self._as))
            else:
                self._agent = self.call(self.E(self.facet).host())
        return self._agent

    def call(self, promise: Any) -> Any:
        return self.client.wait(promise)

    def on_agent(self, method: str, *args: Any) -> Any:
        return self.call(getattr(self.E(self.agent), method)(*args))

    def follow(self, stream: Any, show: Callable[[dict], None]) -> None:
        while True:
            event = self.call(self.E(stream).next())
            if event.get("done"):
                return
            show(event["value"])

    def close(self) -> None:
        self.client.close()


def _print_json(value: Any) -> None:
    import json

    print(json.dumps(_jsonable(value), indent=None, sort_keys=True))


def _jsonable(value: Any) -> Any:
    from ocapd.captp import Promise, RemoteRef, Tagged

    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Tagged):
        return {"tagged": value.tag, "payload": _jsonable(value.payload)}
    if isinstance(value, (RemoteRef, Promise)):
        return {"reference": True}
    if isinstance(value, BaseException):
        return {"error": str(value)}
    return repr(value)


def _show_value(value: Any) -> str:
    from ocapd.captp import Promise, RemoteRef, Tagged

    if isinstance(value, (RemoteRef, Promise)):
        return "<a reference: name it with -n to keep it>"
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, Tagged)):
        return repr(value)
    import json

    try:
        return json.dumps(_jsonable(value))
    except (TypeError, ValueError):
        return repr(value)


def _powers(text: str) -> Any:
    if text in ("NONE", "ENDO", "HOST"):
        return text
    names = [n for n in text.split(",") if n]
    if not names:
        raise CliError("powers: give NONE, ENDO, HOST or comma-separated pet names")
    return names


def _parse_pairs(pairs: list[str], what: str) -> tuple[list[str], list[str]]:
    left, right = [], []
    for pair in pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            raise CliError(f"{what}: expected name:petname, got {pair!r}")
        left.append(a)
        right.append(b)
    return left, right


def _parse_message(text: str) -> tuple[list[str], list[str], list[str]]:
    """Split "see @doc:report now" into strings, edge names and pet names."""
    import re

    strings, edges, pets = [], [], []
    pos = 0
    for m in re.finditer(r"@([a-z0-9][a-z0-9-]*)(?::([A-Za-z0-9][A-Za-z0-9.-]*))?", text):
        strings.append(text[pos : m.start()])
        edges.append(m.group(1))
        pets.append(m.group(2) or m.group(1))
        pos = m.end()
    strings.append(text[pos:])
    return strings, edges, pets


# ---------------------------------------------------------------------------
# lifecycle commands (some need no daemon)


def cmd_where(args: argparse.Namespace) -> None:
    p = _paths()
    table = {"state": p.state, "run": p.run, "sock": p.sock, "log": p.daemon_log, "cache": p.cache}
    try:  # written by the running daemon's gateway once it listens
        table["gateway"] = f"http://localhost:{int((p.run / 'gateway.port').read_text())}/"
    except (OSError, ValueError):
        if args.what == "gateway":
            raise CliError("the gateway is not running (start the daemon with `ocapd start`)") from None
    if args.what:
        print(table[args.what])
    elif args.json:
        _print_json({k: str(v) for k, v in table.items()})
    else:
        for k, v in table.items():
            print(f"{k:6} {v}")


def _ping_ok() -> bool:
    sock = _paths().sock
    if not os.path.exists(sock):  # nothing to ask: spare `ocapd start` the client's imports
        return False
    from ocapd.daemon.client import Client

    try:
        with Client(str(sock), timeout=5) as c:
            return c.wait(_e()(c.bootstrap()).ping()) == "pong"
    except Exception:  # not running, a stale socket, or a daemon on its way down: no
        return False


def _e() -> Any:
    from ocapd.captp import E

    return E


def cmd_ping(args: argparse.Namespace) -> None:
    conv = Conversation(args)
    try:
        print(conv.call(conv.E(conv.facet).ping()))
    finally:
        conv.close()


def cmd_start(args: argparse.Namespace) -> None:
    import subprocess

    from ocapd.daemon.paths import ensure_dirs

    paths = _paths()
    if _ping_ok():
        raise CliError(f"the daemon is already running (state: {paths.state})")
    ensure_dirs(paths)
    paths.daemon_log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "ocapd", "run-daemon", "--ready-fd", str(w), "--quiet"]
    if args.port is not None:
        cmd += ["--port", str(args.port)]
    with open(paths.daemon_log, "ab") as logf:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            pass_fds=(w,),
            start_new_session=True,
            close_fds=True,
        )
    os.close(w)
    ready = _read_ready(r, proc)
    if not ready:
        raise CliError(f"the daemon failed to start: {_last_error(paths.daemon_log)}")
    if not args.quiet:
        print(f"ocapd started (pid {proc.pid})")


def _read_ready(fd: int, proc: Any) -> bool:
    import select

    deadline = time.monotonic() + START_TIMEOUT
    data = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 64)
                if not chunk:
                    return b"ready" in data
                data += chunk
                if b"ready" in data:
                    return True
            elif proc.poll() is not None:
                return False
        return False
    finally:
        os.close(fd)


def _last_error(log_path: Any) -> str:
    try:
        lines = [line.strip() for line in open(log_path, encoding="utf-8", errors="replace").read().splitlines() if line.strip()]
    except OSError:
        return "see the daemon log"
    for line in reversed(lines[-50:]):
        if "ocapd:" in line or "Error" in line or "error" in line:
            return line.split("ocapd: ", 1)[-1]
    return lines[-1] if lines else "no output (see `ocapd log`)"


def _daemon_pid() -> int | None:
    try:
        return int(open(_paths().pidfile).read().strip())
    except (OSError, ValueError):
        return None


def cmd_stop(args: argparse.Namespace) -> None:
    from ocapd.captp import SessionAborted

    pid = _daemon_pid()
    try:
        conv = Conversation(args)
    except CliError:
        if args.quiet_if_stopped:
            return
        raise
    try:
        conv.call(conv.E(conv.facet).stop())
    except (SessionAborted, ConnectionError):
        pass  # it went away while answering: that is what we asked for
    finally:
        conv.close()
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if pid is None or not _alive(pid):
            break
        time.sleep(0.02)
    else:
        raise CliError(f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")
    if not getattr(args, "quiet", False):
        print("ocapd stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cmd_restart(args: argparse.Namespace) -> None:
    args.quiet_if_stopped = True
    quiet = args.quiet
    args.quiet = True
    cmd_stop(args)
    args.quiet = quiet
    cmd_start(args)


def cmd_purge(args: argparse.Namespace) -> None:
    import shutil

    paths = _paths()
    if not args.force:
        if not sys.stdin.isatty():
            raise CliError("purge deletes every name, message and value; pass --force to confirm")
        answer = input(f"Delete all ocapd state in {paths.state}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("not purged")
    if _ping_ok():
        args.quiet_if_stopped = True
        args.quiet = True
        cmd_stop(args)
    for d in (paths.state, paths.run, paths.cache):
        shutil.rmtree(d, ignore_errors=True)
    print("ocapd state purged")


def cmd_log(args: argparse.Namespace) -> None:
    path = _paths().daemon_log
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise CliError(f"no daemon log yet ({path})") from None
    with f:
        sys.stdout.write(f.read())
        sys.stdout.flush()
        while args.follow:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def cmd_run_daemon(args: argparse.Namespace) -> None:
    import trio

    from ocapd.daemon.service import AlreadyRunning, configure_logging, run_daemon

    paths = _paths()
    from ocapd.daemon.paths import ensure_dirs

    ensure_dirs(paths)
    configure_logging(paths, to_stderr=not args.quiet)

    def on_ready() -> None:
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)
        elif not args.quiet:
            print(f"ocapd is running (socket {paths.sock}); stop it with Ctrl-C or `ocapd stop`", flush=True)
        if args.examples or args.print_chat_url:
            import threading

            # A plain thread with the blocking client: it talks to this very
            # daemon over its socket, like any other command would.
            threading.Thread(target=_welcome, args=(args.examples,), daemon=True).start()

    # The CLI is the composition root: the daemon itself never imports the gateway.
    from ocapd.gateway import DEFAULT_PORT, gateway_hook

    hook = gateway_hook(DEFAULT_PORT if args.port is None else args.port)
    try:
        trio.run(lambda: run_daemon(paths, on_ready=on_ready, gateway=hook))
    except AlreadyRunning as e:
        print(f"ocapd: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _welcome(examples: str | None) -> None:
    """Install the example weblets (once) and print the chat URL."""
    try:
        with _connect() as client:
            E = _e()
            host = client.wait(E(client.bootstrap()).host())
            names = set(client.wait(E(host).list()))
            if examples:
                for folder in sorted(os.listdir(examples)):
                    path = os.path.join(examples, folder)
                    if folder in names or not os.path.isdir(path):
                        continue
                    client.wait(E(host).install_weblet(_bundle_bytes(path), folder, "NONE"))
                    print(f"installed the example weblet {folder!r}", flush=True)
            gateway = client.wait(E(client.bootstrap()).gateway())
            url = client.wait(E(gateway).chat_url(host))
            print(f"\nOpen the chat: {url}\n", flush=True)
    except Exception as e:  # the daemon runs on; say what went wrong in one line
        print(f"ocapd: could not finish setting up: {_describe_error(e)}", file=sys.stderr, flush=True)


def cmd_doctor(args: argparse.Namespace) -> None:
    from ocapd.workers import probe

    report = probe()
    if args.json:
        _print_json(report)
        return
    for key, value in report.items():
        print(f"{key:24} {value}")


def cmd_inspect(args: argparse.Namespace) -> None:
    conv = Conversation(args)
    try:
        report = conv.call(conv.E(conv.facet).inspect())
    finally:
        conv.close()
    if args.json:
        _print_json(report)
        return
    d = report["daemon"]
    print(f"daemon   pid {d['pid']}  up {d['uptime_s']:.1f} s  rss {d['rss_bytes'] / 2**20:.1f} MiB  formulas {d['formulas']}")
    print(f"\nincarnations ({len(report['incarnations'])})")
    for inc in sorted(report["incarnations"], key=lambda i: (i["type"], i["id"])):
        print(f"  {inc['id'][:16]}  {inc['type']:16} {inc['state']:8} {inc['age_s']:9.1f} s")
    print(f"\nworkers ({len(report['workers'])})")
    for w in report["workers"]:
        conf = w.get("confinement") or {}
        applied = _confinement_summary(conf)
        print(f"  {w['id'][:16]}  pid {w['pid']:<7} {w['level']:6} rss {w['rss_bytes'] / 2**20:6.1f} MiB  up {w['uptime_s']:7.1f} s  confinement: {applied}")
    print(f"\nsessions ({len(report['sessions'])})")
    width = max([len(s["name"]) for s in report["sessions"]] + [4])
    print(f"  {'name':{width}} {'exports':>8} {'imports':>8} {'questions':>9} {'answers':>8} {'in':>8} {'out':>8}")
    for s in report["sessions"]:
        print(f"  {s['name']:{width}} {s['exports']:8} {s['imports']:8} {s['questions']:9} {s['answers']:8} {s['frames_in']:8} {s['frames_out']:8}")


def _confinement_summary(conf: dict) -> str:
    """What was applied to a worker, in a few words (``--json`` has every detail)."""
    parts = []
    if conf.get("environment") is not None:
        parts.append("env")
    if conf.get("rlimits"):
        parts.append("rlimits")
    for key, label in (("network", "no-network"), ("landlock", "landlock"), ("seccomp", "seccomp"), ("capabilities", "no-caps")):
        value = conf.get(key)
        if isinstance(value, dict) and value.get("applied") is True:
            parts.append(label)
    if conf.get("no_new_privs") is True:
        parts.append("no_new_privs")
    return ",".join(parts) or "none"


# ---------------------------------------------------------------------------
# agent commands


def _agent_command(fn: Callable[[Conversation, argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        conv = Conversation(args)
        try:
            fn(conv, args)
        finally:
            conv.close()

    return run


def _print_name_event(args: argparse.Namespace) -> Callable[[dict], None]:
    def show(event: dict) -> None:
        if args.json:
            _print_json(event)
        elif "add" in event:
            print(f"+ {event['add']}")
        elif "remove" in event:
            print(f"- {event['remove']}")
        elif "rename" in event:
            print(f"~ {event['rename']['from']} -> {event['rename']['to']}")
        sys.stdout.flush()

    return show


@_agent_command
def cmd_list(conv: Conversation, args: argparse.Namespace) -> None:
    if args.follow:
        stream = conv.on_agent("follow_name_changes", args.path)
        conv.follow(stream, _print_name_event(args))
        return
    target = conv.agent if args.path is None else conv.on_agent("lookup", args.path)
    if args.json or args.long:
        entries = conv.call(conv.E(target).list_entries())
        if args.json:
            _print_json(entries)
        else:
            for e in entries:
                print(f"{e['name']:24} {e['type']:16} {'live' if e['live'] else '-':5} {e['id'][:16]}")
        return
    for name in conv.call(conv.E(target).list()):
        print(name)


@_agent_command
def cmd_show(conv: Conversation, args: argparse.Namespace) -> None:
    info = conv.on_agent("describe", args.path)
    value = conv.on_agent("lookup", args.path)
    if args.json:
        _print_json({**info, "value": value})
    elif info["type"] in ("marshal", "eval", "lookup"):
        print(_show_value(value))
    else:
        print(f"<{info['type']} {info['id'][:16]}>")


@_agent_command
def cmd_remove(conv: Conversation, args: argparse.Namespace) -> None:
    for path in args.paths:
        conv.on_agent("remove", path)


@_agent_command
def cmd_move(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("move", args.source, args.dest)


@_agent_command
def cmd_copy(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("copy", args.source, args.dest)


@_agent_command
def cmd_mkdir(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("make_directory", args.path)


@_agent_command
def cmd_store(conv: Conversation, args: argparse.Namespace) -> None:
    if args.path is not None:
        try:
            data = open(args.path, "rb").read()
        except OSError as e:
            raise CliError(f"cannot read {args.path}: {e.strerror}") from None
        conv.on_agent("store_blob", data, args.name)
        return
    if args.stdin:
        conv.on_agent("store_blob", sys.stdin.buffer.read(), args.name)
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
    conv.on_agent("store_value", value, args.name)


@_agent_command
def cmd_eval(conv: Conversation, args: argparse.Namespace) -> None:
    names, paths = _parse_pairs(args.endowments, "eval")
    value = conv.on_agent("evaluate", args.worker, args.source, names, paths, args.name)
    if args.json:
        _print_json(value)
    elif args.name is None or value is not None:
        print(_show_value(value))


@_agent_command
def cmd_spawn(conv: Conversation, args: argparse.Namespace) -> None:
    for name in args.names:
        conv.on_agent("provide_worker", name)


@_agent_command
def cmd_make(conv: Conversation, args: argparse.Namespace) -> None:
    powers = _powers(args.powers)
    if args.bundle is not None:
        value = conv.on_agent("make_bundle", args.worker, args.bundle, powers, args.name)
    elif args.specifier is not None:
        spec = args.specifier
        if os.path.exists(spec):
            spec = os.path.abspath(spec)
        value = conv.on_agent("make_unconfined", args.worker, spec, powers, args.name)
    else:
        raise CliError("make: give a module file or name, or --bundle NAME")
    if args.name is None:
        print(_show_value(value))


def _bundle_bytes(path: str) -> bytes:
    """A weblet bundle from a zip, a single HTML file or a folder (zipped here)."""
    if os.path.isdir(path):
        from ocapd.daemon.weblet_bundle import read_bundle

        return read_bundle(path).to_zip()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None


@_agent_command
def cmd_install(conv: Conversation, args: argparse.Namespace) -> None:
    bundle: Any = _bundle_bytes(args.bundle) if os.path.exists(args.bundle) else args.bundle
    weblet = conv.on_agent("install_weblet", bundle, args.name, _powers(args.powers))
    manifest = conv.call(conv.E(weblet).manifest())
    if args.json:
        _print_json(manifest)
    else:
        print(f"installed {manifest['title']} {manifest['version']} as {args.name} (powers {args.powers})")


@_agent_command
def cmd_open(conv: Conversation, args: argparse.Namespace) -> None:
    instance = conv.call(conv.E(conv.on_agent("lookup", args.name)).open())
    if args.json:
        _print_json(instance)
    else:
        print(instance["url"])


@_agent_command
def cmd_cancel(conv: Conversation, args: argparse.Namespace) -> None:
    cancelled = conv.on_agent("cancel", args.path, args.reason)
    if args.json:
        _print_json(cancelled)


@_agent_command
def cmd_mkhost(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("provide_host", args.handle_name, args.agent_name or f"{args.handle_name}-agent")


@_agent_command
def cmd_mkguest(conv: Conversation, args: argparse.Namespace) -> None:
    host_names, guest_names = _parse_pairs(args.introduce, "--introduce")
    conv.on_agent(
        "provide_guest",
        args.handle_name,
        args.agent_name or f"{args.handle_name}-agent",
        dict(zip(host_names, guest_names, strict=True)),
    )


def _format_message(m: dict) -> str:
    sender = (m.get("from_names") or [m["from"][:16]])[0]
    if m["type"] == "request":
        state = m.get("settled") or "pending"
        return f"{m['number']}. {sender} requests: {m['description']} ({state})"
    parts = []
    for i, s in enumerate(m["strings"]):
        parts.append(s)
        if i < len(m["names"]):
            parts.append(f"@{m['names'][i]}")
    return f"{m['number']}. {sender}: {''.join(parts)}"


@_agent_command
def cmd_inbox(conv: Conversation, args: argparse.Namespace) -> None:
    if args.follow:
        stream = conv.on_agent("follow_messages")

        def show(event: dict) -> None:
            if args.json:
                _print_json(event)
            elif "add" in event:
                print(_format_message({"from_names": [], **event["add"]}))
            sys.stdout.flush()

        conv.follow(stream, show)
        return
    # Page by page: each page fits a frame, however much mail there is.
    messages: list[dict] = []
    while page := conv.on_agent("list_messages", messages[-1]["number"] if messages else -1):
        messages += page
    if args.json:
        _print_json(messages)
        return
    for m in messages:
        print(_format_message(m))


@_agent_command
def cmd_send(conv: Conversation, args: argparse.Namespace) -> None:
    strings, edges, pets = _parse_message(args.text)
    conv.on_agent("send", args.to, strings, edges, pets)


@_agent_command
def cmd_request(conv: Conversation, args: argparse.Namespace) -> None:
    value = conv.on_agent("request", args.to, args.description, args.name)
    if args.name is None:
        print(_show_value(value))


@_agent_command
def cmd_resolve(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("resolve", args.number, args.path)


@_agent_command
def cmd_reject(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("reject", args.number, args.reason)


@_agent_command
def cmd_adopt(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("adopt", args.number, args.edge, args.name or args.edge)


@_agent_command
def cmd_dismiss(conv: Conversation, args: argparse.Namespace) -> None:
    conv.on_agent("dismiss", args.number)


# ---------------------------------------------------------------------------
# the gateway: tokens and the Chat UI


def _gateway(conv: Conversation) -> Any:
    return conv.call(conv.E(conv.facet).gateway())


@_agent_command
def cmd_tokens(conv: Conversation, args: argparse.Namespace) -> None:
    gateway = _gateway(conv)
    if args.action == "list":
        tokens = conv.call(conv.E(gateway).list_tokens())
        if args.json:
            _print_json(tokens)
            return
        for t in tokens:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(t["created"]))
            print(f"{t['id'][:12]}  {created}  {t['agent_type']:6} {t['agent'][:16]}  {t['label']}")
    elif args.action == "mint":
        label = args.label if args.label is not None else (args.as_agent or "host")
        minted = conv.call(conv.E(gateway).mint(conv.agent, label))
        if args.json:
            _print_json(minted)
        else:
            print(minted["token"])
    else:
        if not args.id:
            raise CliError("tokens revoke: give a token id (or a unique prefix of one)")
        revoked = conv.call(conv.E(gateway).revoke(args.id))
        if args.json:
            _print_json(revoked)


@_agent_command
def cmd_chat(conv: Conversation, args: argparse.Namespace) -> None:
    url = conv.call(conv.E(_gateway(conv)).chat_url(conv.agent))
    if args.json:
        _print_json({"url": url})
    else:
        print(url)
    if args.open:
        import webbrowser

        webbrowser.open(url)


# ---------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--as", dest="as_agent", metavar="AGENT", help="act as this agent (a pet name path)")
    base.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--json", action="store_true", help="print JSON for machines")

    p = argparse.ArgumentParser(prog="ocapd", description="ocapd: an object-capability daemon")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str, parent: Any = common) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[parent])
        sp.set_defaults(fn=fn, json=False)
        return sp

    port_help = "the gateway's port on 127.0.0.1 (default 8920; 0: any free port)"
    sp = add("start", cmd_start, "start the daemon in the background; returns when it is ready")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--port", type=int, help=port_help)
    sp = add("run-daemon", cmd_run_daemon, "run the daemon in the foreground")
    sp.add_argument("--examples", metavar="DIR", help="install the weblets in DIR (each folder, once) when ready")
    sp.add_argument("--print-chat-url", action="store_true", help="print the chat URL when ready")
    sp.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    sp.add_argument("-q", "--quiet", action="store_true", help="log only to the log file")
    sp.add_argument("--port", type=int, help=port_help)
    sp = add("stop", cmd_stop, "stop the daemon")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.set_defaults(quiet_if_stopped=False)
    sp = add("restart", cmd_restart, "stop the daemon (if running) and start it again")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("--port", type=int, help=port_help)
    add("ping", cmd_ping, "check that the daemon answers")
    sp = add("purge", cmd_purge, "stop the daemon and delete all its state")
    sp.add_argument("-f", "--force", action="store_true", help="do not ask")
    sp = add("log", cmd_log, "print the daemon log")
    sp.add_argument("-f", "--follow", action="store_true")
    sp = add("where", cmd_where, "print where ocapd keeps its files")
    sp.add_argument("what", nargs="?", choices=["state", "run", "sock", "log", "cache", "gateway"])
    add("doctor", cmd_doctor, "report which worker confinement this machine supports")
    add("inspect", cmd_inspect, "live incarnations, workers and CapTP sessions")
    sp = add("tokens", cmd_tokens, "list, mint or revoke gateway tokens (what a browser trades for an agent)")
    sp.add_argument("action", choices=["list", "mint", "revoke"])
    sp.add_argument("id", nargs="?", help="revoke: the token's id or a unique prefix of it")
    sp.add_argument("--label", help="mint: a note for `tokens list` (default: the agent's name)")
    sp = add("chat", cmd_chat, "print the Chat UI's URL (with a token for the agent in its fragment)")
    sp.add_argument("--open", action="store_true", help="also open it in a browser")

    sp = add("list", cmd_list, "list names (of the agent, or of a directory)")
    sp.add_argument("path", nargs="?")
    sp.add_argument("-f", "--follow", action="store_true", help="keep reporting changes")
    sp.add_argument("-l", "--long", action="store_true", help="show types and ids")
    sp = add("show", cmd_show, "show the value a name refers to")
    sp.add_argument("path")
    sp = add("remove", cmd_remove, "forget names")
    sp.add_argument("paths", nargs="+")
    sp = add("move", cmd_move, "rename, within or across directories")
    sp.add_argument("source")
    sp.add_argument("dest")
    sp = add("copy", cmd_copy, "give a value a second name")
    sp.add_argument("source")
    sp.add_argument("dest")
    sp = add("mkdir", cmd_mkdir, "make a directory")
    sp.add_argument("path")
    sp = add("store", cmd_store, "store a value or a file and name it", base)
    group = sp.add_mutually_exclusive_group(required=True)
    group.add_argument("--text", help="a string")
    group.add_argument("--json", dest="json_value", metavar="JSON", help="a JSON value")
    group.add_argument("--bigint", help="an integer of any size")
    group.add_argument("--path", help="a file (stored as a blob)")
    group.add_argument("--stdin", action="store_true", help="standard input (stored as a blob)")
    sp.add_argument("-n", "--name", required=True, help="the pet name")
    sp = add("eval", cmd_eval, "evaluate Python in a worker: eval SOURCE [name:petname ...]")
    sp.add_argument("source")
    sp.add_argument("endowments", nargs="*", metavar="name:petname")
    sp.add_argument("-w", "--worker", help="worker name (MAIN, an existing or a new name; default: a fresh worker)")
    sp.add_argument("-n", "--name", help="name the result (it is recomputed from its recipe after a restart)")
    sp = add("spawn", cmd_spawn, "make named workers")
    sp.add_argument("names", nargs="+")
    sp = add("make", cmd_make, "run a module's make(powers, context) in a worker")
    sp.add_argument("specifier", nargs="?", help="a module file or module name")
    sp.add_argument("-b", "--bundle", help="a stored bundle (zip) instead of a module")
    sp.add_argument("-p", "--powers", default="NONE", help="NONE, ENDO, HOST or comma-separated pet names (default NONE)")
    sp.add_argument("-w", "--worker")
    sp.add_argument("-n", "--name")
    sp = add("install", cmd_install, "install a weblet: its own guest, endowed by the power level")
    sp.add_argument("bundle", help="a zip, a single HTML file, a folder, or the name of a stored bundle")
    sp.add_argument("-n", "--name", required=True)
    sp.add_argument("-p", "--powers", default="NONE", help="NONE (default), ENDO, HOST (trusted code only) or pet names")
    sp = add("open", cmd_open, "open a weblet instance; prints its URL")
    sp.add_argument("name")
    sp = add("cancel", cmd_cancel, "cancel a value and everything depending on it")
    sp.add_argument("path")
    sp.add_argument("reason", nargs="?", default="cancelled")
    sp = add("mkhost", cmd_mkhost, "make another host agent")
    sp.add_argument("handle_name")
    sp.add_argument("agent_name", nargs="?", help="default: HANDLE-agent")
    sp = add("mkguest", cmd_mkguest, "make a guest agent")
    sp.add_argument("handle_name")
    sp.add_argument("agent_name", nargs="?", help="default: HANDLE-agent")
    sp.add_argument("--introduce", action="append", default=[], metavar="host-name:guest-name")
    sp = add("inbox", cmd_inbox, "list messages")
    sp.add_argument("-f", "--follow", action="store_true")
    sp = add("send", cmd_send, 'send a message: send AGENT "text with @edge:petname"')
    sp.add_argument("to")
    sp.add_argument("text")
    sp = add("request", cmd_request, "ask an agent for something and wait for the answer")
    sp.add_argument("to")
    sp.add_argument("description")
    sp.add_argument("-n", "--name", help="name the answer")
    sp = add("resolve", cmd_resolve, "answer a request with a named value")
    sp.add_argument("number", type=int)
    sp.add_argument("path")
    sp = add("reject", cmd_reject, "decline a request")
    sp.add_argument("number", type=int)
    sp.add_argument("reason", nargs="?", default="declined")
    sp = add("adopt", cmd_adopt, "name a capability that came with a message")
    sp.add_argument("number", type=int)
    sp.add_argument("edge")
    sp.add_argument("-n", "--name")
    sp = add("dismiss", cmd_dismiss, "delete a message")
    sp.add_argument("number", type=int)
    return p


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"ocapd: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
        _fail(_describe_error(e))


def _describe_error(e: BaseException) -> str:
    from ocapd.captp import RemoteError, SessionAborted

    if isinstance(e, RemoteError):
        return e.message or e.name
    if isinstance(e, SessionAborted):
        return f"the daemon ended the conversation ({e.reason})"
    if isinstance(e, ConnectionError):
        return f"lost the connection to the daemon ({e})"
    return f"{type(e).__name__}: {e}"
