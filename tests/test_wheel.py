"""The wheel is the product: built from this repository, installed into a fresh
virtual environment, it runs with neither the checkout nor npm.

Everything happens outside the checkout (its folders must not be importable
by accident): the wheel is built once, installed into a new venv with its
dependencies, and the installed ``ocapd`` command starts a daemon, serves the
chat page and the browser runtime through its gateway, runs a worker and
installs and opens a shipped example weblet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from gateway_clients import http

REPO = Path(__file__).resolve().parent.parent
#: The generic names the layers had before they moved under ``ocapd``.
OLD_TOP_LEVEL_NAMES = ("captp", "daemon", "workers", "gateway", "chat_host", "examples")

#: What a clean checkout does not have.
NOT_SOURCES = (".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache")

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this checkout installed; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the sources, as on a clean machine: setuptools
    # builds in the tree and never deletes what an earlier build left in
    # build/, which would otherwise ride along into the wheel.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    wheelhouse = root / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "-w", str(wheelhouse), str(source)],
        cwd=root,
        env=_clean_env(),
        check=True,
        capture_output=True,
    )
    (wheel,) = wheelhouse.glob("ocapd-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        cwd=root,
        env=_clean_env(),
        check=True,
        capture_output=True,
    )
    return bin_dir


def _run(bin_dir: Path, *args: str, home: Path | None = None, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = _clean_env(**({"OCAPD_HOME": str(home)} if home is not None else {}))
    result = subprocess.run([str(bin_dir / "ocapd"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"ocapd {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _python(bin_dir: Path, source: str, *, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``source`` with the fresh venv's Python, outside the checkout."""
    return subprocess.run(
        [str(bin_dir / "python"), "-c", source], cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=check
    )


def test_the_installed_command_has_a_version_and_bare_ocapd_prints_help(installed: Path, tmp_path: Path) -> None:
    version = _run(installed, "--version", cwd=tmp_path)
    assert version.stdout.strip().startswith("ocapd ")
    bare = _run(installed, cwd=tmp_path)
    assert bare.stdout.startswith("usage: ocapd")
    assert "install" in bare.stdout and "eval" in bare.stdout


def test_the_wheel_installs_only_the_name_ocapd(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        f"print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {OLD_TOP_LEVEL_NAMES!r}}}))\n"
    )
    found = _python(installed, probe, cwd=tmp_path)
    assert json.loads(found.stdout) == {name: False for name in OLD_TOP_LEVEL_NAMES}
    site = _python(installed, "import ocapd, os; print(os.path.dirname(ocapd.__file__))", cwd=tmp_path).stdout.strip()
    assert "site-packages" in site and not site.startswith(str(REPO))


def test_python_daemon_and_ocapd_live_side_by_side(installed: Path, tmp_path: Path) -> None:
    subprocess.run(
        [str(installed / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "python-daemon"],
        cwd=tmp_path,
        env=_clean_env(),
        check=True,
        capture_output=True,
    )
    both = _python(
        installed,
        "import daemon, ocapd.daemon.kernel; print(daemon.DaemonContext.__name__, ocapd.daemon.kernel.Kernel.__name__)",
        cwd=tmp_path,
        check=False,
    )
    assert both.returncode == 0, both.stderr
    assert both.stdout.split() == ["DaemonContext", "Kernel"]


async def test_the_installed_daemon_serves_the_chat_runs_workers_and_hosts_a_shipped_weblet(installed: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _run(installed, "start", "--port", "0", home=home, cwd=tmp_path)
    try:
        # `ocapd chat` waits for the gateway, which comes up just after the daemon is ready.
        chat_url = json.loads(_run(installed, "chat", "--json", home=home, cwd=tmp_path).stdout)["url"]
        port = int(chat_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        status, _, page = await http(port, "/")
        assert status == 200 and b"<script" in page
        for runtime in ("/_ocapd/captp.js", "/_ocapd/weblet.js", "/_ocapd/vendor/msgpack.mjs", "/_ocapd/vendor/msgpack/index.mjs"):
            status, headers, body = await http(port, runtime)
            assert status == 200, runtime
            assert headers["content-type"].startswith("text/javascript"), runtime
            assert body, runtime
        shipped = _python(
            installed, "from ocapd.chat_host import STATIC_DIR; print((STATIC_DIR / 'vendor/msgpack/LICENSE').read_text())", cwd=tmp_path
        )
        assert "Copyright" in shipped.stdout  # the vendored module travels with its license

        assert _run(installed, "eval", "6 * 7", home=home, cwd=tmp_path).stdout.strip() == "42"

        examples = _python(installed, "from ocapd.examples import WEBLETS_DIR; print(WEBLETS_DIR)", cwd=tmp_path).stdout.strip()
        assert not examples.startswith(str(REPO))
        _run(installed, "install", os.path.join(examples, "counter"), "-n", "counter", home=home, cwd=tmp_path)
        instance = json.loads(_run(installed, "open", "counter", "--json", home=home, cwd=tmp_path).stdout)
        host = instance["url"].split("//", 1)[1].split("/", 1)[0]
        status, _, weblet_page = await http(port, "/", host=host)
        assert status == 200 and b"Counter" in weblet_page
    finally:
        _run(installed, "stop", home=home, cwd=tmp_path, check=False)
