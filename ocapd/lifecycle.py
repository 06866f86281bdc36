"""Commands that start, stop and look after the daemon itself (some need no daemon running)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, NoReturn

from .conversation import CliError, Conversation, ping_ok, state_paths
from .render import confinement_summary, print_json

#: How long ``ocapd start`` waits for the daemon to report that it is ready.
START_TIMEOUT = 30.0
#: How long ``ocapd stop`` waits for the daemon process to exit.
STOP_TIMEOUT = 15.0


def cmd_where(args: argparse.Namespace) -> None:
    p = state_paths()
    table = {"state": p.state, "run": p.run, "sock": p.sock, "log": p.daemon_log, "cache": p.cache}
    try:  # written by the running daemon's gateway once it listens
        table["gateway"] = f"http://localhost:{int((p.run / 'gateway.port').read_text())}/"
    except (OSError, ValueError):
        if args.what == "gateway":
            raise CliError("the gateway is not running (start the daemon with `ocapd start`)") from None
    if args.what:
        print(table[args.what])
    elif args.json:
        print_json({k: str(v) for k, v in table.items()})
    else:
        for k, v in table.items():
            print(f"{k:6} {v}")


def cmd_ping(args: argparse.Namespace) -> None:
    conv = Conversation(args)
    try:
        print(conv.call(conv.E(conv.facet).ping()))
    finally:
        conv.close()


def cmd_start(args: argparse.Namespace) -> None:
    from ocapd.daemon.paths import ensure_dirs

    paths = state_paths()
    if ping_ok():
        raise CliError(f"the daemon is already running (state: {paths.state})")
    ensure_dirs(paths)
    paths.daemon_log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    r, w = os.pipe()
    # The daemon is this very process, forked: no second interpreter to start
    # and no second import of what this command has imported already (the
    # parser, the protocol). Nothing here runs a thread yet, so forking is safe.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _be_the_daemon(str(paths.daemon_log), w, args.port)
    os.close(w)
    ready = _read_ready(r, pid)
    if not ready:
        raise CliError(f"the daemon failed to start: {_last_error(paths.daemon_log)}")
    if not args.quiet:
        print(f"ocapd started (pid {pid})")


def _be_the_daemon(log_path: str, ready_fd: int, port: int | None) -> NoReturn:
    """In the forked child: detach, log to the daemon log, run the daemon; never returns.

    What ``python -m ocapd run-daemon --ready-fd W --quiet`` in a new session
    with its output in the log would be, without starting Python again.
    """
    code = 1
    try:
        os.setsid()  # a session of its own: the terminal's Ctrl-C is not for it
        devnull = os.open(os.devnull, os.O_RDONLY)
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in (devnull, log):
            if fd > 2:
                os.close(fd)
        # Keep only stdio and the ready pipe: whatever else this command
        # inherited (its caller's pipes) must not be held open by a daemon.
        os.closerange(3, ready_fd)
        os.closerange(ready_fd + 1, os.sysconf("SC_OPEN_MAX"))
        try:  # as ps and top name it: "ocapd-daemon", not the command that started it
            with open("/proc/self/comm", "w") as f:
                f.write("ocapd-daemon")
        except OSError:
            pass
        from .run import cmd_run_daemon

        cmd_run_daemon(argparse.Namespace(ready_fd=ready_fd, quiet=True, port=port, examples=None, print_chat_url=False))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _read_ready(fd: int, pid: int) -> bool:
    """Whether the daemon (our child ``pid``) says ``ready`` on the pipe ``fd`` before it exits or time runs out."""
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
            elif os.waitpid(pid, os.WNOHANG)[0] != 0:
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
        return int(open(state_paths().pidfile).read().strip())
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

    paths = state_paths()
    if not args.force:
        if not sys.stdin.isatty():
            raise CliError("purge deletes every name, message and value; pass --force to confirm")
        answer = input(f"Delete all ocapd state in {paths.state}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("not purged")
    if ping_ok():
        args.quiet_if_stopped = True
        args.quiet = True
        cmd_stop(args)
    for d in (paths.state, paths.run, paths.cache):
        shutil.rmtree(d, ignore_errors=True)
    print("ocapd state purged")


def cmd_log(args: argparse.Namespace) -> None:
    path = state_paths().daemon_log
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


def cmd_doctor(args: argparse.Namespace) -> None:
    from ocapd.daemon.weblet.browser import browser_report
    from ocapd.workers import probe

    report = probe()
    browser = browser_report()
    if args.json:
        print_json({**report, "browser": browser})
        return
    for key, value in report.items():
        print(f"{key:24} {value}")
    print("browser")
    here = {True: "new enough to enforce the WebRTC block (if it is the browser you use)", False: "too old: does NOT enforce the WebRTC block", None: "unknown"}
    found = f"{browser['version']} at {browser['chromium']}: " if browser["version"] else "none found: "
    print(f"  {'chromium':22} {found}{here[browser['webrtc_blocked_here']]}")
    print(f"  {'WebRTC':22} {browser['webrtc']}")


def cmd_inspect(args: argparse.Namespace) -> None:
    conv = Conversation(args)
    try:
        report = conv.call(conv.E(conv.facet).inspect())
    finally:
        conv.close()
    if args.json:
        print_json(report)
        return
    d = report["daemon"]
    print(f"daemon   pid {d['pid']}  up {d['uptime_s']:.1f} s  rss {d['rss_bytes'] / 2**20:.1f} MiB  formulas {d['formulas']}")
    print(f"\nincarnations ({len(report['incarnations'])})")
    for inc in sorted(report["incarnations"], key=lambda i: (i["type"], i["id"])):
        print(f"  {inc['id'][:16]}  {inc['type']:16} {inc['state']:8} {inc['age_s']:9.1f} s")
    print(f"\nworkers ({len(report['workers'])})")
    for w in report["workers"]:
        conf = w.get("confinement") or {}
        applied = confinement_summary(conf)
        print(f"  {w['id'][:16]}  pid {w['pid']:<7} {w['level']:6} rss {w['rss_bytes'] / 2**20:6.1f} MiB  up {w['uptime_s']:7.1f} s  confinement: {applied}")
    print(f"\nsessions ({len(report['sessions'])})")
    width = max([len(s["name"]) for s in report["sessions"]] + [4])
    print(f"  {'name':{width}} {'exports':>8} {'imports':>8} {'questions':>9} {'answers':>8} {'in':>8} {'out':>8} {'waiting':>10}")
    for s in report["sessions"]:
        counts = f"{s['exports']:8} {s['imports']:8} {s['questions']:9} {s['answers']:8} {s['frames_in']:8} {s['frames_out']:8}"
        print(f"  {s['name']:{width}} {counts} {s.get('outbox_bytes', 0):10}")
    ocapn = report.get("ocapn")
    if ocapn is not None:
        print(f"\nocapn    {ocapn['uri'] or 'not listening'}  shares {ocapn['shares']}")
        print(f"  peers ({len(ocapn['peers'])})")
        for p in ocapn["peers"]:
            print(f"    {p['id'][:16]}  {'live' if p['live'] else '-':5} {p['locator']}")
        holders = ocapn.get("holders", [])
        print(f"  share holders ({len(holders)})")
        for h in holders:
            print(f"    {h['peer']}  {h['shares']} share{'s' if h['shares'] != 1 else ''}")
        print(f"  sessions ({len(ocapn['sessions'])})")
        for s in ocapn["sessions"]:
            who = s["designator"] or "?"
            proven = "authenticated" if s["authenticated"] else "unauthenticated"
            print(
                f"    {who[:20]:20} {s['netlayer'] or '-':12} {s['direction']:8} {s['state']:8} {proven:15} "
                f"exports {s.get('exports', 0)}  imports {s.get('imports', 0)}"
            )

