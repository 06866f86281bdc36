"""Shared pytest configuration. Keep fixtures that one test file needs in that file.

Subprocesses started by tests (workers, the daemon, benchmark peers) import
ocapd from the installation (``scripts/setup`` installs this checkout in
editable mode), exactly as a user's would: nothing here puts the checkout's
folders on ``PYTHONPATH``, where their bare names (``daemon``, ``workers``)
would be importable.
"""

from __future__ import annotations

import sys

PYTHON = sys.executable
