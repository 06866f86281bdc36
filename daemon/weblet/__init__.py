"""Weblets as data: a bundle read and checked, its manifest, and the CSP derived from it.

A weblet bundle is untrusted input in one of three shapes -- a zip holding
``weblet.json`` and the UI's files (and optionally a Python backend), a folder
of the same layout, or a single HTML file declaring its manifest in ``<meta>``
tags. The rooms:

- ``manifest`` -- the strict schema of ``weblet.json`` (:class:`WebletManifest`,
  :func:`parse_manifest`) and what a path in a weblet may be;
- ``bundle`` -- :func:`read_bundle` and :class:`Bundle`: zips through the one
  archive reader shared with workers (``ocapd.workers.archive``, which also
  holds the limits), folders, and the stored and backend zips;
- ``single_html`` -- the ``<meta>`` tag form;
- ``csp`` -- the Content-Security-Policy header and the iframe ``allow=``.

Every refusal is a :class:`BundleError` with a one-line message. The
registry of installed weblets is elsewhere (``ocapd.daemon.weblets``).
"""

from ocapd.workers.archive import BundleError

from .bundle import MAX_BACKEND_FILES, MAX_BACKEND_SIZE, Bundle, read_bundle
from .csp import connection_allowlist, csp_for, permissions_allow
from .manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, PERMISSIONS, Command, Csp, Event, Interface, Size, WebletManifest, parse_manifest

__all__ = [
    "BundleError", "Bundle", "WebletManifest", "Size", "Csp", "Interface", "Command", "Event",
    "read_bundle", "parse_manifest", "csp_for", "connection_allowlist", "permissions_allow",
    "MANIFEST_NAME", "PERMISSIONS", "MAX_MANIFEST_SIZE", "MAX_BACKEND_FILES", "MAX_BACKEND_SIZE",
]  # fmt: skip
