"""A command costs little more than starting Python: the blocking CLI path imports
none of the daemon's machinery (DESIGN §7: a CLI command ≤ 60 ms wall).

Deterministic, not a timing: a fresh Python runs the command line's ``main``
as the ``ocapd`` script does, and lists ``sys.modules`` as it exits. With no
daemon to talk to, the command goes as far as a command goes before its
first frame (parsing, the socket path, the protocol, the client's connect)
and then fails the way a command without a daemon does. msgpack is allowed:
the frames are msgpack. (``-X importtime`` would not do: it does not see
``importlib.import_module``, which is how a command's module is imported.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: What a command must never pay for: the async runtime, the models, the
#: database, the web stack, and the daemon's, workers' and gateway's modules.
FORBIDDEN = (
    "trio",
    "outcome",
    "sniffio",
    "attr",
    "attrs",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "sqlite3",
    "asyncio",
    "hypercorn",
    "quart",
    "quart_trio",
    "werkzeug",
    "httpx",
    "httpcore",
    "cryptography",
    "pyseccomp",
    "mcp",
    "mcp_types",
    "ocapd.workers",
    "ocapd.gateway",
    "ocapd.chat_host",
    "ocapd.captp.connection",
    "ocapd.captp.transport",
    # dataclasses imports inspect (and with it ast, dis, tokenize): ~5-10 ms of a start.
    "dataclasses",
    "inspect",
    # the protocol logs only when something fails (captp/lazylog.py): ~5 ms of a start.
    "logging",
)
#: Of the daemon, a command reads where its socket is, nothing else.
DAEMON_MODULES_ALLOWED = {"ocapd.daemon", "ocapd.daemon.paths"}

#: Commands that talk to the daemon through the blocking client.
COMMANDS = (
    ["list"], ["ping"], ["show", "x"], ["list", "--json"], ["inbox"], ["weblets", "list"],
    ["agent", "show"], ["network", "show"], ["share", "x"], ["enliven", "ocapn://x.tls-ed25519/s/y", "-n", "x"], ["invite", "x"],
)  # fmt: skip


#: The ``ocapd`` script, telling what it imported on its way out.
SCRIPT = """
import atexit, json, sys
report = sys.argv.pop(1)
atexit.register(lambda: open(report, "w").write(json.dumps(sorted(sys.modules))))
from ocapd.cli import main
sys.exit(main())
"""


def _imported_modules(args: list[str], home: Path) -> set[str]:
    env = {**os.environ, "OCAPD_HOME": str(home)}
    report = home / "modules.json"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(report), *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr  # no daemon: the one-line error, after the imports
    assert "the daemon is not running" in result.stderr
    return set(json.loads(report.read_text()))


def _forbidden(module: str) -> bool:
    if module.startswith("ocapd.daemon"):
        return module not in DAEMON_MODULES_ALLOWED
    return any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_command_imports_none_of_the_daemon_the_web_stack_or_trio(args: list[str], tmp_path: Path) -> None:
    modules = _imported_modules(args, tmp_path)
    assert "ocapd.client" in modules and "ocapd.captp.session" in modules  # it did get as far as connecting
    assert sorted(m for m in modules if _forbidden(m)) == []


def test_a_command_builds_only_its_own_parser_and_imports_only_its_own_module(tmp_path: Path) -> None:
    modules = _imported_modules(["list"], tmp_path)
    assert "ocapd.commands" in modules
    assert not {"ocapd.lifecycle", "ocapd.run", "ocapd.weblets_cli"} & modules


def test_the_client_and_the_protocol_import_no_dataclasses_nor_inspect() -> None:
    # dataclasses imports inspect (and with it ast, dis, tokenize): ~10 ms of
    # every command's start, for three small classes of the protocol.
    code = "import sys, ocapd.client; print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
