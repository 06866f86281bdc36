"""The daemon as its users see it: a real daemon process, the real CLI, CapTP over its socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import textwrap
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
import trio
from daemon_harness import PYTHON, DaemonProcess

from ocapd.captp import E, RemoteError, SessionAborted

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def daemon(tmp_path: Path):
    with DaemonProcess(tmp_path / "home") as d:
        yield d


# -- lifecycle ------------------------------------------------------------------


def test_start_ping_stop_lifecycle(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "home")
    d.home.mkdir()
    assert d.cli("ping", check=False).returncode == 1
    started = d.cli("start", "--port", "0")
    assert "started" in started.stdout
    try:
        assert d.out("ping") == "pong"
        assert d.sock.exists() and oct(d.sock.parent.stat().st_mode & 0o777) == "0o700"
    finally:
        stopped = d.cli("stop")
    assert "stopped" in stopped.stdout
    assert not d.sock.exists()
    result = d.cli("ping", check=False)
    assert result.returncode == 1 and "not running" in result.stderr


def test_start_refuses_a_second_daemon_on_the_same_state(daemon: DaemonProcess) -> None:
    again = daemon.cli("start", "--port", "0", check=False)
    assert again.returncode == 1
    assert "already running" in again.stderr
    # Even bypassing the CLI's check, the state lock refuses a second daemon.
    direct = subprocess.run(
        [PYTHON, "-m", "ocapd", "run-daemon", "--quiet", "--port", "0"], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert direct.returncode == 1
    assert "another ocapd daemon" in direct.stderr and "Traceback" not in direct.stderr
    assert daemon.out("ping") == "pong"


# -- values and evaluation ------------------------------------------------------------


def test_stored_values_round_trip(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.cli("store", "--text", "hello <world>", "-n", "greeting")
    daemon.cli("store", "--json", '{"a": [1, 2.5, null, true], "b": "x"}', "-n", "record")
    daemon.cli("store", "--bigint", str(2**200 + 1), "-n", "big")
    blob = tmp_path / "data.bin"
    blob.write_bytes(bytes(range(256)))
    daemon.cli("store", "--path", str(blob), "-n", "blob")
    assert daemon.out("show", "greeting") == "hello <world>"
    assert json.loads(daemon.out("show", "record")) == {"a": [1, 2.5, None, True], "b": "x"}
    assert daemon.out("show", "big") == str(2**200 + 1)
    names = daemon.out("list").splitlines()
    assert {"greeting", "record", "big", "blob"} <= set(names)
    assert names[: names.index("big")] == sorted(names[: names.index("big")])  # specials first
    # The blob comes back byte for byte through a worker.
    assert daemon.out("eval", "await E(b).sha256()", "b:blob") == __import__("hashlib").sha256(bytes(range(256))).hexdigest()


def test_eval_in_a_named_worker_and_in_an_anonymous_one(daemon: DaemonProcess) -> None:
    assert daemon.out("eval", "6 * 7") == "42"
    assert daemon.out("eval", "import os\nos.getpid()", "-w", "w1") == daemon.out("eval", "import os\nos.getpid()", "-w", "w1")
    anon1 = daemon.out("eval", "import os\nos.getpid()")
    anon2 = daemon.out("eval", "import os\nos.getpid()")
    assert anon1 != anon2  # each anonymous eval gets a fresh worker
    assert "w1" in daemon.out("list").split()


def test_eval_endowments_are_passed_by_name(daemon: DaemonProcess) -> None:
    daemon.cli("store", "--text", "abc", "-n", "t")
    assert daemon.out("eval", "s.upper()", "s:t") == "ABC"


async def test_named_eval_survives_restart_and_is_recomputed_from_its_recipe(daemon: DaemonProcess) -> None:
    source = textwrap.dedent(
        """
        state = {"n": 0}
        def incr():
            state["n"] += 1
            return state["n"]
        Far("Counter", incr=incr)
        """
    )
    daemon.cli("eval", source, "-w", "counting", "-n", "counter")
    async with daemon.connect() as (host, _, _):
        counter = await E(host).lookup("counter")
        assert [await E(counter).incr(), await E(counter).incr()] == [1, 2]
    daemon.restart()
    async with daemon.connect() as (host, _, _):
        assert "counter" in await E(host).list()
        counter = await E(host).lookup("counter")
        assert await E(counter).incr() == 1  # heap state is not persisted; the recipe is


# -- names ------------------------------------------------------------------------------


async def test_move_copy_remove_within_and_across_directories_and_guests(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).store_value("v", "a")
        await E(host).make_directory("d1")
        await E(host).make_directory("d2")
        await E(host).move("a", "b")
        assert "a" not in await E(host).list() and await E(host).lookup("b") == "v"
        await E(host).move("b", "d1.c")
        assert await E(host).lookup("d1.c") == "v" and "b" not in await E(host).list()
        await E(host).move("d1.c", "d2.e")
        assert await E(E(host).lookup("d1")).list() == [] and await E(host).lookup("d2.e") == "v"
        await E(host).copy("d2.e", "f")
        assert await E(host).identify("f") == await E(host).identify("d2.e")
        await E(host).provide_guest("alice", "alice-agent")
        await E(host).provide_guest("bob", "bob-agent")
        await E(host).copy("f", "alice-agent.gift")
        await E(host).move("alice-agent.gift", "bob-agent.gift")
        alice, bob = await E(host).lookup("alice-agent"), await E(host).lookup("bob-agent")
        assert "gift" not in await E(alice).list() and await E(bob).lookup("gift") == "v"
        await E(host).remove("f")
        assert "f" not in await E(host).list()
        with pytest.raises(RemoteError, match="unknown name"):
            await E(host).remove("f")


async def test_move_keeps_the_original_when_writing_the_new_name_fails(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).store_value("keep", "orig")
        for bad in ("Bad Name", "nodir.x", "SELF", "a..b"):
            with pytest.raises(RemoteError):
                await E(host).move("orig", bad)
            assert await E(host).lookup("orig") == "keep"


async def test_follow_name_changes_replays_first_then_reports_each_change_once(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).store_value(1, "b")
        await E(host).store_value(2, "a")
        stream = await E(host).follow_name_changes()
        replay = [await E(stream).next(), await E(stream).next()]
        assert [e["value"]["add"] for e in replay] == ["a", "b"]
        await E(host).store_value(3, "c")
        await E(host).remove("a")
        await E(host).move("b", "d")
        events = [(await E(stream).next())["value"] for _ in range(3)]
        assert [next(k for k in e if k != "id") for e in events] == ["add", "remove", "rename"]
        assert events[0]["add"] == "c" and events[1]["remove"] == "a"
        assert events[2]["rename"] == {"from": "b", "to": "d"}
        # Nothing further: a store of a value under a new name is the next event, not a repeat.
        await E(host).store_value(4, "z")
        assert (await E(stream).next())["value"]["add"] == "z"


def test_pet_name_validation_rejects_bad_names_with_a_clear_message(daemon: DaemonProcess) -> None:
    for bad in ("Upper", "-dash", "has space", "x" * 129, "dot."):
        result = daemon.cli("store", "--text", "v", f"--name={bad}", check=False)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        # store -n takes a dotted path (as copy and move do): "dot." is a path with an empty part
        assert len(lines) == 1 and ("pet name" in lines[0] or "name path" in lines[0]), result.stderr
    assert daemon.cli("store", "--text", "v", "-n", "ok-name-1").returncode == 0


# -- mail -------------------------------------------------------------------------------------


async def test_mailboxes_persist_across_restart(daemon: DaemonProcess) -> None:
    daemon.cli("mkguest", "alice")
    daemon.cli("store", "--text", "doc", "-n", "report")
    daemon.cli("send", "alice", "see @doc:report please")
    daemon.cli("send", "HOST", "hello host", "--as", "alice-agent")
    before_host = daemon.out("inbox")
    before_alice = daemon.out("inbox", "--as", "alice-agent")
    assert "alice: hello host" in before_host
    assert "see @doc please" in before_alice
    daemon.restart()
    assert daemon.out("inbox") == before_host
    assert daemon.out("inbox", "--as", "alice-agent") == before_alice
    daemon.cli("adopt", "0", "doc", "-n", "my-doc", "--as", "alice-agent")
    assert daemon.out("show", "my-doc", "--as", "alice-agent") == "doc"


async def test_a_guests_host_is_a_handle_and_host_methods_fail_through_it(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        guest = await E(host).provide_guest("alice", "alice-agent")
        their_host = await E(guest).lookup("HOST")
        for method, args in [("evaluate", (None, "1", [], [])), ("store_value", (1, "x")), ("list", ()), ("lookup", ("SELF",))]:
            with pytest.raises(RemoteError, match="no method"):
                await getattr(E(their_host), method)(*args)
        with pytest.raises(RemoteError, match="no method"):
            await E(guest).evaluate(None, "1", [], [])
        assert "ENDO" not in await E(guest).list()


async def test_guests_cannot_forge_a_messages_sender(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).provide_guest("alice", "alice-agent")
        await E(host).provide_guest("mallory", "mallory-agent")
        mallory = await E(host).lookup("mallory-agent")
        await E(host).send("mallory", ["meet alice"], [], [])
        # Mallory names alice's handle and tries every way to send as someone else.
        with pytest.raises(RemoteError):
            await E(mallory).send("HOST", ["from alice"], [], [], "alice")  # no sender argument exists
        handle = await E(mallory).lookup("HOST")
        for method in ("deliver", "_deliver", "send", "receive"):
            with pytest.raises(RemoteError):
                await getattr(E(handle), method)({"from": "forged"})
        await E(mallory).send("HOST", ["i am alice"], [], [])
        messages = await E(host).list_messages()
        last = messages[-1]
        assert last["strings"] == ["i am alice"]
        assert last["from"] == await E(host).identify("mallory")
        assert last["from_names"] == ["mallory"]


async def test_a_caplets_pending_request_survives_restart_and_can_be_resolved_after(daemon: DaemonProcess, tmp_path: Path) -> None:
    caplet = tmp_path / "caplet.py"
    caplet.write_text(
        textwrap.dedent(
            """
            from ocapd.captp import E, Far

            async def make(powers, context):
                gift = await E(powers).request("HOST", "the caplet needs a greeting", "greeting")
                return Far("Service", greet=lambda: f"service has {gift}")
            """
        )
    )
    daemon.cli("store", "--text", "hi there", "-n", "hello")
    maker = subprocess.Popen(
        [PYTHON, "-m", "ocapd", "make", str(caplet), "-n", "svc", "-p", "NONE"],
        env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for _ in range(100):
            if "needs a greeting" in daemon.out("inbox"):
                break
            trio_sleep_blocking(0.05)
        assert "the caplet needs a greeting (pending)" in daemon.out("inbox")
        daemon.restart()
        maker.wait(timeout=30)  # its conversation ended with the old daemon
    finally:
        if maker.poll() is None:
            maker.kill()
    assert "needs a greeting (pending)" in daemon.out("inbox")
    async with daemon.connect() as (host, _, _):
        async with trio.open_nursery() as nursery:
            result: list = []

            async def use_service() -> None:
                svc = await E(host).lookup("svc")  # reincarnates the caplet, which asks again
                result.append(await E(svc).greet())

            nursery.start_soon(use_service)
            await trio.sleep(0.5)
            messages = await E(host).list_messages()
            pending = [m for m in messages if m["type"] == "request" and m["settled"] is None]
            assert len(pending) == 1, "asking again after a restart reuses the persisted request"
            await E(host).resolve(pending[0]["number"], "hello")
        assert result == ["service has hi there"]


# -- cancellation and workers ---------------------------------------------------------------------


async def test_cancelling_a_worker_cancels_its_evals_and_the_next_use_reincarnates_them(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        pid1 = await E(host).evaluate("w", "import os\nos.getpid()", [], [], "pid")
        assert await E(host).lookup("pid") == pid1
        cancelled = await E(host).cancel("w")
        assert await E(host).identify("pid") in cancelled
        pid2 = await E(host).lookup("pid")  # recomputed in a new worker process
        assert pid2 != pid1


async def test_cancelling_a_value_cascades_to_what_depends_on_it(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).evaluate("w", "Far('C', n=lambda: 1)", [], [], "c")
        await E(host).evaluate("w", "Far('B', n=lambda: 2)", ["c"], ["c"], "b")
        await E(host).evaluate("w", "Far('A', n=lambda: 3)", ["b"], ["b"], "a")
        ids = {n: await E(host).identify(n) for n in "abc"}
        cancelled = await E(host).cancel("c")
        assert {ids["a"], ids["b"], ids["c"]} <= set(cancelled)
        assert await E(E(host).lookup("a")).n() == 3  # and each comes back on use


async def test_a_worker_killed_with_sigkill_leaves_the_daemon_serving(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, facet, _):
        obj = await E(host).evaluate("w", "Far('Obj', hello=lambda: 'hi')", [], [], "obj")
        assert await E(obj).hello() == "hi"
        workers = (await E(facet).inspect())["workers"]
        worker_id = await E(host).identify("w")
        pid = next(w["pid"] for w in workers if w["id"] == worker_id)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises((SessionAborted, RemoteError)) as info:
            for _ in range(200):
                await E(obj).hello()
                await trio.sleep(0.02)
        assert "disconnected" in str(info.value) or "closed" in str(info.value)
        assert await E(facet).ping() == "pong"
        obj = await E(host).lookup("obj")  # the recipe runs again in a new worker
        assert await E(obj).hello() == "hi"


def test_a_none_powered_bundle_cannot_reach_the_network_or_files(daemon: DaemonProcess, tmp_path: Path) -> None:
    report = json.loads(daemon.out("doctor", "--json"))
    if not report.get("network_namespace") and not report.get("netns"):
        pytest.skip(f"this machine cannot give workers a private network: {report}")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "main.py",
            textwrap.dedent(
                f"""
                import socket
                from ocapd.captp import Far

                def make(powers, context):
                    def net():
                        try:
                            socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                            return "connected"
                        except OSError as e:
                            return "refused: " + type(e).__name__
                    def read():
                        try:
                            return open({str(secret)!r}).read()
                        except OSError as e:
                            return "refused: " + type(e).__name__
                    return Far("Probe", net=net, read=read)
                """
            ),
        )
    bundle = tmp_path / "probe.zip"
    bundle.write_bytes(buf.getvalue())
    daemon.cli("store", "--path", str(bundle), "-n", "probe-zip")
    daemon.cli("make", "--bundle", "probe-zip", "-p", "NONE", "-n", "probe")
    net = daemon.out("eval", "await E(p).net()", "p:probe")
    read = daemon.out("eval", "await E(p).read()", "p:probe")
    listener.close()
    assert net.startswith("refused"), net
    if report.get("landlock") or report.get("landlock_abi"):
        assert read.startswith("refused"), read


# -- durability ------------------------------------------------------------------------------------


def test_kill_9_during_500_concurrent_writes_loses_no_acknowledged_write(daemon: DaemonProcess, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, trio
            from ocapd.captp import E, open_stream_connection

            async def one(host, i):
                if i % 2:
                    await E(host).store_value({{"i": i}}, f"v{{i}}")
                else:
                    await E(host).send("SELF", [f"m{{i}}"], [], [])
                print(i, flush=True)

            async def main():
                stream = await trio.open_unix_socket({str(daemon.sock)!r})
                async with open_stream_connection(stream) as conn:
                    host = await E(conn.bootstrap()).host()
                    async with trio.open_nursery() as n:
                        for i in range(500):
                            n.start_soon(one, host, i)
            try:
                trio.run(main)
            except BaseException:
                pass
            """
        )
    )
    writer = subprocess.Popen([PYTHON, str(script)], env=daemon.env, stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    assert writer.stdout is not None
    for line in writer.stdout:
        acked.append(int(line))
        if len(acked) == 150:
            daemon.kill9()
            break
    writer.kill()
    rest, _ = writer.communicate()
    acked += [int(x) for x in rest.split()]
    assert len(acked) >= 150
    con = sqlite3.connect(daemon.db_path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    daemon.start()
    names = set(daemon.out("list").split())
    texts = {"".join(m["strings"]) for m in json.loads(daemon.out("inbox", "--json"))}
    lost = [i for i in acked if (f"v{i}" not in names if i % 2 else f"m{i}" not in texts)]
    assert lost == []


def trio_sleep_blocking(seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_inspect_reports_incarnations_workers_and_sessions(daemon: DaemonProcess) -> None:
    daemon.cli("eval", "1", "-w", "w")
    report = json.loads(daemon.out("inspect", "--json"))
    assert report["daemon"]["pid"] > 0 and report["daemon"]["rss_bytes"] > 0
    assert any(i["type"] == "worker" and i["state"] == "ready" for i in report["incarnations"])
    (worker,) = report["workers"]
    assert worker["pid"] > 0 and worker["rss_bytes"] > 0 and worker["level"] == "HOST"
    assert isinstance(worker["confinement"], dict)
    assert any(s["name"].startswith("cli-") and s["exports"] >= 1 for s in report["sessions"])
    (worker_session,) = [s for s in report["sessions"] if s["name"] == f"worker-{worker['id'][:12]}"]
    assert worker_session["frames_in"] >= 2 and worker_session["imports"] >= 1  # its facet
    table = daemon.out("inspect")
    assert "incarnations" in table and "workers (1)" in table and "sessions" in table


def test_cli_errors_are_one_line_without_traceback(daemon: DaemonProcess) -> None:
    for args in (["show", "nothing-here"], ["eval", "1/0"], ["remove", "missing"], ["resolve", "99", "x"], ["cancel", "nope"]):
        result = daemon.cli(*args, check=False)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert "division by zero" in daemon.cli("eval", "1/0", check=False).stderr


def test_kill_9_of_the_daemon_leaves_no_worker_or_fork_server_behind(daemon: DaemonProcess) -> None:
    # A worker busy in a loop never reads the end of its pipe: it must still go.
    daemon.cli("eval", "Far('Spin', go=lambda: None)", "-w", "spinner")
    spinning = subprocess.Popen(
        [PYTHON, "-m", "ocapd", "eval", "while True: pass", "-w", "spinner"], env=daemon.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    report = json.loads(daemon.out("inspect", "--json"))
    (worker,) = report["workers"]
    daemon_pid = report["daemon"]["pid"]
    children = _descendants(daemon_pid)
    assert worker["pid"] in children
    import time

    start = _cpu_ticks(worker["pid"])
    deadline = time.monotonic() + 20
    while _cpu_ticks(worker["pid"]) - start < 20 and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the worker is really stuck in the loop
    assert _cpu_ticks(worker["pid"]) - start >= 20
    daemon.kill9()
    spinning.kill()
    spinning.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.05)
    assert [p for p in children if _alive(p)] == []


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    parent_of = {int(out[i]): int(out[i + 1]) for i in range(0, len(out), 2)}
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime



async def test_followers_are_released_when_their_session_ends(daemon: DaemonProcess) -> None:
    for i in range(3):
        async with daemon.connect() as (host, _, _):
            names = await E(host).follow_name_changes()
            mail = await E(host).follow_messages()
            await E(host).store_value(i, f"x{i}")
            replayed = [(await E(names).next())["value"] for _ in range(i + 1)]
            assert {"add": f"x{i}"}.items() <= replayed[-1].items()
            del names, mail
    async with daemon.connect() as (host, facet, _):
        stream = await E(host).follow_name_changes()
        # Only the stream this session holds is still following.
        assert (await E(facet).inspect())["daemon"]["followers"] == 1
        del stream


def test_the_cli_walks_through_names_workers_logs_and_purge(daemon: DaemonProcess) -> None:
    where = json.loads(daemon.out("where", "--json"))
    assert where["sock"] == str(daemon.sock) and Path(where["state"]).is_dir()
    assert daemon.out("where", "sock") == str(daemon.sock)
    daemon.cli("spawn", "w1", "w2")
    daemon.cli("mkdir", "docs")
    daemon.cli("store", "--text", "v", "-n", "a")
    daemon.cli("copy", "a", "docs.b")
    daemon.cli("move", "a", "c")
    listing = {e["name"]: e for e in json.loads(daemon.out("list", "--json"))}
    assert listing["w1"]["type"] == listing["w2"]["type"] == "worker"
    assert listing["docs"]["type"] == "directory" and "a" not in listing
    assert daemon.out("list", "docs") == "b"
    shown = json.loads(daemon.out("show", "c", "--json"))
    assert shown["value"] == "v" and shown["type"] == "marshal" and shown["id"] == listing["c"]["id"]
    daemon.cli("remove", "c", "docs.b")
    assert "c" not in daemon.out("list").split() and daemon.out("list", "docs") == ""
    assert "ocapd ready" in daemon.out("log")
    refused = daemon.cli("purge", check=False)  # no terminal: it must not guess
    assert refused.returncode == 1 and "--force" in refused.stderr
    daemon.cli("restart", "--port", "0")
    assert daemon.out("ping") == "pong" and "w1" in daemon.out("list").split()
    daemon.cli("purge", "--force")
    assert daemon.cli("ping", check=False).returncode == 1
    assert not (daemon.home / "state").exists()
    daemon.proc = None  # purge stopped it


async def test_asking_again_for_what_was_already_given_gets_the_same_answer(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).store_value("the answer", "answer")
        guest = await E(host).provide_guest("alice", "alice-agent")
        async with trio.open_nursery() as nursery:
            got: list = []

            async def ask() -> None:
                got.append(await E(guest).request("HOST", "the answer, please", "answer"))

            nursery.start_soon(ask)
            with trio.fail_after(20):
                while not [m for m in await E(host).list_messages() if m["type"] == "request"]:
                    await trio.sleep(0.02)
            await E(host).resolve(0, "answer")
        assert got == ["the answer"]
        # The guest forgets the name, as a reincarnated caplet would not have it yet, and asks again.
        await E(guest).remove("answer")
        with trio.fail_after(20):
            assert await E(guest).request("HOST", "the answer, please", "answer") == "the answer"
        requests = [m for m in await E(host).list_messages() if m["type"] == "request"]
        assert len(requests) == 1  # no second request reached the host
        # A refused request is not reused: asking again after a "no" is a new question.
        await E(host).provide_guest("bob", "bob-agent")
        bob = await E(host).lookup("bob-agent")
        async with trio.open_nursery() as nursery:
            async def bob_asks() -> None:
                with pytest.raises(RemoteError, match="no"):
                    await E(bob).request("HOST", "something", "thing")

            nursery.start_soon(bob_asks)
            with trio.fail_after(20):
                while len([m for m in await E(host).list_messages() if m["type"] == "request"]) < 2:
                    await trio.sleep(0.02)
            await E(host).reject(1, "no")
        async with trio.open_nursery() as nursery:
            second: list = []

            async def bob_asks_again() -> None:
                second.append(await E(bob).request("HOST", "something", "thing"))

            nursery.start_soon(bob_asks_again)
            with trio.fail_after(20):
                while len([m for m in await E(host).list_messages() if m["type"] == "request"]) < 3:
                    await trio.sleep(0.02)
            await E(host).resolve(2, "answer")
        assert second == ["the answer"]


async def test_answering_a_request_with_an_agent_leaves_that_agent_itself(daemon: DaemonProcess) -> None:
    """Seen in the chat (issue 10, item 8): Allow with AGENT, and `ocapd chat` then said
    "tokens are minted for agents": the request's promise had taken over the host's identity."""
    async with daemon.connect() as (host, _, _):
        guest = await E(host).provide_guest("trusted", "trusted-agent")
        async with trio.open_nursery() as nursery:
            got: list = []

            async def ask() -> None:
                got.append(await E(guest).request("HOST", "your powers, please", "powers"))

            nursery.start_soon(ask)
            with trio.fail_after(20):
                while not (requests := [m for m in await E(host).list_messages() if m["type"] == "request"]):
                    await trio.sleep(0.02)
            await E(host).resolve(requests[0]["number"], "AGENT")
        assert len(got) == 1
    assert "#token=" in daemon.out("chat")  # a token is still minted for the host
    assert "#token=" in daemon.out("chat", "--as", "trusted-agent")


def test_a_rejected_request_fails_with_the_hosts_reason(daemon: DaemonProcess) -> None:
    """The rejection is a stored value (written and read with the storage encoding)."""
    import time

    daemon.cli("mkguest", "bob")
    asking = subprocess.Popen(
        [PYTHON, "-m", "ocapd", "request", "HOST", "the keys", "--as", "bob-agent"],
        env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while "the keys" not in daemon.out("inbox"):  # a state to reach, with a generous bound
        if time.monotonic() > deadline:
            raise AssertionError("the request never reached the inbox")
        time.sleep(0.05)
    daemon.cli("reject", "0", "not today")
    _, err = asking.communicate(timeout=30)
    assert asking.returncode == 1
    assert "not today" in err
    assert "(rejected)" in daemon.out("inbox")
