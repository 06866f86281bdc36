"""The fork server: a template process that forks ready-to-run workers.

``python -m workers.forkserver FD`` is started once by ``Launcher.start()``.
It imports trio, msgpack, captp and the worker code (the ~100 ms a fresh
interpreter would spend on every worker), freezes the heap so forked
children share it copy-on-write, and then serves requests in plain blocking
code — no trio runs in the template, so forking is safe.

Wire (a SOCK_SEQPACKET socket pair with the daemon, inherited as ``FD``):

- template -> daemon, once: ``{"ready": true, "pid": N}``;
- daemon -> template, per worker: ``{"spec": {...}}`` with four fds attached
  (SCM_RIGHTS): the worker's stdin, stdout, stderr and a *control* socket
  (SOCK_SEQPACKET) private to that worker;
- template -> daemon on the control socket: ``{"pid": P}`` with a pidfd for
  the child attached (so the daemon signals exactly that process, never a
  recycled pid), or ``{"error": "..."}``; later ``{"status": S}`` when the
  template has reaped the child (S as in ``Popen.returncode``), then EOF.

The template reaps every child (no zombies) and exits when the daemon's end
of the socket closes. In the child, the three fds are moved onto 0/1/2 and
``workers.worker.serve`` takes over (confinement, then the CapTP session).
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

# Everything a worker needs, imported once here and shared by every child.
import msgpack  # noqa: F401
import trio  # noqa: F401

import ocapd.captp  # noqa: F401
from ocapd.workers import bundle, confine, syscalls, worker  # noqa: F401

#: Fds attached to a request: stdin, stdout, stderr, control socket.
REQUEST_FDS = 4
MAX_REQUEST = 64 * 1024


def _send_json(sock: socket.socket, obj: Any, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


class ForkServer:
    def __init__(self, sock: socket.socket) -> None:
        self.pid = os.getpid()  # a forked worker's parent
        self.sock = sock
        self.controls: dict[int, socket.socket] = {}  # child pid -> its control socket
        # Confined workers are forked as pid 1 of a PID namespace of their own.
        self.pid_namespaces = confine.PidNamespaceForChildren()
        try:  # compiled once here; each worker only installs it
            syscalls.compile_policy()
        except Exception:  # each worker then reports why its seccomp step failed
            pass

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        gc.freeze()  # everything imported so far stays shared with the children
        _send_json(
            self.sock,
            {"ready": True, "pid": os.getpid(), "pid_namespace_per_fork": self.pid_namespaces.available or self.pid_namespaces.reason},
        )
        while True:
            for key, _events in selector.select():
                if key.fileobj is self.sock:
                    if not self._serve_one():
                        return
                else:
                    try:
                        while os.read(wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
            self._reap()

    def _serve_one(self) -> bool:
        """Handle one request; False when the daemon has gone."""
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_REQUEST, REQUEST_FDS)
        except OSError:
            return False
        if not msg and not fds:
            return False
        if len(fds) != REQUEST_FDS:
            for fd in fds:
                os.close(fd)
            return True
        stdin, stdout, stderr, control_fd = fds
        control = socket.socket(fileno=control_fd)
        try:
            spec = json.loads(msg)["spec"]
            spec["launch"] = "fork-server"
            in_new_namespace = spec.get("level") in confine.CONFINED_LEVELS and self.pid_namespaces.before_fork()
            pid = -1
            try:
                pid = os.fork()
            finally:
                if in_new_namespace and pid != 0:
                    self.pid_namespaces.after_fork()
        except Exception as e:  # bad request or fork refused: tell the requester
            try:
                _send_json(control, {"error": f"{type(e).__name__}: {e}"})
            except OSError:
                pass
            control.close()
            for fd in (stdin, stdout, stderr):
                os.close(fd)
            return True
        if pid == 0:
            self._become_worker(spec, stdin, stdout, stderr)
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        try:
            _send_json(control, {"pid": pid}, [pidfd] if pidfd >= 0 else None)
            self.controls[pid] = control
        except OSError:  # the requester went away; the child will see EOF and exit
            control.close()
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            control = self.controls.pop(pid, None)
            if control is not None:
                try:
                    _send_json(control, {"status": os.waitstatus_to_exitcode(status)})
                except OSError:
                    pass
                control.close()

    def _become_worker(self, spec: dict[str, Any], stdin: int, stdout: int, stderr: int) -> NoReturn:
        try:
            confine.die_with_parent(self.pid)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # The template's sockets must not be closed by a finalizer later,
            # when their fd numbers may belong to the worker: detach them.
            self.sock.detach()
            for control in self.controls.values():
                control.detach()
            self.controls.clear()
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            worker.serve(spec)  # closes every other fd, confines, serves; never returns
        finally:
            os._exit(70)


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m workers.forkserver FD", file=sys.stderr)
        raise SystemExit(2)
    confine.die_with_parent(os.getppid())  # the daemon
    sock = socket.socket(fileno=int(sys.argv[1]))
    ForkServer(sock).run()


if __name__ == "__main__":
    main()
