"""Workers: code in confined subprocesses, started through the fork server or as a plain subprocess.

Real processes throughout; no mocks and no timing assertions.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest
import trio

from ocapd.captp import E, RemoteError, SessionAborted, far
from ocapd.workers import Launcher, WorkerSpec, WorkerStartError, open_worker, probe
from ocapd.workers.archive import MAX_FILE_SIZE, MAX_MEMBERS

PROBE = probe()


def _landlock_reason() -> str | None:
    landlock = PROBE.get("landlock", {})
    if not landlock.get("enforced"):
        return f"Landlock not enforceable here: {landlock.get('reason', 'unsupported')}"
    return None


def _netns_reason() -> str | None:
    netns = PROBE.get("netns", {})
    if not netns.get("supported"):
        return f"network namespaces unavailable: {netns.get('reason')}"
    return None


def spec_for(tmp_path: Path, name: str, level: str = "NONE", **kw: object) -> WorkerSpec:
    return WorkerSpec(name, level, tmp_path / "work" / name, tmp_path / "logs" / f"{name}.log", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def launcher():
    async with Launcher() as launcher:
        assert launcher.fork_server_pid is not None
        yield launcher


def make_zip(files: dict[str, bytes | str], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@far("Recorder")
class Recorder:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def note(self, value: object) -> str:
        self.seen.append(value)
        return f"noted {value}"


# -- evaluate ---------------------------------------------------------------------------


async def test_evaluate_expression_block_and_top_level_await(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "eval"), launcher) as worker:
        facet = worker.facet
        assert await E(facet).evaluate("1 + 1", [], []) == 2
        assert await E(facet).evaluate("x = a * 2\ny = x + b\ny", ["a", "b"], [20, 2]) == 42
        assert await E(facet).evaluate("z = 1", [], []) is None
        assert await E(facet).evaluate("import trio\nawait trio.sleep(0)\n'awaited'", [], []) == "awaited"
        assert await E(facet).evaluate("await E(far_one).note(3)", ["far_one"], [Recorder()]) == "noted 3"


async def test_evaluate_calls_back_a_far_object_endowed_by_the_caller(tmp_path, launcher):
    recorder = Recorder()
    async with open_worker(spec_for(tmp_path, "callback"), launcher) as worker:
        result = await E(worker.facet).evaluate(
            "answer = await E(recorder).note(n)\n[answer, Tagged('t', 1).tag]", ["recorder", "n"], [recorder, 7]
        )
    assert result == ["noted 7", "t"]
    assert recorder.seen == [7]


async def test_evaluate_returns_remotables_by_reference(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "remotable"), launcher) as worker:
        counter = await E(worker.facet).evaluate(
            "@far('Counter')\nclass Counter:\n    n = 0\n    def incr(self):\n        self.n += 1\n        return self.n\nCounter()",
            [],
            [],
        )
        assert await E(counter).incr() == 1
        assert await E(counter).incr() == 2


async def test_a_code_error_rejects_with_remote_error_name_and_message(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "errors"), launcher) as worker:
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).evaluate("raise KeyError('missing thing')", [], [])
        assert info.value.name == "KeyError"
        assert "missing thing" in info.value.message
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).evaluate("1 +", [], [])
        assert info.value.name == "SyntaxError"
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).evaluate("1", ["not a name"], [1])
        assert info.value.name == "ValueError"
        # The worker survives its code's errors.
        assert await E(worker.facet).evaluate("'still here'", [], []) == "still here"


async def test_print_goes_to_the_log_not_the_protocol(tmp_path, launcher):
    spec = spec_for(tmp_path, "printer")
    async with open_worker(spec, launcher) as worker:
        assert await E(worker.facet).evaluate("print('hello log')\n5", [], []) == 5
    assert "hello log" in spec.log_path.read_text()


# -- make_unconfined and make_bundle -------------------------------------------------------


async def test_make_unconfined_imports_a_module_file(tmp_path, launcher):
    module = tmp_path / "service.py"
    module.write_text(
        "from ocapd.sdk import far\n"
        "@far('Service')\n"
        "class Service:\n"
        "    def __init__(self, powers, context): self.powers, self.context = powers, context\n"
        "    async def greet(self, who): return f'{self.context[\"greeting\"]} {who}'\n"
        "async def make(powers, context):\n"
        "    return Service(powers, context)\n"
    )
    async with open_worker(spec_for(tmp_path, "unconfined", "HOST"), launcher) as worker:
        service = await E(worker.facet).make_unconfined(str(module), None, {"greeting": "hello"})
        assert await E(service).greet("world") == "hello world"
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).make_unconfined("json", None, None)
        assert info.value.name == "TypeError" and "make" in info.value.message


async def test_make_bundle_runs_the_entry_module(tmp_path, launcher):
    bundle = make_zip(
        {
            "bundle.json": json.dumps({"entry": "app"}),
            "app.py": "from .helpers import double\n"
            "from ocapd.sdk import Far\n"
            "def make(powers, context):\n"
            "    return Far('App', double=double, context=lambda: context)\n",
            "helpers.py": "def double(x):\n    return 2 * x\n",
        }
    )
    spec = spec_for(tmp_path, "bundle")
    async with open_worker(spec, launcher) as worker:
        app = await E(worker.facet).make_bundle(bundle, None, {"k": "v"})
        assert await E(app).double(21) == 42
        assert await E(app).context() == {"k": "v"}
        # The same bundle again reuses its unpacked folder.
        again = await E(worker.facet).make_bundle(bundle, None, None)
        assert await E(again).double(1) == 2
        # Unpacked in its scratch folder (a tmpfs of its own at NONE), read-only.
        unpacked, mode = await E(worker.facet).evaluate(
            "import os, stat\nfolders = os.listdir('bundles')\n[folders, stat.S_IMODE(os.stat(f'bundles/{folders[0]}/app.py').st_mode)]",
            [],
            [],
        )
    assert len(unpacked) == 1
    assert mode == 0o444


async def test_make_bundle_defaults_to_main_py(tmp_path, launcher):
    bundle = make_zip({"main.py": "def make(powers, context):\n    return ['made', context]\n"})
    async with open_worker(spec_for(tmp_path, "main-bundle"), launcher) as worker:
        assert await E(worker.facet).make_bundle(bundle, None, 3) == ["made", 3]


@pytest.mark.parametrize(
    "name, bundle, expected",
    [
        ("slip", make_zip({"main.py": "", "../evil.py": "x"}), "'..' is not allowed"),
        ("absolute", make_zip({"main.py": "", "/etc/evil.py": "x"}), "absolute paths are not allowed"),
        ("symlink", make_zip({"main.py": ""}, symlinks={"link.py": "/etc/passwd"}), "symlinks are not allowed"),
        ("many", make_zip({f"f{i}.py": "" for i in range(MAX_MEMBERS + 1)}), f"{MAX_MEMBERS + 1} members: at most {MAX_MEMBERS} are allowed"),
        ("notzip", b"this is not a zip", "not a readable zip archive"),
        ("noentry", make_zip({"other.py": ""}), "no entry module 'main'"),
        ("badentry", make_zip({"bundle.json": '{"entry": "../x"}', "main.py": ""}), "'entry' must be a module name"),
        # Within the per-file size, so only the ratio, counted while inflating, stops it.
        ("bomb", make_zip({"main.py": "", "big.txt": b"\0" * (4 * 1024 * 1024)}), "compression ratio above"),
        ("large", make_zip({"main.py": "", "big.bin": os.urandom(MAX_FILE_SIZE + 1)}), "larger than"),
    ],
)
async def test_unsafe_bundles_are_refused_with_clear_errors(tmp_path, launcher, name, bundle, expected):
    spec = spec_for(tmp_path, f"bad-{name}")
    async with open_worker(spec, launcher) as worker:
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).make_bundle(bundle, None, None)
    assert info.value.name == "BundleError"
    assert expected in info.value.message
    assert not (tmp_path / "evil.py").exists() and not (spec.workdir / "evil.py").exists()
    bundles = spec.workdir / "bundles"
    assert not bundles.exists() or not any(bundles.iterdir())


# -- confinement ---------------------------------------------------------------------------------

CONNECT = "import socket\ns = socket.create_connection(('127.0.0.1', port), timeout=5)\ns.close()\n'connected'"
CONNECT_UNIX = "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(path)\ns.close()\n'connected'"


async def _listeners(tmp_path: Path) -> tuple[trio.SocketListener, int, trio.socket.SocketType, str]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    unix_path = str(tmp_path / "daemon.sock")
    unix = trio.socket.socket(socket.AF_UNIX)
    await unix.bind(unix_path)
    unix.listen()
    return listener, port, unix, unix_path


async def test_a_none_worker_has_no_network(tmp_path, launcher):
    if reason := _netns_reason():
        pytest.skip(reason)
    listener, port, unix, unix_path = await _listeners(tmp_path)
    async with open_worker(spec_for(tmp_path, "offline", "NONE"), launcher) as worker:
        assert worker.confinement["network"]["applied"] is True
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).evaluate(CONNECT, ["port"], [port])
        assert info.value.name in ("OSError", "PermissionError", "ConnectionRefusedError", "TimeoutError")
        if worker.confinement["seccomp"]["applied"]:
            with pytest.raises(RemoteError) as info:
                await E(worker.facet).evaluate(CONNECT_UNIX, ["path"], [unix_path])
            assert info.value.name == "PermissionError"
    await listener.aclose()
    unix.close()


#: What a fork bomb would do first: make a process. Each way must fail; threads must still work.
SPAWN = """
import os, subprocess, threading
refused = []
for name, make in [
    ("fork", os.fork),
    ("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {})),
    ("subprocess", lambda: subprocess.run(["/bin/true"])),
]:
    try:
        pid = make()
    except OSError as e:
        refused.append((name, type(e).__name__))
    else:
        if pid == 0:
            os._exit(0)  # a child that got out: leave at once, the assertion below fails
        refused.append((name, "started"))
box = []
thread = threading.Thread(target=lambda: box.append("thread ran"))
thread.start()
thread.join()
[refused, box]
"""


@pytest.mark.parametrize("level", ["NONE", "ENDO"])
async def test_a_confined_worker_cannot_start_processes_but_can_start_threads(tmp_path, launcher, level):
    async with open_worker(spec_for(tmp_path, f"no-fork-{level.lower()}", level), launcher) as worker:
        if not worker.confinement["seccomp"]["applied"]:
            pytest.skip(f"seccomp not applied here: {worker.confinement['seccomp'].get('reason')}")
        refused, box = await E(worker.facet).evaluate(SPAWN, [], [])
        assert [name for name, _ in refused] == ["fork", "posix_spawn", "subprocess"]
        assert all(outcome == "PermissionError" for _, outcome in refused), refused
        assert box == ["thread ran"]
        assert await E(worker.facet).evaluate("1 + 1", [], []) == 2  # and it is still well


async def test_a_host_worker_may_start_processes(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "may-fork", "HOST"), launcher) as worker:
        refused, box = await E(worker.facet).evaluate(SPAWN, [], [])
        assert all(outcome == "started" for _, outcome in refused), refused
        assert box == ["thread ran"]


async def test_a_none_worker_cannot_read_outside_its_folders(tmp_path, launcher):
    if reason := _landlock_reason():
        pytest.skip(reason)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    async with open_worker(spec_for(tmp_path, "no-files", "NONE"), launcher) as worker:
        assert worker.confinement["landlock"]["applied"] is True
        with pytest.raises(RemoteError) as info:
            await E(worker.facet).evaluate("open(p).read()", ["p"], [str(secret)])
        assert info.value.name == "PermissionError"
        with pytest.raises(RemoteError):
            await E(worker.facet).evaluate("open('/etc/hostname').read()", [], [])
        # Its own workdir is read-write, and the standard library still imports.
        written = await E(worker.facet).evaluate(
            "import sqlite3, decimal\nopen('scratch.txt', 'w').write('ok')\nopen('scratch.txt').read()", [], []
        )
        assert written == "ok"


async def test_a_host_worker_has_network_and_files(tmp_path, launcher):
    listener, port, unix, unix_path = await _listeners(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    async with open_worker(spec_for(tmp_path, "trusted", "HOST"), launcher) as worker:
        assert await E(worker.facet).evaluate(CONNECT, ["port"], [port]) == "connected"
        assert await E(worker.facet).evaluate(CONNECT_UNIX, ["path"], [unix_path]) == "connected"
        assert await E(worker.facet).evaluate("open(p).read()", ["p"], [str(secret)]) == "top secret"
    await listener.aclose()
    unix.close()


async def test_every_worker_gets_a_scrubbed_environment_and_private_workdir(tmp_path, launcher, monkeypatch):
    monkeypatch.setenv("OCAPD_TEST_SECRET", "do not leak")
    for level in ("NONE", "HOST"):
        spec = spec_for(tmp_path, f"env-{level}", level)
        async with open_worker(spec, launcher) as worker:
            env, cwd = await E(worker.facet).evaluate("import os\n[dict(os.environ), os.getcwd()]", [], [])
            # Only 0/1/2 and the two protocol pipes survive from the parent.
            assert len(worker.confinement["fds"]) == 5
            if level == "HOST":  # NONE may not read /proc; HOST shows what its fds are
                targets = await E(worker.facet).evaluate(
                    "import os\nfds = os.listdir('/proc/self/fd')\n"
                    "[os.readlink(f'/proc/self/fd/{f}') for f in fds if os.path.exists(f'/proc/self/fd/{f}')]",
                    [],
                    [],
                )
                files = {t for t in targets if t.startswith("/") and not t.startswith("/proc/")}
                assert files <= {"/dev/null", str(spec.log_path)}
        assert "OCAPD_TEST_SECRET" not in env
        assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
        assert env["HOME"] == str(spec.workdir.resolve())
        assert cwd == str(spec.workdir.resolve())
        assert stat.S_IMODE(spec.workdir.stat().st_mode) == 0o700


async def test_info_reports_exactly_what_was_applied(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "info-none", "NONE"), launcher) as worker:
        info = await E(worker.facet).info()
        assert info["pid"] == worker.pid
        assert info["python"].count(".") == 2
        applied = info["confinement"]
        assert applied == worker.confinement
        assert applied["level"] == "NONE"
        assert applied["launch"] == "fork-server"
        assert applied["network"]["applied"] is bool(PROBE["netns"]["supported"])
        assert applied["landlock"]["applied"] is bool(PROBE["landlock"].get("enforced"))
        assert applied["seccomp"]["applied"] is bool(PROBE["seccomp"]["supported"])
        assert applied["rlimits"]["core"] == 0
        if applied["landlock"]["applied"]:
            assert applied["landlock"]["read_write"] == [str(worker.spec.workdir.resolve())]
        # The claims hold: the worker cannot raise its own limits back.
        with pytest.raises(RemoteError):
            await E(worker.facet).evaluate("import resource\nresource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))", [], [])
    async with open_worker(spec_for(tmp_path, "info-host", "HOST"), launcher) as worker:
        applied = worker.confinement
        for step in ("network", "landlock", "seccomp", "capabilities"):
            assert applied[step]["applied"] is False
        assert applied["rlimits"]["core"] == 0


def test_probe_reports_the_machine():
    assert set(PROBE) >= {"platform", "netns", "landlock", "seccomp", "rlimits", "capabilities"}
    assert isinstance(PROBE["netns"]["supported"], bool)
    assert "abi" in PROBE["landlock"]


# -- lifecycle -------------------------------------------------------------------------------


async def test_terminating_a_just_started_worker_never_raises(tmp_path, launcher):
    for i in range(50):
        async with open_worker(spec_for(tmp_path, f"quick{i % 5}"), launcher) as worker:
            await worker.terminate()
            assert await worker.wait_exited() == 0
            await worker.terminate()  # again, on a dead worker: still no error
        # Cancelled while starting: leaves nothing behind, raises nothing.
        with trio.move_on_after(i * 0.0005):
            async with open_worker(spec_for(tmp_path, f"cancelled{i % 5}"), launcher) as worker:
                await worker.terminate(grace=0)


async def test_a_killed_worker_breaks_pending_promises_and_the_next_one_starts(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "victim"), launcher) as worker:
        pending = E(worker.facet).evaluate("import trio\nawait trio.sleep_forever()", [], [])
        assert await E(worker.facet).evaluate("'alive'", [], []) == "alive"
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(SessionAborted) as info:
            await pending
        assert info.value.code == "disconnected"
        assert await worker.wait_exited() == -signal.SIGKILL
        await worker.terminate()  # already dead: no error
    async with open_worker(spec_for(tmp_path, "next"), launcher) as worker:
        assert await E(worker.facet).evaluate("2 * 21", [], []) == 42
        assert worker.launched_by == "fork-server"


async def test_terminate_kills_a_worker_stuck_in_a_loop(tmp_path, launcher):
    async with open_worker(spec_for(tmp_path, "stuck"), launcher) as worker:
        recorder = Recorder()
        E.send_only(worker.facet).evaluate("await E(r).note('looping')\nwhile True: pass", ["r"], [recorder])
        while not recorder.seen:
            await trio.sleep(0.01)
        await trio.sleep(0.1)  # let it enter the loop (if it has not, terminate() ends it cleanly)
        pending = E(worker.facet).info()  # queued behind the loop: never answered
        await worker.terminate(grace=0.05)
        assert await worker.wait_exited() in (0, -signal.SIGKILL)
        with pytest.raises(SessionAborted):
            await pending


async def test_without_fork_server_workers_start_as_subprocesses(tmp_path):
    async with Launcher(use_fork_server=False) as launcher:
        assert launcher.fork_server_pid is None
        async with open_worker(spec_for(tmp_path, "plain"), launcher) as worker:
            assert worker.launched_by == "subprocess"
            assert worker.confinement["launch"] == "subprocess"
            assert await E(worker.facet).evaluate("1 + 1", [], []) == 2
            await worker.terminate()
            assert await worker.wait_exited() == 0


async def test_a_dead_fork_server_is_restarted_by_the_next_launch(tmp_path, launcher):
    first = launcher.fork_server_pid
    os.kill(first, signal.SIGKILL)
    with trio.fail_after(10):
        while launcher.fork_server_pid is not None:
            await trio.sleep(0.01)
    async with open_worker(spec_for(tmp_path, "restarted"), launcher) as worker:
        assert await E(worker.facet).evaluate("1 + 1", [], []) == 2
        assert worker.launched_by == "fork-server"
    assert launcher.fork_server_pid not in (None, first)


async def test_workers_die_with_their_fork_server_and_the_daemon_sees_it(tmp_path, launcher):
    # Workers carry PR_SET_PDEATHSIG for the fork server (through confinement
    # too), so no process outlives a daemon killed with -9; the price is that
    # a fork server killed by hand takes its workers with it, visibly.
    async with open_worker(spec_for(tmp_path, "orphan"), launcher) as worker:
        os.kill(launcher.fork_server_pid, signal.SIGKILL)
        with trio.fail_after(10):
            await worker.wait_exited()
        assert worker.connection.aborted is not None
        with pytest.raises(SessionAborted):
            await E(worker.facet).evaluate("1", [], [])


class PassingThreads:
    """Stands in for ``trio.to_thread.run_sync``: each call gets a thread of its own that ends on ``end()``.

    Trio's own cached threads end after ten idle seconds; this makes that
    moment come when the test says.
    """

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self._release = threading.Event()

    async def run_sync(self, fn, *args, **_options):
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        outcome: dict[str, object] = {}

        def body() -> None:
            try:
                outcome["value"] = fn(*args)
            except BaseException as e:
                outcome["error"] = e
            token.run_sync_soon(done.set)
            self._release.wait()

        thread = threading.Thread(target=body, daemon=True)
        self.threads.append(thread)
        thread.start()
        await done.wait()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]

    async def end(self) -> None:
        self._release.set()
        for thread in self.threads:
            thread.join()
        # threading forgets a thread a moment before the kernel task is gone
        # (and the parent-death signal to what it forked goes with the task).
        native = [t.native_id for t in self.threads]
        with trio.fail_after(10):
            while any(os.path.exists(f"/proc/self/task/{tid}") for tid in native):
                await trio.sleep(0.01)


@pytest.mark.parametrize("use_fork_server", [True, False], ids=["fork-server", "subprocess"])
async def test_workers_outlive_the_thread_that_started_them(tmp_path, monkeypatch, use_fork_server):
    # The kernel sends PR_SET_PDEATHSIG when the *thread* that forked a child
    # ends. Trio runs blocking calls in cached threads that end after ten idle
    # seconds, so a fork server or worker forked from one died, with every
    # live object in it, while the daemon ran on.
    threads = PassingThreads()
    monkeypatch.setattr(trio.to_thread, "run_sync", threads.run_sync)
    async with Launcher(use_fork_server=use_fork_server) as launcher:
        async with open_worker(spec_for(tmp_path, "long-lived"), launcher) as worker:
            box = await E(worker.facet).evaluate("Far('Box', get=lambda: 42)", [], [])
            await threads.end()
            with trio.move_on_after(0.5):  # a killed fork server or worker is gone well within this
                await worker.wait_exited()
            assert not worker.exited
            assert await E(box).get() == 42
            if use_fork_server:
                assert launcher.fork_server_pid is not None


async def test_when_nothing_can_start_open_worker_raises_worker_start_error(tmp_path):
    # /bin/false as the interpreter: the fork server cannot start (logged, not
    # raised) and the fallback subprocess exits at once.
    async with Launcher(python="/bin/false") as launcher:
        assert launcher.fork_server_pid is None
        with pytest.raises(WorkerStartError, match="did not start"):
            async with open_worker(spec_for(tmp_path, "doomed"), launcher):
                pass


def test_the_seccomp_policy_is_compiled_by_libseccomp_with_every_rule():
    from ocapd.workers import syscalls

    ok, why = syscalls.available()
    if not ok:
        pytest.skip(why)
    pfc = syscalls.export_pfc()
    for rule in syscalls.POLICY:
        assert f'filter for syscall "{rule.syscall}"' in pfc, rule.syscall
    assert "action ERRNO(38);" in pfc  # clone3: ENOSYS, so the C library falls back to clone
    assert "# invalid architecture action\naction KILL;" in pfc  # i386 and x32 calls end the worker
