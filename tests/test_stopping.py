"""Work that can always be stopped, failures that leave nothing behind, output that reaches the caller.

Each test is a defect a new user hit (issue 10, items 1-4, 6, 7), written
against the real command and a real daemon. Nothing here waits on the clock
for correctness: the process table (the daemon's descendant processes in
/proc) and the daemon's own state say whether a worker is gone; polling with
a generous deadline only waits for such a state to be reached.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import PYTHON, DaemonProcess

#: How long a poll may wait for a state to be reached (never asserted as a timing).
DEADLINE = 30.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("stop") / "home")  # port 0: any free one
    d.home.mkdir()
    d.start()
    try:
        yield d
    finally:
        d.stop()


# -- the process table ------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(rest[1]), rest[0])
    return table


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(d: DaemonProcess) -> set[int]:
    """The daemon's live worker processes: what its fork server forked, and workers it started itself.

    A direct child is counted by what it runs (a process just forked, before
    it has exec'd the fork server, is neither); the fork server itself is not a worker.
    """
    assert d.proc is not None
    children: dict[int, list[int]] = {}
    for pid, (ppid, state) in _processes().items():
        if state != "Z":
            children.setdefault(ppid, []).append(pid)

    def descendants(pid: int) -> set[int]:
        found: set[int] = set()
        stack = [pid]
        while stack:
            for child in children.get(stack.pop(), []):
                found.add(child)
                stack.append(child)
        return found

    workers: set[int] = set()
    for child in children.get(d.proc.pid, []):
        command = _cmdline(child)
        if "ocapd.workers.forkserver" in command:
            workers |= descendants(child)
        elif "ocapd.workers" in command and "--spec" in command:  # started without the fork server
            workers |= {child} | descendants(child)
    return workers


def wait_until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    entry = _processes().get(pid)
    return entry is not None and entry[1] != "Z"


def cli_process(d: DaemonProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "ocapd", *args], env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def new_worker(d: DaemonProcess, before: set[int]) -> int:
    found: list[int] = []

    def appeared() -> bool:
        found[:] = sorted(worker_pids(d) - before)
        return bool(found)

    wait_until("a new worker process", appeared)
    return found[0]


def worker_of(d: DaemonProcess, pid: int) -> dict:
    report = json.loads(d.out("inspect", "--json"))
    (worker,) = [w for w in report["workers"] if w["pid"] == pid]
    return worker


def names(d: DaemonProcess, *path: str) -> list[str]:
    return d.out("list", *path).split()


# -- 2. every failing anonymous eval releases its worker ------------------------------


def test_failing_anonymous_evals_release_their_workers(daemon: DaemonProcess) -> None:
    before = worker_pids(daemon)
    for _ in range(3):
        failed = daemon.cli("eval", "1/0", check=False)
        assert failed.returncode == 1
    wait_until("no worker left by the failed evaluations", lambda: worker_pids(daemon) <= before)


# -- 3. failures leave no debris ------------------------------------------------------------


def test_a_failed_eval_names_nothing(daemon: DaemonProcess) -> None:
    before = worker_pids(daemon)
    failed = daemon.cli("eval", "1/0", "-n", "badeval", "-w", "badworker", check=False)
    assert failed.returncode == 1
    listed = names(daemon)
    assert "badeval" not in listed and "badworker" not in listed
    wait_until("the failed evaluation's new worker is gone", lambda: worker_pids(daemon) <= before)


def test_a_failed_make_names_nothing(daemon: DaemonProcess, tmp_path: Path) -> None:
    failed = daemon.cli("make", str(tmp_path / "nonexistent.py"), "-n", "m", check=False)
    assert failed.returncode == 1
    assert "m" not in names(daemon)


# -- 1. work that can always be stopped -------------------------------------------------------


def test_ctrl_c_on_an_eval_terminates_its_fresh_worker(daemon: DaemonProcess) -> None:
    before = worker_pids(daemon)
    waiting = cli_process(daemon, "eval", "while True: pass")
    pid = new_worker(daemon, before)
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(timeout=DEADLINE) == 130
    wait_until("the spinning worker is gone", lambda: not alive(pid))


def test_cancel_of_a_spinning_worker_stops_it_and_fails_its_waiters_with_one_line(daemon: DaemonProcess) -> None:
    daemon.cli("spawn", "spinw")
    pid = worker_of_name(daemon, "spinw")
    waiting = cli_process(daemon, "eval", "while True: pass", "-w", "spinw", "-n", "spin")
    wait_until("the evaluation is running", lambda: _busy(pid))
    daemon.cli("cancel", "spinw")
    out, err = waiting.communicate(timeout=DEADLINE)
    assert waiting.returncode == 1
    assert err.strip() == "ocapd: spinw was cancelled (Cancelled)"
    wait_until("the spinning worker is gone", lambda: not alive(pid))
    assert "spin" not in names(daemon)


def worker_of_name(d: DaemonProcess, name: str) -> int:
    fid = json.loads(d.out("show", name, "--json"))["id"]
    report = json.loads(d.out("inspect", "--json"))
    (worker,) = [w for w in report["workers"] if w["id"] == fid]
    return int(worker["pid"])


def _busy(pid: int) -> bool:
    """The process is running (state R), as a spinning loop is."""
    entry = _processes().get(pid)
    return entry is not None and entry[1] == "R"


def test_cancel_accepts_the_ids_inspect_prints(daemon: DaemonProcess) -> None:
    before = worker_pids(daemon)
    waiting = cli_process(daemon, "eval", "while True: pass", "-w", "unnamed-yet")
    pid = new_worker(daemon, before)
    short_id = worker_of(daemon, pid)["id"][:16]
    assert short_id in daemon.out("inspect")
    daemon.cli("cancel", short_id)
    out, err = waiting.communicate(timeout=DEADLINE)
    assert waiting.returncode == 1 and "cancelled" in err
    wait_until("the worker is gone", lambda: not alive(pid))
    assert "unnamed-yet" not in names(daemon)


def test_cancel_of_an_unknown_id_or_name_says_so(daemon: DaemonProcess) -> None:
    failed = daemon.cli("cancel", "0123456789abcdef", check=False)
    assert failed.returncode == 1
    assert "0123456789abcdef" in failed.stderr


def test_eval_timeout_cancels_the_work_and_terminates_the_worker(daemon: DaemonProcess) -> None:
    before = worker_pids(daemon)
    failed = daemon.cli("eval", "while True: pass", "--timeout", "0.5", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == "ocapd: the evaluation did not finish within 0.5 s and was cancelled (TimeoutError)"
    wait_until("the worker is gone", lambda: worker_pids(daemon) <= before)


def test_show_of_a_value_still_being_computed_answers_and_cancel_stops_it(daemon: DaemonProcess, tmp_path: Path) -> None:
    flag = tmp_path / "spin-while-this-exists"
    source = f"import os\nwhile os.path.exists({str(flag)!r}): pass\n'done'"
    daemon.cli("eval", source, "-w", "spinner", "-n", "slow")
    flag.touch()
    daemon.cli("cancel", "spinner")  # the next use recomputes `slow`, which now spins
    shown = daemon.cli("show", "slow", "--timeout", "0.5", check=False)
    assert shown.returncode == 1
    assert shown.stderr.strip() == (
        "ocapd: slow is still being computed; `ocapd show slow` again waits for it, `ocapd cancel slow` stops it"
    )
    pid = worker_of_name(daemon, "spinner")
    daemon.cli("cancel", "slow")  # a computation still running: its worker is terminated
    wait_until("the spinning worker is gone", lambda: not alive(pid))
    flag.unlink()
    assert daemon.out("show", "slow") == "done"


async def test_the_host_api_cancels_an_evaluation_when_its_cancel_promise_settles(daemon: DaemonProcess) -> None:
    """What the chat's Cancel button calls: evaluate(..., {"cancel": promise}), then settle the promise."""
    import trio

    from ocapd.captp import E, RemoteError, make_promise_kit

    before = worker_pids(daemon)
    async with daemon.connect() as (host, _, _):
        cancel, settle = make_promise_kit()
        failure: list[BaseException] = []

        async def evaluate() -> None:
            try:
                await E(host).evaluate(None, "while True: pass", [], [], None, {"cancel": cancel})
            except RemoteError as e:
                failure.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(evaluate)
            pid = await trio.to_thread.run_sync(new_worker, daemon, before)
            settle.resolve(None)
        assert [(e.name, e.message) for e in failure] == [("Cancelled", "the evaluation was cancelled")]
    await trio.to_thread.run_sync(wait_until, "the worker is gone", lambda: not alive(pid))


async def test_the_host_api_hands_printed_output_to_an_output_object(daemon: DaemonProcess) -> None:
    """What the chat calls to show output: evaluate(..., {"output": Far("Output", write=...)})."""
    from ocapd.captp import E, Far

    written: list[tuple[str, str]] = []
    output = Far("Output", write=lambda stream, text: written.append((stream, text)))
    async with daemon.connect() as (host, _, _):
        source = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n7"
        assert await E(host).evaluate(None, source, [], [], None, {"output": output}) == 7
        assert await E(host).evaluate(None, "8", [], [], None) == 8  # the option is optional
    assert written == [("stdout", "to out\n"), ("stderr", "to err\n")]


# -- 6. output of evaluated code ------------------------------------------------------------------


def test_print_in_evaluated_code_reaches_the_caller_and_the_worker_log(daemon: DaemonProcess) -> None:
    source = "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n42"
    result = daemon.cli("eval", source, "-w", "printer")
    assert result.stdout == "hello\n42\n"
    assert result.stderr == "oops\n"
    fid = json.loads(daemon.out("show", "printer", "--json"))["id"]
    log = (daemon.home / "state" / "logs" / "workers" / f"{fid[:32]}.log").read_text()
    assert "hello" in log and "oops" in log


def test_concurrent_evaluations_in_one_worker_keep_their_output_apart(daemon: DaemonProcess) -> None:
    daemon.cli("spawn", "chatty")
    source = "import trio\nfor i in range(20):\n    print('{0}', i)\n    await trio.sleep(0)\n'{0} done'"
    a = cli_process(daemon, "eval", source.format("alpha"), "-w", "chatty")
    b = cli_process(daemon, "eval", source.format("beta"), "-w", "chatty")
    out_a, _ = a.communicate(timeout=DEADLINE)
    out_b, _ = b.communicate(timeout=DEADLINE)
    assert out_a.splitlines() == [f"alpha {i}" for i in range(20)] + ["alpha done"]
    assert out_b.splitlines() == [f"beta {i}" for i in range(20)] + ["beta done"]


def test_sys_exit_in_evaluated_code_is_reported_and_spares_the_worker(daemon: DaemonProcess) -> None:
    daemon.cli("spawn", "sturdy")
    pid = worker_of_name(daemon, "sturdy")
    failed = daemon.cli("eval", "import sys; sys.exit(3)", "-w", "sturdy", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == "ocapd: the evaluated code called sys.exit(3) (SystemExit)"
    assert daemon.out("eval", "1 + 1", "-w", "sturdy") == "2"
    assert worker_of_name(daemon, "sturdy") == pid


# -- 7. one rule for names that exist ------------------------------------------------------------


def test_store_takes_a_dotted_path(daemon: DaemonProcess) -> None:
    daemon.cli("mkdir", "cfgdir")
    daemon.cli("store", "--text", "v1", "-n", "cfgdir.cfg")
    assert daemon.out("show", "cfgdir.cfg") == "v1"


@pytest.mark.parametrize(
    "command",
    [
        ["store", "--text", "new"],
        ["eval", "'new'"],
        ["make", "__MODULE__"],
    ],
)
def test_an_existing_name_is_replaced_only_with_replace(daemon: DaemonProcess, tmp_path: Path, command: list[str]) -> None:
    module = tmp_path / "maker.py"
    module.write_text("def make(powers, context):\n    return 'new'\n")
    command = [str(module) if part == "__MODULE__" else part for part in command]
    name = f"taken-{command[0]}"
    daemon.cli("store", "--text", "old", "-n", name)
    refused = daemon.cli(*command, "-n", name, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"ocapd: {name!r} already names something; pass --replace to replace it"
    assert daemon.out("show", name) == "old"
    daemon.cli(*command, "-n", name, "--replace")
    assert daemon.out("show", name) == "new"


def test_help_states_the_rule(daemon: DaemonProcess) -> None:
    for command in ("store", "eval", "make", "install"):
        assert "--replace" in daemon.out(command, "--help")


# -- 4. a busy port fails the start -----------------------------------------------------------------


def test_start_on_a_busy_port_fails_and_leaves_no_daemon(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "OCAPD_HOME": str(home)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            started = subprocess.run(
                [PYTHON, "-m", "ocapd", "start", "--port", str(port)], env=env, capture_output=True, text=True, timeout=60
            )
        finally:  # a daemon that did start must not outlive the test
            subprocess.run([PYTHON, "-m", "ocapd", "stop", "-q"], env=env, capture_output=True, timeout=60)
    assert started.returncode == 1
    assert started.stderr.strip() == (
        f"ocapd: the daemon failed to start: the gateway cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert subprocess.run([PYTHON, "-m", "ocapd", "ping"], env=env, capture_output=True).returncode == 1
    lock = home / "state" / "ocapd.lock"
    with open(lock, "a") as f:  # no daemon holds the state folder
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
