"""The public OCapN test suite against ocapd's test peer (docs/ocapn.md).

Starts ``python -m ocapd.captp.ocapn_test_peer --port 0`` (a real process on
a free loopback port), reads the URI it prints, and runs the suite's own
runner (``../shared/ocapn-test-suite/test_runner.py``, Apache-2.0, run from
where it is and never copied here) against it with a bounded time. Every
test the suite runs must pass; the names are listed, so that a test the
suite stops running, or a new one, shows here too.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "ocapn-test-suite"

#: Every test of the suite snapshot (ocapn/ocapn-test-suite at 6c146dc), by module.
SUITE_TESTS = {
    "op_abort.OpAbortTest.test_abort_before_setup",
    "op_delivers.OpDeliverOnlyTest.test_send_deliver_only",
    "op_delivers.OpDeliverTest.test_deliver_with_resolver",
    "op_delivers.OpDeliverTest.test_deliver_promise_pipeline",
    "op_delivers.OpDeliverTest.test_promise_pipeline_with_break",
    "op_gc.OpGcExportTest.test_gc_export_emitted_single_object",
    "op_gc.OpGcExportTest.test_gc_export_with_multiple_refrences",
    "op_gc.OpGcExportTest.test_gc_export_with_multiple_refrences_in_different_messages",
    "op_gc.OpGcAnswerTest.test_gc_answer",
    "op_listen.OpListenTest.test_op_listen_to_promise_and_fulfill",
    "op_listen.OpListenTest.test_op_listen_to_promise_and_break",
    "op_listen.OpListenTest.test_op_listen_already_has_answer",
    "op_start_session.OpStartSessionTest.test_captp_remote_version",
    "op_start_session.OpStartSessionTest.test_start_session_with_invalid_version",
    "op_start_session.OpStartSessionTest.test_start_session_with_invalid_signature",
    "op_start_session.OpStartSessionTest.test_crossed_hellos_mitigation_aborts_inbound",
    "op_start_session.OpStartSessionTest.test_crossed_hellos_mitigation_outbound_aborts",
    "third_party_handoffs.HandoffRemoteAsReciever.test_valid_handoff_without_prior_connection",
    "third_party_handoffs.HandoffRemoteAsReciever.test_valid_handoff_with_prior_connection",
    "third_party_handoffs.HandoffRemoteAsExporter.test_valid_handoff",
    "third_party_handoffs.HandoffRemoteAsExporter.test_valid_handoff_wait_deposit_gift",
    "third_party_handoffs.HandoffRemoteAsExporter.test_handoff_receive_invalid_handoff_count",
    "third_party_handoffs.HandoffRemoteAsExporter.test_handoff_receive_invalid_signature",
    "third_party_handoffs.HandoffRemoteAsGifter.test_provides_valid_handoff_give",
}

#: What must pass. Equal to SUITE_TESTS once ocapd passes the whole suite.
MUST_PASS = SUITE_TESTS

#: The whole run, bounded: a peer that hangs must fail this test, not the CI job.
SUITE_TIMEOUT = 300
URI_TIMEOUT = 30

#: ``test_name (module.Class.test_name)``, then (maybe after its docstring) `` ... ok``.
_HEADER = re.compile(r"^test_\w+ \(([\w.]+)\)", re.M)
_OUTCOME = re.compile(r" \.\.\. (\w+)")


def _results(output: str) -> dict[str, str]:
    """``module.Class.test`` -> ``ok`` / ``FAIL`` / ``ERROR`` / ``skipped``, from unittest's verbose output."""
    results = {}
    for header in _HEADER.finditer(output):
        outcome = _OUTCOME.search(output, header.end())
        if outcome is not None:
            results[header.group(1)] = outcome.group(1)
    return results


def test_the_result_parser_reads_unittests_verbose_lines():
    output = (
        "test_abort_before_setup (op_abort.OpAbortTest.test_abort_before_setup)\n"
        "Aborting a session before a session has been fully setup ... ok\n"
        "test_gc_answer (op_gc.OpGcAnswerTest.test_gc_answer) ... FAIL\n"
    )
    assert _results(output) == {
        "op_abort.OpAbortTest.test_abort_before_setup": "ok",
        "op_gc.OpGcAnswerTest.test_gc_answer": "FAIL",
    }


PEER = [sys.executable, "-P", "-m", "ocapd.captp.ocapn_test_peer"]


def test_the_test_peer_refuses_to_listen_beyond_loopback_with_one_line():
    run = subprocess.run([*PEER, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stdout == ""
    last = run.stderr.strip().splitlines()[-1]
    assert "loopback" in last and "Traceback" not in run.stderr


def test_the_test_peer_says_in_one_line_when_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([*PEER, "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], run.stderr


@pytest.mark.slow
def test_the_ocapn_test_suite_passes_against_the_test_peer(tmp_path: Path):
    if not (SUITE / "test_runner.py").is_file():
        pytest.skip(f"the OCapN test suite is not at {SUITE}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    peer = subprocess.Popen(
        [sys.executable, "-P", "-m", "ocapd.captp.ocapn_test_peer", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "peer.log", "wb"),  # noqa: SIM115 - closed with the process
        env=env,
    )
    try:
        assert peer.stdout is not None
        uri = peer.stdout.readline().decode().strip()
        assert re.fullmatch(r"ocapn://[0-9a-f]+\.tcp-testing-only\?host=127\.0\.0\.1&port=\d+", uri), uri
        run = subprocess.run(
            [sys.executable, "test_runner.py", uri, "--verbose"],
            cwd=SUITE,
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT,
            env=env,
        )
        output = run.stdout + run.stderr
        results = _results(output)
        assert set(results) == SUITE_TESTS, output[-4000:]
        passed = {name for name, outcome in results.items() if outcome == "ok"}
        assert passed == MUST_PASS, output[-6000:] + "\n--- peer log ---\n" + (tmp_path / "peer.log").read_text()[-3000:]
        assert peer.poll() is None, "the test peer died during the run"
    finally:
        peer.kill()
        peer.wait()
