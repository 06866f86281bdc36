"""Shared pytest configuration. Keep fixtures that one test file needs in that file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Subprocesses started by tests (workers, the daemon, benchmark peers) must
# import this checkout, whatever their working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
PYTHON = sys.executable
