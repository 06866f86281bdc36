"""Installing weblets in the daemon: a guest per weblet, exact endowments, atomic installs."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from daemon_harness import EXAMPLES, DaemonProcess, example_zip, zip_bundle

from ocapd.captp import E, RemoteError


@pytest.fixture
def daemon(tmp_path: Path):
    with DaemonProcess(tmp_path / "home") as d:
        yield d






def _table_sizes(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("formulas", "names")}
    finally:
        con.close()


async def test_a_none_weblet_gets_a_guest_with_nothing_beyond_its_own_names(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, facet, _):
        weblet = await E(host).install_weblet(example_zip("counter"), "counter", "NONE")
        assert (await E(weblet).manifest())["title"] == "Counter"
        entries = await E(host).list_entries()
        assert {"name": "counter", "type": "weblet"}.items() <= next(e for e in entries if e["name"] == "counter").items()
    # The guest's own store holds nothing: only its special names, none of them the host's powers.
    report = json.loads(daemon.out("inspect", "--json"))
    assert any(w["level"] == "NONE" for w in report["workers"]), "the backend runs in a NONE-confined worker"


async def test_custom_powers_introduce_exactly_the_picked_names(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        await E(host).store_value("one", "a")
        await E(host).store_value("two", "b")
        await E(host).store_value("secret", "c")
        await E(host).install_weblet(example_zip("counter"), "picky", ["a", "b"])
        await E(host).install_weblet(example_zip("counter"), "plain", "NONE")
        await E(host).install_weblet(example_zip("counter"), "networked", "ENDO")
    # Look at the guests through the database: the weblet formula names its guest.
    con = sqlite3.connect(daemon.db_path)
    try:
        def guest_store_names(weblet_name: str) -> list[str]:
            (weblet_id,) = con.execute("SELECT formula FROM names WHERE name = ?", (weblet_name,)).fetchone()
            weblet = json.loads(con.execute("SELECT body FROM formulas WHERE id = ?", (weblet_id,)).fetchone()[0])
            guest = json.loads(con.execute("SELECT body FROM formulas WHERE id = ?", (weblet["guest"],)).fetchone()[0])
            return sorted(r[0] for r in con.execute("SELECT name FROM names WHERE store = ?", (guest["petstore"],)))

        assert guest_store_names("picky") == ["a", "b"]
        assert guest_store_names("plain") == []
        assert guest_store_names("networked") == ["ENDO"]
    finally:
        con.close()


async def test_a_failed_install_leaves_no_names_formulas_or_workers(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, facet, _):
        await E(host).list()
        before = _table_sizes(daemon.db_path)
        workers_before = len((await E(facet).inspect())["workers"])
        bad_manifest = zip_bundle({"weblet.json": json.dumps({"title": "x", "surprise": 1}), "index.html": "<p>x</p>"})
        with pytest.raises(RemoteError, match="surprise"):
            await E(host).install_weblet(bad_manifest, "bad", "NONE")
        raising = zip_bundle(
            {
                "weblet.json": json.dumps({"title": "Boom", "backend": "backend.py"}),
                "index.html": "<p>boom</p>",
                "backend.py": "def make(powers, context):\n    raise RuntimeError('backend refused to start')\n",
            }
        )
        with pytest.raises(RemoteError, match="backend refused to start"):
            await E(host).install_weblet(raising, "boom", "NONE")
        assert "bad" not in await E(host).list() and "boom" not in await E(host).list()
        assert _table_sizes(daemon.db_path) == before
        report = await E(facet).inspect()
        assert len(report["workers"]) == workers_before
        assert not any(i["type"] in ("weblet", "make-bundle", "guest") for i in report["incarnations"])


async def test_installed_weblets_and_their_names_survive_restart(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (host, _, _):
        weblet = await E(host).install_weblet(example_zip("counter"), "counter", "NONE")
        digest_before = (await E(weblet).manifest())
    daemon.restart()
    async with daemon.connect() as (host, _, _):
        assert "counter" in await E(host).list()
        weblet = await E(host).lookup("counter")
        assert await E(weblet).manifest() == digest_before


def test_cli_install_from_a_folder_and_refuses_a_name_in_use(daemon: DaemonProcess, tmp_path: Path) -> None:
    folder = tmp_path / "counter"
    shutil.copytree(EXAMPLES / "counter", folder)
    out = daemon.out("install", str(folder), "-n", "counter")
    assert "installed Counter 1.1.0 as counter" in out
    again = daemon.cli("install", str(folder), "-n", "counter", check=False)
    assert again.returncode == 1 and "already names something" in again.stderr
    slip = tmp_path / "slip.zip"
    slip.write_bytes(zip_bundle({"weblet.json": json.dumps({"title": "s"}), "index.html": "x", "../evil.txt": "x"}))
    refused = daemon.cli("install", str(slip), "-n", "slip", check=False)
    assert refused.returncode == 1 and ".." in refused.stderr and "Traceback" not in refused.stderr
