"""workers: untrusted code in subprocesses, confined by what the OS offers.

A worker (``python -m workers``, or a child of the fork server) serves a
``WorkerFacet`` over CapTP on its pipes: ``evaluate``, ``make_unconfined``,
``make_bundle``, ``terminate``, ``info``. The daemon starts workers with a
``Launcher`` (one per daemon; it owns the fork server) and ``open_worker``.
``probe()`` reports which confinement this machine supports.
"""

from .bundle import BundleError, extract_bundle
from .confine import probe
from .launch import Launcher, Worker, WorkerSpec, WorkerStartError, open_worker
from .limits import DEFAULT_LIMITS, WorkerLimits

__all__ = [
    "BundleError",
    "DEFAULT_LIMITS",
    "WorkerLimits",
    "Launcher",
    "Worker",
    "WorkerSpec",
    "WorkerStartError",
    "extract_bundle",
    "open_worker",
    "probe",
]
