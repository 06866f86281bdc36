"""The worker process: runs code handed to it and speaks CapTP over its pipes.

``serve(spec)`` is the whole life of a worker. It is entered with fd 0
reading CapTP frames from the daemon, fd 1 writing frames to it and fd 2
appending to the worker's log. It first moves the two protocol pipes out of
the way (fd 0 becomes /dev/null, fd 1 a copy of the log), so a stray
``print()`` in untrusted code lands in the log instead of corrupting the
frame stream; then confines the process for its power level
(``workers.confine``), and serves a ``WorkerFacet`` as the CapTP bootstrap
until the daemon closes the connection or calls ``terminate()``.

What evaluated code prints (``sys.stdout`` and ``sys.stderr``, replaced by
``_RoutedOutput``) always goes to the log; when the evaluation was handed an
``output`` remotable it is also sent there, as ``write(stream, text)`` calls.
Which evaluation a ``print()`` belongs to is a context variable, so
concurrent evaluations in one worker keep their output apart (tasks an
evaluation starts inherit it; other threads only reach the log).

Two ways in, same function: the fork server's child (``workers.forkserver``)
and the plain subprocess ``python -m workers --spec JSON``.
"""

from __future__ import annotations

import ast
import errno
import importlib
import importlib.util
import inspect
import io
import keyword
import logging
import os
import platform
import sys
import threading
import types
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

import trio

from ocapd.captp import Connection, E, Far, RemoteError, Tagged, far, open_stream_connection

# syscalls: now, while the file system is open (its import finds libseccomp);
# confine applies its policy after Landlock has closed it.
from . import confine, syscalls  # noqa: F401
from .bundle import BundleError, bundle_digest, extract_bundle
from .limits import format_bytes

__all__ = ["WorkerFacet", "serve", "evaluate_source"]

log = logging.getLogger("ocapd.worker")

#: Output of one evaluation sent to its caller, at most; the rest goes only to the log.
MAX_RELAYED_OUTPUT = 1024 * 1024
#: Output is sent in chunks of about this size (or at each newline, or when the evaluation ends).
OUTPUT_CHUNK = 4096

_COMPILE_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
#: Names every evaluation sees besides its endowments.
_PRELUDE = {"E": E, "Far": Far, "far": far, "Tagged": Tagged}


async def evaluate_source(source: str, namespace: dict[str, Any]) -> Any:
    """Run ``source`` in ``namespace``: an expression, or a block whose last statement,
    if it is an expression, gives the result (like a notebook cell). Top-level
    ``await`` is allowed."""
    tree = ast.parse(source, "<evaluate>", "exec")
    body = tree.body
    last = body.pop() if body and isinstance(body[-1], ast.Expr) else None
    assert last is None or isinstance(last, ast.Expr)
    if body:
        code = compile(ast.Module(body=body, type_ignores=[]), "<evaluate>", "exec", flags=_COMPILE_FLAGS)
        result = eval(code, namespace)  # noqa: S307 - running handed-in code is this process's job
        if code.co_flags & inspect.CO_COROUTINE:
            await result
    if last is None:
        return None
    code = compile(ast.Expression(body=last.value), "<evaluate>", "eval", flags=_COMPILE_FLAGS)
    result = eval(code, namespace)  # noqa: S307
    if code.co_flags & inspect.CO_COROUTINE:
        result = await result
    return result


class _EvaluationOutput:
    """What one evaluation prints, on its way to the caller's ``output`` remotable."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self._pending: list[tuple[str, str]] = []
        self._pending_size = 0
        self._sent = 0
        self._truncated = False

    def add(self, stream: str, text: str) -> None:
        if self._truncated or not text:
            return
        if self._sent + self._pending_size + len(text) > MAX_RELAYED_OUTPUT:
            text = text[: max(0, MAX_RELAYED_OUTPUT - self._sent - self._pending_size)]
            self._truncated = True
        if self._pending and self._pending[-1][0] == stream:
            self._pending[-1] = (stream, self._pending[-1][1] + text)
        else:
            self._pending.append((stream, text))
        self._pending_size += len(text)
        if self._truncated:
            self._pending.append(("stderr", "\n[ocapd: output truncated; the rest is in the worker's log]\n"))
            self.flush()
        elif "\n" in text or self._pending_size >= OUTPUT_CHUNK:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._sent += self._pending_size
        self._pending_size = 0
        for stream, text in pending:
            try:
                E.send_only(self._sink).write(stream, text)
            except Exception:  # the daemon is gone: the log still has it
                return


#: The evaluation the running code belongs to (None: not an evaluation with a caller listening).
_CURRENT_OUTPUT: ContextVar[_EvaluationOutput | None] = ContextVar("ocapd_output", default=None)
#: The thread running trio: only it may send on the connection.
_TRIO_THREAD: list[int] = []


class _RoutedOutput(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` of a worker: the log, plus the current evaluation's caller."""

    def __init__(self, stream: str, log_stream: Any) -> None:
        self._stream = stream
        self._log = log_stream

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self._log.fileno())

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._log.write(text)
        output = _CURRENT_OUTPUT.get()
        if output is not None and _TRIO_THREAD and threading.get_ident() == _TRIO_THREAD[0]:
            output.add(self._stream, text)
        return len(text)

    def flush(self) -> None:
        self._log.flush()


def _exit_error(e: SystemExit, who: str) -> RemoteError:
    code = "" if e.code is None else repr(e.code)
    return RemoteError("SystemExit", f"{who} called sys.exit({code})")


async def _guarded(work: Any, output: Any = None, who: str = "the evaluated code") -> Any:
    """Run handed-in code: its ``sys.exit()`` becomes an error for the caller (the worker
    lives on), and what it prints goes to ``output`` (if given) as well as the log."""
    relay = _EvaluationOutput(output) if output is not None else None
    token = _CURRENT_OUTPUT.set(relay)
    try:
        return await work
    except SystemExit as e:
        raise _exit_error(e, who) from None
    finally:
        _CURRENT_OUTPUT.reset(token)
        if relay is not None:
            relay.flush()  # before the answer, so the caller prints it first


async def _call_make(module: types.ModuleType, where: str, powers: Any, context: Any) -> Any:
    make = getattr(module, "make", None)
    if not callable(make):
        raise TypeError(f"{where} has no make(powers, context) function")
    result = make(powers, context)
    if inspect.isawaitable(result):
        result = await result
    return result


@far("WorkerFacet")
class WorkerFacet:
    """What the daemon holds of a worker: run code here, report, end."""

    def __init__(self, spec: dict[str, Any], confinement: dict[str, Any]) -> None:
        self._spec = spec
        self._confinement = confinement
        self._connection: Connection | None = None
        self._unconfined_count = 0

    async def evaluate(self, source: str, names: list[str], values: list[Any], output: Any = None) -> Any:
        """Evaluate ``source`` with ``values`` bound to ``names``; return its value.

        ``output``, if given, is a remotable with ``write(stream, text)``: what
        the code prints to ``stdout``/``stderr`` is sent there (and to the log).
        """
        if not isinstance(source, str):
            raise TypeError("source must be a str")
        if not isinstance(names, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise TypeError("names and values must be lists")
        if len(names) != len(values):
            raise ValueError(f"{len(names)} names but {len(values)} values")
        namespace: dict[str, Any] = {"__name__": "__evaluate__", **_PRELUDE}
        for name, value in zip(names, values, strict=True):
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{name!r} is not a valid name for an endowment")
            namespace[name] = value
        try:
            return await _guarded(evaluate_source(source, namespace), output)
        except (RuntimeError, OSError) as e:
            raise self._explained(e) from None

    def _explained(self, error: BaseException) -> BaseException:
        """The same error, saying which of this worker's limits it hit, if one did."""
        limits = self._spec.get("limits") or {}
        if isinstance(error, RuntimeError) and "can't start new thread" in str(error) and limits.get("tasks"):
            return RuntimeError(f"can't start new thread: this worker reached its task limit of {limits['tasks']} (threads count as tasks)")
        if isinstance(error, OSError) and error.errno == errno.ENOSPC and limits.get("scratch_bytes"):
            return OSError(errno.ENOSPC, f"No space left on device: this worker's scratch limit of {format_bytes(limits['scratch_bytes'])} is reached")
        return error

    async def make_unconfined(self, specifier: str, powers: Any, context: Any) -> Any:
        """Import a module (file path or dotted name) and return ``module.make(powers, context)``."""
        if not isinstance(specifier, str) or not specifier:
            raise TypeError("specifier must be a module name or a file path")
        path = specifier.removeprefix("file://")
        if path.endswith(".py") or os.sep in path:
            file = Path(path)
            if not file.is_absolute():
                file = Path(self._spec["workdir"]) / file
            return await _guarded(self._load_and_make(file, specifier, powers, context), who="the module")
        return await _guarded(self._import_and_make(specifier, powers, context), who="the module")

    async def _load_and_make(self, file: Path, specifier: str, powers: Any, context: Any) -> Any:
        self._unconfined_count += 1
        name = f"_ocapd_unconfined_{self._unconfined_count}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load a module from {str(file)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return await _call_make(module, specifier, powers, context)

    async def _import_and_make(self, specifier: str, powers: Any, context: Any) -> Any:
        module = importlib.import_module(specifier)
        return await _call_make(module, specifier, powers, context)

    async def make_bundle(self, bundle: bytes, powers: Any, context: Any) -> Any:
        """Unpack a zip bundle (checked) and return its entry module's ``make(powers, context)``."""
        if not isinstance(bundle, (bytes, bytearray)):
            raise BundleError(f"a bundle is bytes (a zip), not {type(bundle).__name__}")
        digest = bundle_digest(bundle)
        # A bundle the daemon already unpacked into the read-only bundle folder
        # is used from there; otherwise it is unpacked into this worker's
        # private folder.
        bundle_dir = self._spec.get("bundle_dir")
        folder = Path(bundle_dir) / digest if bundle_dir else None
        if folder is None or not folder.is_dir():
            folder = Path(self._spec["workdir"]) / "bundles" / digest
        entry = extract_bundle(bytes(bundle), folder)
        package = f"_ocapd_bundle_{digest[:24]}"
        if package not in sys.modules:
            pkg = types.ModuleType(package)
            pkg.__path__ = [str(folder)]
            pkg.__package__ = package
            sys.modules[package] = pkg
        return await _guarded(self._import_bundle_entry(f"{package}.{entry}", f"bundle entry {entry!r}", powers, context), who="the bundle")

    async def _import_bundle_entry(self, module_name: str, where: str, powers: Any, context: Any) -> Any:
        module = importlib.import_module(module_name)
        return await _call_make(module, where, powers, context)

    def terminate(self) -> None:
        """End this worker promptly: the connection closes and the process exits 0."""
        log.info("terminate requested")
        if self._connection is not None:
            trio.lowlevel.current_trio_token().run_sync_soon(self._connection.close)

    def info(self) -> dict[str, Any]:
        """pid, Python version and the confinement actually applied."""
        return {
            "pid": self._confinement.get("pid", os.getpid()),  # as the daemon sees it, not 1
            "name": self._spec.get("name"),
            "python": platform.python_version(),
            "implementation": sys.implementation.name,
            "confinement": self._confinement,
        }


def _take_protocol_fds() -> tuple[int, int]:
    """Move the protocol pipes off fds 0/1; fd 0 becomes /dev/null and fd 1 the log."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


async def _run(spec: dict[str, Any], confinement: dict[str, Any], proto_in: int, proto_out: int) -> None:
    facet = WorkerFacet(spec, confinement)
    stream = trio.StapledStream(trio.lowlevel.FdStream(proto_out), trio.lowlevel.FdStream(proto_in))
    async with open_stream_connection(stream, facet, name=f"worker:{spec.get('name')}") as conn:
        facet._connection = conn
        reason = await conn.wait_closed()
        log.info("session ended: %s", reason.reason)


def serve(spec: dict[str, Any]) -> NoReturn:
    """The worker's life; never returns (exits 0 when the session ends, 1 on a crash)."""
    code = 1
    try:
        proto_in, proto_out = _take_protocol_fds()
        log_stream = sys.stderr
        # print() goes to the log (and to an evaluation's caller), never onto the frame stream.
        sys.stdout = _RoutedOutput("stdout", log_stream)
        sys.stderr = _RoutedOutput("stderr", log_stream)
        _TRIO_THREAD[:] = [threading.get_ident()]
        logging.basicConfig(
            stream=log_stream,
            level=logging.INFO,
            format=f"%(asctime)s worker[{spec.get('name')}:{os.getpid()}] %(levelname)s %(message)s",
            force=True,
        )
        confinement = confine.apply(
            spec["level"],
            spec["workdir"],
            spec.get("bundle_dir"),
            keep_fds=(proto_in, proto_out),
            limits=spec.get("limits"),
            cgroup=spec.get("cgroup"),
        )
        confinement["launch"] = spec.get("launch", "subprocess")
        log.info("confinement: %s", confinement)
        trio.run(_run, spec, confinement, proto_in, proto_out)
        code = 0
    except BaseException:
        log.exception("worker crashed")
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)
