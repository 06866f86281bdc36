"""``python -m workers --spec JSON``: a worker started as a plain subprocess.

The fork server (``workers.forkserver``) is the fast path; this is the
fallback the launcher uses when the fork server is unavailable. The spec is
the same JSON object the fork server receives.
"""

from __future__ import annotations

import argparse
import json
import os

from .worker import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description="An ocapd worker speaking CapTP on stdin/stdout.")
    parser.add_argument("--spec", required=True, help='JSON: {"name", "level", "workdir", "log_path", "bundle_dir"}')
    args = parser.parse_args()
    from .confine import die_with_parent

    die_with_parent(os.getppid())  # the daemon: no worker outlives it
    serve(json.loads(args.spec))


if __name__ == "__main__":
    main()
