"""A weblet's mail is from the weblet, by name: the CLI, the chat and any client see it (issue 10, item 9).

A weblet asks its host through its own guest, whose handle has no pet name in
the host's store; the host names the weblet. The daemon says so where it
describes a message: ``from_names`` holds the weblet's names and
``from_weblet`` its formula id (so a client can follow renames), both in
``list_messages`` and in ``follow_messages`` events.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import trio
from daemon_harness import DaemonProcess

from ocapd.captp import E

#: A weblet whose backend asks its host for something as soon as it starts (and does not wait).
ASKER_BACKEND = '''
from ocapd.captp import E, Far

def make(powers, context):
    E.send_only(powers).request("HOST", "a greeting, please", None)
    return Far("Asker", ping=lambda: "pong")
'''


def asker_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("weblet.json", json.dumps({"title": "Asker", "backend": "backend.py"}))
        z.writestr("index.html", "<!doctype html><title>asker</title><p>asker</p>")
        z.writestr("backend.py", ASKER_BACKEND)
    return buffer.getvalue()


@pytest.fixture
def daemon(tmp_path):
    with DaemonProcess(tmp_path / "home") as d:
        yield d


def requests_from_asker(d: DaemonProcess) -> list[dict]:
    return [m for m in json.loads(d.out("inbox", "--json")) if m.get("description") == "a greeting, please"]


def wait_for_request(d: DaemonProcess) -> dict:
    async def wait() -> dict:
        with trio.fail_after(30):  # a deadline for a hang, not a timing the test relies on
            async with d.connect() as (host, _, _):
                stream = await E(host).follow_messages()
                while True:
                    event = (await E(stream).next())["value"]
                    record = event.get("add") or event.get("update") or {}
                    if record.get("description") == "a greeting, please":
                        return record

    return trio.run(wait)


def install_asker(d: DaemonProcess, tmp_path, name: str) -> None:
    bundle = tmp_path / "asker.zip"
    bundle.write_bytes(asker_zip())
    d.cli("install", str(bundle), "-n", name)


def test_ocapd_inbox_names_the_weblet_a_request_came_from(daemon: DaemonProcess, tmp_path) -> None:
    install_asker(daemon, tmp_path, "asker")
    event = wait_for_request(daemon)
    assert event["from_names"] == ["asker"]  # the followed event names it too
    number = event["number"]
    assert f"{number}. asker requests: a greeting, please (pending)" in daemon.out("inbox").splitlines()
    (listed,) = requests_from_asker(daemon)
    assert listed["from_names"] == ["asker"]
    assert listed["from_weblet"] == json.loads(daemon.out("show", "asker", "--json"))["id"]


def test_a_renamed_weblets_requests_follow_its_new_name(daemon: DaemonProcess, tmp_path) -> None:
    install_asker(daemon, tmp_path, "asker")
    number = wait_for_request(daemon)["number"]
    daemon.cli("move", "asker", "greeter")
    assert f"{number}. greeter requests: a greeting, please (pending)" in daemon.out("inbox").splitlines()


def test_a_removed_weblets_requests_still_say_which_weblet(daemon: DaemonProcess, tmp_path) -> None:
    install_asker(daemon, tmp_path, "asker")
    number = wait_for_request(daemon)["number"]
    daemon.cli("remove", "asker")
    assert f"{number}. weblet 'Asker' requests: a greeting, please (pending)" in daemon.out("inbox").splitlines()
