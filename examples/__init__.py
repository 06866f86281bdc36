"""The example weblets, shipped with ocapd as package data.

``WEBLETS_DIR`` holds one folder per weblet (``counter``, ``notes``), each a
bundle ``ocapd install`` takes as it is. ``scripts/run`` installs them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["WEBLETS_DIR"]

#: One folder per example weblet.
WEBLETS_DIR = Path(__file__).resolve().parent / "weblets"
