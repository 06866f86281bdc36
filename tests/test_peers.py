"""Two real daemons as OCapN peers over tls-ed25519 on 127.0.0.1 (daemon/peers.py, `ocapd network|share|enliven`).

Two OCAPD_HOMEs, two `ocapd run-daemon` processes, the real CLI: one daemon
shares a worker's object, the other enlivens the sturdyref and calls it. A
peer killed with -9 makes calls fail in one line while the caller keeps
serving; once the peer is back (listening again on its recorded port, with
its recorded key), the same name works. Sturdyrefs with a wrong swiss
number, a designator the listener does not hold, or a revoked share are
refused cleanly and name nothing.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import trio
from daemon_harness import DaemonProcess

#: How long a test waits for a daemon to notice something (never asserted as a timing).
SETTLE = 30.0

GREETER = "Far('Greeter', greet=lambda who: 'hello ' + who)"
CALL = "E(g).greet('bob')"


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def show_json(daemon: DaemonProcess, *args: str) -> dict:
    return json.loads(daemon.out(*args, "--json"))


def peer_of(sturdyref: str) -> str:
    """The peer URI in a sturdyref URI (``/s/<swiss>`` taken out)."""
    head, rest = sturdyref.split("/s/")
    return f"{head}?{rest.split('?')[1]}"


def wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + SETTLE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    a = DaemonProcess(tmp_path_factory.mktemp("peer-a") / "home")
    b = DaemonProcess(tmp_path_factory.mktemp("peer-b") / "home")
    try:
        for d in (a, b):
            d.home.mkdir()
            d.start()
        yield a, b
    finally:
        for d in (a, b):
            d.stop()


@pytest.fixture(scope="module")
def shared(pair: tuple[DaemonProcess, DaemonProcess]) -> str:
    """A listens, runs a greeter in worker w1 and shares it: the sturdyref URI."""
    a, _ = pair
    listening = a.out("network", "listen", "--netlayer", "tls-ed25519")
    assert listening.startswith("ocapn://") and ".tls-ed25519?host=127.0.0.1&port=" in listening
    a.out("eval", GREETER, "-w", "w1", "-n", "greeter")
    uri = a.out("share", "greeter")
    assert uri.startswith(listening.split("?")[0] + "/s/")
    return uri


def test_the_identity_key_is_private_and_kept(pair: tuple[DaemonProcess, DaemonProcess], shared: str) -> None:
    a, _ = pair
    key = a.home / "state" / "ocapn-ed25519.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    shown = show_json(a, "network", "show")
    assert shown["listening"] and shown["uri"] == peer_of(shared) and shown["designator"] in shared
    # Listening again where it listens is no error: the old listener is closed first.
    port = shown["uri"].rsplit("port=", 1)[1]
    assert a.out("network", "listen", "--netlayer", "tls-ed25519", "--port", port) == shown["uri"]


def test_a_shared_object_is_called_from_the_other_daemon(pair: tuple[DaemonProcess, DaemonProcess], shared: str) -> None:
    _, b = pair
    b.out("enliven", shared, "-n", "greeter-at-a")
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")
    assert "hello ann" in b.out("eval", "E(g).greet('ann')", "g:greeter-at-a")
    report = show_json(b, "inspect")["ocapn"]
    assert [p["live"] for p in report["peers"]] == [True]
    sessions = [s for s in report["sessions"] if s["state"] == "started"]
    assert len(sessions) == 1 and sessions[0]["authenticated"] and sessions[0]["direction"] == "outbound"
    assert shared.startswith(f"ocapn://{sessions[0]['designator']}.tls-ed25519/s/")
    text = b.out("inspect")
    assert f"{sessions[0]['designator'][:20]} tls-ed25519  outbound started  authenticated" in text


def test_a_daemon_enlivens_its_own_sturdyref_without_dialing_itself(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, _ = pair
    a.out("enliven", shared, "-n", "greeter-here")
    assert "hello bob" in a.out("eval", CALL, "g:greeter-here")
    line = one_line_error(a.cli("enliven", shared.replace("/s/", "/s/x"), "-n", "nothing-here", check=False))
    assert "refused the sturdyref" in line
    line = one_line_error(a.cli("accept", a.out("invite", "me"), "myself", check=False))
    assert "this daemon itself" in line


def test_what_peers_hold_is_charged_to_the_daemons_shared_budget(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, b = pair
    b.cli("enliven", shared, "-n", "greeter-at-a", "--replace")
    b.out("eval", CALL, "g:greeter-at-a")
    inbound = [s for s in show_json(a, "inspect")["ocapn"]["sessions"] if s["direction"] == "inbound" and s["state"] == "started"]
    assert inbound and inbound[0]["exports"] >= 2  # the bootstrap object and the greeter's caretaker
    budget = show_json(a, "inspect")["daemon"]["budget"]
    assert budget["exports"] >= inbound[0]["exports"] - 1  # every export but the bootstrap is charged


def test_a_wrong_swiss_number_is_refused_and_names_nothing(pair: tuple[DaemonProcess, DaemonProcess], shared: str) -> None:
    _, b = pair
    head, rest = shared.split("/s/")
    swiss, hints = rest.split("?")
    wrong = f"{head}/s/{'A' if swiss[0] != 'A' else 'B'}{swiss[1:]}?{hints}"
    line = one_line_error(b.cli("enliven", wrong, "-n", "forged", check=False))
    assert "refused the sturdyref" in line
    assert "forged" not in b.out("list")


def test_a_peer_guessing_swiss_numbers_is_cut_off_and_reconnecting_does_not_refill_its_allowance(
    pair: tuple[DaemonProcess, DaemonProcess], tmp_path: Path
) -> None:
    a, b = pair
    c = DaemonProcess(tmp_path / "home")
    c.home.mkdir()
    # Nothing earned back, so what the guesser sees does not hang on the machine's speed.
    c.env["OCAPD_LIMITS"] = json.dumps({"peer_failed_fetches": 2, "peer_failed_fetches_per_second": 0})
    c.start()
    try:
        c.out("network", "listen", "--netlayer", "tls-ed25519")
        # The operator sees the bounds in force, the overrides included.
        limits = show_json(c, "network", "show")["limits"]
        assert limits["peer_failed_fetches"] == 2 and limits["peer_failed_fetches_per_second"] == 0
        assert limits["peer_sessions"] == 4 and limits["peer_connections_per_address"] == 16
        assert "2 failed fetches a peer or address (+0/s)" in c.out("network", "show")
        c.out("store", "--text", "open secret", "-n", "note")
        uri = c.out("share", "note")
        head, rest = uri.split("/s/")
        swiss, hints = rest.split("?")
        # Each enliven after an abort dials a new session; the allowance is the peer's, not the session's.
        lines = [
            one_line_error(b.cli("enliven", f"{head}/s/guess{n}{swiss[6:]}?{hints}", "-n", f"guess-{n}", check=False))
            for n in range(6)
        ]
        assert all("refused the sturdyref" in line and "swiss number" in line for line in lines[:2]), lines
        assert all("too-many-failed-fetches" in line for line in lines[2:]), lines
        # Over its allowance the guesser gets no lookup, not even of the right number; another peer is served.
        assert "too-many-failed-fetches" in one_line_error(b.cli("enliven", uri, "-n", "note-at-c", check=False))
        a.out("enliven", uri, "-n", "note-at-c")
        assert a.out("show", "note-at-c") == "open secret"
    finally:
        c.stop()


def test_a_designator_the_listener_does_not_hold_is_refused(pair: tuple[DaemonProcess, DaemonProcess], shared: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ocapd.captp.ocapn_tls import designator_for

    a, b = pair
    someone_else = designator_for(Ed25519PrivateKey.generate().public_key())
    a_designator = show_json(a, "network", "show")["designator"]
    impostor = shared.replace(a_designator, someone_else)
    line = one_line_error(b.cli("enliven", impostor, "-n", "impostor", check=False))
    assert "unreachable" in line and "not the peer" in line
    assert "impostor" not in b.out("list")
    line = one_line_error(b.cli("enliven", "ocapn://nope.tls-ed25519/s/abc?host=127.0.0.1&port=1", "-n", "x", check=False))
    assert "designator" in line


def test_a_revoked_share_is_refused(pair: tuple[DaemonProcess, DaemonProcess], shared: str) -> None:
    a, b = pair
    a.out("store", "--text", "secret note", "-n", "note")
    uri = a.out("share", "note")
    b.out("enliven", uri, "-n", "note-at-a")
    assert b.out("show", "note-at-a") == "secret note"
    assert [s["uri"] for s in show_json(a, "share", "--list")].count(uri) == 1
    assert a.out("share", "--revoke", uri) == "revoked 1 share"
    assert uri not in [s["uri"] for s in show_json(a, "share", "--list")]
    line = one_line_error(b.cli("enliven", uri, "-n", "note-again", check=False))
    assert "refused the sturdyref" in line
    line = one_line_error(a.cli("share", "--revoke", uri, check=False))
    assert "no share" in line
    # The greeter's own share is untouched.
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")


def test_revoking_a_share_cuts_the_references_peers_already_fetched(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, b = pair
    second = a.out("share", "greeter")
    b.out("enliven", second, "-n", "greeter-2")
    assert "hello bob" in b.out("eval", CALL, "g:greeter-2")
    a.out("share", "--revoke", second)
    line = one_line_error(b.cli("eval", CALL, "g:greeter-2", check=False))
    assert "revoked" in line
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")  # the first share is another caretaker


def test_a_share_records_which_peers_fetched_it_and_the_record_is_kept_and_goes_with_the_share(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, b = pair
    b_designator = show_json(b, "network", "show")["designator"]
    b.cli("enliven", shared, "-n", "greeter-at-a", "--replace")
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")
    a.out("store", "--text", "for b only", "-n", "memo")
    memo = a.out("share", "memo")
    assert next(s for s in show_json(a, "share", "--list") if s["uri"] == memo)["fetched_by"] == []
    assert "not fetched yet" in a.out("share", "--list")
    b.out("enliven", memo, "-n", "memo-at-a")

    def fetched_by(uri: str) -> list[dict]:
        return next(s for s in show_json(a, "share", "--list") if s["uri"] == uri)["fetched_by"]

    (record,) = fetched_by(memo)
    assert record["peer"] == b_designator and record["count"] == 1 and record["first"] == record["last"]
    assert [r["peer"] for r in fetched_by(shared)] == [b_designator]
    assert f"fetched by {b_designator}  once, first " in a.out("share", "--list")
    holders = show_json(a, "inspect")["ocapn"]["holders"]
    assert [h["peer"] for h in holders] == [b_designator] and holders[0]["shares"] >= 2
    assert f"{b_designator}  {holders[0]['shares']} shares" in a.out("inspect")
    # The record is in the database: it survives a restart.
    a.restart()
    wait_until(lambda: show_json(a, "network", "show")["listening"], "a listens again")
    assert fetched_by(memo) == [record]
    # Revoking, the owner saw who held it; the record goes with the share.
    a.out("share", "--revoke", memo)
    assert show_json(a, "inspect")["ocapn"]["holders"][0]["shares"] == holders[0]["shares"] - 1
    # A fetch of this daemon's own sturdyref is no peer's, and is not recorded.
    a.out("enliven", shared, "-n", "greeter-here", "--replace")
    assert [r["peer"] for r in fetched_by(shared)] == [b_designator]


def test_a_peers_first_fetch_is_answered_only_once_the_record_naming_it_is_written(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    # Who holds a share must not be lost to a crash just after the answer:
    # while a's database cannot be written, b's first fetch is refused, not answered unrecorded.
    a, b = pair
    b_designator = show_json(b, "network", "show")["designator"]
    a.out("store", "--text", "for the record", "-n", "ledger")
    ledger = a.out("share", "ledger")

    def on_disk() -> set[str]:
        """The shares a's database records b as having fetched."""
        with closing(sqlite3.connect(a.db_path)) as db:
            return {share for (share,) in db.execute("SELECT share FROM share_fetches WHERE peer = ?", (b_designator,))}

    before = on_disk()
    lock = sqlite3.connect(a.db_path, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # a's writes wait for it, then fail after their busy timeout
        line = one_line_error(b.cli("enliven", ledger, "-n", "ledger-at-a", check=False))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert "not available" in line, line
    assert "ledger-at-a" not in b.out("list")
    # b holds nothing of it, and a's record says so.
    ledger_share = next(s for s in show_json(a, "share", "--list") if s["uri"] == ledger)
    assert ledger_share["fetched_by"] == []
    # Writable again: the fetch is answered, and by then its record is committed.
    assert on_disk() == before
    b.out("enliven", ledger, "-n", "ledger-at-a")
    assert len(on_disk() - before) == 1
    (record,) = next(s for s in show_json(a, "share", "--list") if s["uri"] == ledger)["fetched_by"]
    assert record["peer"] == b_designator and record["count"] == 1
    assert b.out("show", "ledger-at-a") == "for the record"


def test_only_the_host_that_shared_lists_and_revokes_and_guests_cannot_share(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, b = pair
    a.out("mkhost", "other")
    a.out("mkguest", "visitor")
    a.out("copy", "greeter", "visitor-agent.greeter")
    line = one_line_error(a.cli("share", "--revoke", shared, "--as", "other-agent", check=False))
    assert "no share of yours" in line
    assert show_json(a, "share", "--list", "--as", "other-agent") == []
    one_line_error(a.cli("share", "greeter", "--as", "visitor-agent", check=False))
    one_line_error(a.cli("share", "--revoke", shared, "--as", "visitor-agent", check=False))
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")


def test_the_enlivened_name_is_a_recipe_that_survives_its_own_daemons_restart(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    _, b = pair
    b.cli("enliven", shared, "-n", "greeter-at-a", "--replace")
    b.restart()
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")


def test_invite_and_accept_let_agents_mail_capabilities_across_and_the_sender_is_the_relationship(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, b = pair
    b.cli("network", "listen", "--netlayer", "tls-ed25519")
    invitation = a.out("invite", "bob")
    b.out("accept", invitation, "alice")
    # Used once: a second accept is refused and names nothing.
    line = one_line_error(b.cli("accept", invitation, "alice-again", check=False))
    assert "refused" in line
    assert "alice-again" not in b.out("list")
    b.out("store", "--text", "for alice", "-n", "note")
    b.out("send", "alice", "I am carol, really. Here: @note")
    [message] = show_json(a, "inbox")
    assert message["from_names"] == ["bob"] and message["names"] == ["note"]
    a.out("adopt", str(message["number"]), "note", "-n", "bobs-note")
    assert a.out("show", "bobs-note") == "for alice"
    # Back the other way, with a capability the inviter holds (the greeter).
    a.out("send", "bob", "greetings @greeter")
    [back] = show_json(b, "inbox")
    assert back["from_names"] == ["alice"]
    b.out("adopt", str(back["number"]), "greeter", "-n", "alices-greeter")
    assert "hello bob" in b.out("eval", CALL, "g:alices-greeter")
    # A second invitation is a second relationship: its mail shows the other name.
    b.out("accept", a.out("invite", "bob-work"), "alice-work")
    b.out("send", "alice-work", "from work")
    assert [m["from_names"] for m in show_json(a, "inbox")] == [["bob"], ["bob-work"]]
    # A request across: the answer comes back as a value of the answering daemon.
    asking = subprocess.Popen(
        [sys.executable, "-m", "ocapd", "request", "alice", "a greeter, please", "-n", "answer"],
        env=b.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: any(m["type"] == "request" for m in show_json(a, "inbox")), "a has the request")
    [request] = [m for m in show_json(a, "inbox") if m["type"] == "request"]
    assert request["from_names"] == ["bob"] and request["description"] == "a greeter, please"
    a.out("resolve", str(request["number"]), "greeter")
    out, err = asking.communicate(timeout=60)
    assert asking.returncode == 0, err
    assert "hello bob" in b.out("eval", CALL, "g:answer")
    # ... and a refusal comes back as one line.
    asking = subprocess.Popen(
        [sys.executable, "-m", "ocapd", "request", "alice", "the keys, please"],
        env=b.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: len([m for m in show_json(a, "inbox") if m["type"] == "request"]) == 2, "a has the second request")
    second = [m for m in show_json(a, "inbox") if m["type"] == "request"][-1]
    a.out("reject", str(second["number"]), "no")
    out, err = asking.communicate(timeout=60)
    assert asking.returncode != 0 and len(err.strip().splitlines()) == 1 and "no" in err
    # The peer calling the inbox by hand cannot name another sender or slip in junk.
    for forged in (
        "E(x).deliver(['forged'], [], [], 'carol')",
        "E(x).deliver(['forged'], ['a'], ['https://example.com/'])",
        "E(x).deliver(['forged'], ['a'], [b'ocapn'])",
        "E(x).deliver('forged', [], [])",
        "E(x).deliver(['forged'], ['a'] * 65, ['" + shared + "'] * 65)",
        "E(x).request('answer me at a', '" + shared + "')",  # a resolver not at b's daemon
        "E(x).request(['not text'], '" + shared + "')",
    ):
        one_line_error(b.cli("eval", forged, "x:alice", check=False))
    assert len([m for m in show_json(a, "inbox") if m["type"] == "package"]) == 2
    assert len([m for m in show_json(a, "inbox") if m["type"] == "request"]) == 2


def test_an_object_at_a_third_daemon_passed_on_in_mail_is_reached_directly(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str, tmp_path: Path
) -> None:
    a, b = pair
    b.cli("network", "listen", "--netlayer", "tls-ed25519")
    b.cli("enliven", shared, "-n", "greeter-at-a", "--replace")
    c = DaemonProcess(tmp_path / "home")
    c.home.mkdir()
    c.start()
    try:
        c.out("network", "listen", "--netlayer", "tls-ed25519")
        c.out("accept", b.out("invite", "carol"), "bob")
        b.out("send", "carol", "a greeter at a: @greeter-at-a")
        [message] = show_json(c, "inbox")
        assert message["from_names"] == ["bob"]
        c.out("adopt", str(message["number"]), "greeter-at-a", "-n", "greeter")
        assert "hello bob" in c.out("eval", CALL, "g:greeter")
        a_designator = show_json(a, "network", "show")["designator"]
        live = [s["designator"] for s in show_json(c, "inspect")["ocapn"]["sessions"] if s["state"] == "started"]
        assert a_designator in live  # c talks to a itself
        b.stop()  # and needs b no more
        assert "hello bob" in c.out("eval", CALL, "g:greeter")
    finally:
        c.stop()
        if b.proc is None:
            b.start()


def test_sharing_needs_a_listener(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "home")
    d.home.mkdir()
    d.start()
    try:
        d.out("store", "--text", "x", "-n", "x")
        line = one_line_error(d.cli("share", "x", check=False))
        assert "does not listen" in line
        line = one_line_error(d.cli("invite", "bob", check=False))
        assert "does not listen" in line
        line = one_line_error(d.cli("network", "listen", "--netlayer", "tcp-testing-only", check=False))
        assert "tls-ed25519" in line
    finally:
        d.stop()


def test_a_killed_peer_fails_calls_clearly_and_its_names_work_after_it_restarts(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    a, b = pair
    b.cli("enliven", shared, "-n", "greeter-at-a", "--replace")
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")
    a.kill9()

    def no_session() -> bool:
        return not [s for s in show_json(b, "inspect")["ocapn"]["sessions"] if s["state"] != "ended"]

    wait_until(no_session, "b notices the session with a ended")
    line = one_line_error(b.cli("eval", CALL, "g:greeter-at-a", check=False))
    assert "unreachable" in line
    assert b.out("ping") == "pong"
    a.start()
    wait_until(lambda: show_json(a, "network", "show")["listening"], "a listens again")
    assert show_json(a, "network", "show")["uri"] == peer_of(shared)
    assert "hello bob" in b.out("eval", CALL, "g:greeter-at-a")


def test_a_daemon_whose_port_is_taken_at_restart_runs_without_listening(
    pair: tuple[DaemonProcess, DaemonProcess], shared: str
) -> None:
    import socket

    a, b = pair
    port = int(show_json(a, "network", "show")["uri"].rsplit("port=", 1)[1])
    a.stop()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        a.start()
        log = a.home / "state" / "logs" / "daemon.log"
        wait_until(lambda: "could not listen for OCapN peers again" in log.read_text(), "a logs why it does not listen")
        assert not show_json(a, "network", "show")["listening"]
        assert a.out("ping") == "pong"
    finally:
        squatter.close()
    a.restart()  # the setting was kept: with the port free it listens there again
    wait_until(lambda: show_json(a, "network", "show")["listening"], "a listens again")
    assert show_json(a, "network", "show")["uri"] == peer_of(shared)


def test_the_advertised_address_is_what_uris_carry_and_it_is_kept(pair: tuple[DaemonProcess, DaemonProcess], tmp_path: Path) -> None:
    """Listen on one address, give peers another (here a name for the same loopback)."""
    _, b = pair
    d = DaemonProcess(tmp_path / "home")
    d.home.mkdir()
    d.start()
    try:
        listening = d.out("network", "listen", "--netlayer", "tls-ed25519", "--host", "127.0.0.1", "--advertise", "localhost")
        port = listening.rsplit("port=", 1)[1]
        assert listening.endswith(f".tls-ed25519?host=localhost&port={port}")
        shown = show_json(d, "network", "show")
        assert shown["uri"] == listening
        assert shown["address"] == f"127.0.0.1:{port}" and shown["advertise"] == "localhost"
        human = d.out("network", "show")
        assert f"127.0.0.1:{port}" in human and listening in human
        d.out("eval", GREETER, "-w", "w1", "-n", "greeter")
        uri = d.out("share", "greeter")
        assert uri.startswith(listening.split("?")[0] + "/s/") and uri.endswith(f"?host=localhost&port={port}")
        # The peer dials the advertised address, and reaches the listener.
        b.out("enliven", uri, "-n", "greeter-at-d")
        assert "hello bob" in b.out("eval", CALL, "g:greeter-at-d")
        # A refused listen leaves the listener that runs.
        one_line_error(d.cli("network", "listen", "--netlayer", "tls-ed25519", "--host", "0.0.0.0", check=False))
        assert show_json(d, "network", "show")["uri"] == listening
        assert "hello ann" in b.out("eval", "E(g).greet('ann')", "g:greeter-at-d")
        d.restart()
        wait_until(lambda: show_json(d, "network", "show")["listening"], "d listens again")
        assert show_json(d, "network", "show")["uri"] == listening
        # An advertised port (a forwarded one, say) replaces the bound one in URIs only.
        forwarded = d.out("network", "listen", "--netlayer", "tls-ed25519", "--advertise", "localhost:9")
        assert forwarded.endswith("?host=localhost&port=9")
        assert show_json(d, "network", "show")["address"].startswith("127.0.0.1:")
    finally:
        d.stop()


def test_no_uri_is_given_with_an_address_peers_cannot_dial(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "home")
    d.home.mkdir()
    d.start()
    try:
        refused = [
            ("--host", "0.0.0.0"),
            ("--host", "::"),
            ("--host", "0.0.0.0", "--advertise", "0.0.0.0"),
            ("--advertise", "[::]:9045"),
            ("--advertise", "::"),
            ("--advertise", "localhost:70000"),
            ("--advertise", "localhost:x"),
            ("--advertise", ""),
            ("--advertise", "a b"),
        ]
        for args in refused:
            line = one_line_error(d.cli("network", "listen", "--netlayer", "tls-ed25519", *args, check=False))
            assert "--advertise" in line, (args, line)
            assert not show_json(d, "network", "show")["listening"], args
        d.restart()
        assert not show_json(d, "network", "show")["listening"]
        line = one_line_error(d.cli("network", "listen", "--netlayer", "tls-ed25519", "--host", "0.0.0.0", check=False))
        assert "0.0.0.0 listens on every address" in line and "add --advertise HOST[:PORT], the address peers dial" in line
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("advertise", "host", "expected"),
    [
        (None, "127.0.0.1", ("127.0.0.1", 4000)),
        ("example.org", "0.0.0.0", ("example.org", 4000)),
        ("example.org:443", "::", ("example.org", 443)),
        ("192.0.2.7", "0.0.0.0", ("192.0.2.7", 4000)),
        ("[2001:db8::1]:9045", "::", ("2001:db8::1", 9045)),
        ("[2001:db8::1]", "::", ("2001:db8::1", 4000)),
        ("2001:db8::1", "::", ("2001:db8::1", 4000)),
    ],
)
def test_the_advertised_address_is_read_in_every_form(advertise: str | None, host: str, expected: tuple[str, int]) -> None:
    from ocapd.daemon.peers import advertised_address

    assert advertised_address(advertise, host, 4000) == expected


@pytest.mark.parametrize(
    ("advertise", "host"),
    [(None, "0.0.0.0"), (None, "::"), (None, "0"), ("0.0.0.0", "0.0.0.0"), ("0", "::"), ("[::]", "::"), ("::", "::"),
     ("[::]:1", "::"), ("0:80", "::"), ("[2001:db8::1]x", "::"), ("[nope]", "::"), ("x:0", "::"), ("x:", "::"),
     ("-x", "::"), ("x/y", "::"), ("a b", "::"), ("", "::"), ("1:2:3", "::")],
)
def test_an_address_peers_cannot_dial_is_refused_in_one_line_saying_how_to_fix_it(advertise: str | None, host: str) -> None:
    from ocapd.daemon.peers import PeerError, advertised_address

    with pytest.raises(PeerError, match="advertise") as caught:
        advertised_address(advertise, host, 4000)
    assert "\n" not in str(caught.value)


def test_stop_means_no_listener_after_a_restart(pair: tuple[DaemonProcess, DaemonProcess], shared: str) -> None:
    a, b = pair
    a.out("network", "stop")
    a.restart()
    assert not show_json(a, "network", "show")["listening"]
    assert b.out("ping") == "pong"


def test_the_identity_key_is_made_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    from ocapd.daemon.peers import PeerError, load_or_create_key

    path = tmp_path / "key"
    made = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path).public_key() == made.public_key()
    path.chmod(0o644)
    with pytest.raises(PeerError, match="read by others"):
        load_or_create_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(PeerError, match="not an Ed25519 key"):
        load_or_create_key(path)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        load_or_create_key(link)


async def test_a_share_remembers_at_most_so_many_fetching_peers_the_latest_and_writes_them_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import itertools
    from types import SimpleNamespace

    import trio

    from ocapd.daemon import peers
    from ocapd.daemon.db import Database

    clock = itertools.count(1000)
    monkeypatch.setattr(peers, "time", SimpleNamespace(time=lambda: float(next(clock))))
    share = "1" * 64
    db = await Database.open(tmp_path / "ocapd.sqlite")
    try:
        async with trio.open_nursery() as nursery:
            fetches = peers.ShareFetches(SimpleNamespace(db=db, formulas={share: None}, nursery=nursery))  # type: ignore[arg-type]
            for n in range(peers.MAX_FETCHERS_PER_SHARE):
                fetches.record(share, f"peer-{n}")
            fetches.record(share, "peer-0")  # fetched again: now the latest, not the first to go
            for n in range(100, 110):
                fetches.record(share, f"peer-{n}")
        kept = fetches.fetched_by(share)
        assert len(kept) == peers.MAX_FETCHERS_PER_SHARE
        assert {r["peer"] for r in kept} == {"peer-0", *(f"peer-{n}" for n in range(11, 16)), *(f"peer-{n}" for n in range(100, 110))}
        assert next(r for r in kept if r["peer"] == "peer-0")["count"] == 2
        assert db.load_share_fetches() == {share: kept}  # what is written is what is kept
    finally:
        await db.aclose()


async def test_fetches_made_while_the_first_ones_record_is_unwritten_wait_for_it_too(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ocapd.daemon.db import Database
    from ocapd.daemon.peers import ShareFetches

    share_id = "5" * 64  # a formula id, as the table checks

    database = await Database.open(tmp_path / "ocapd.sqlite")
    lock = sqlite3.connect(tmp_path / "ocapd.sqlite", isolation_level=None)
    try:
        async with trio.open_nursery() as nursery:
            fetches = ShareFetches(SimpleNamespace(db=database, formulas={share_id: object()}, nursery=nursery))  # type: ignore[arg-type]
            lock.execute("BEGIN IMMEDIATE")  # the record cannot be written yet
            first = fetches.record(share_id, "peer-b")
            assert first is not None
            assert fetches.record(share_id, "peer-b") is first  # a second fetch is not answered before it either
            await trio.sleep(0.2)
            assert not first.done.is_set()
            lock.execute("ROLLBACK")
            with trio.fail_after(10):
                await first.done.wait()
            assert first.ok
            (written,) = database.load_share_fetches()[share_id]
            assert (written["peer"], written["count"]) == ("peer-b", 2)
            assert fetches.record(share_id, "peer-b") is None  # written: later fetches are answered at once
    finally:
        lock.close()
        await database.aclose()
