"""Per-worker resource budgets: memory (shared memory included), tasks, scratch and log size.

A budget is plain data chosen by power level (``DEFAULT_LIMITS``) and may be
overridden per worker (``WorkerSpec.limits``). Each number is enforced by
the kernel, not by polling:

- ``memory_bytes``: a memory cgroup for the worker alone. It charges
  everything the worker touches, anonymous memory, memfd and SysV shared
  memory and its scratch tmpfs included; above it the kernel's OOM killer
  ends that worker (and only it).
- ``tasks``: the pids cgroup's ``pids.max`` (threads count as tasks). A
  thread that would exceed it fails to start (``EAGAIN``), in that worker only.
- ``scratch_bytes``: the size of the worker's private tmpfs scratch folder;
  writes beyond it fail with ``ENOSPC``.
- ``log_bytes``: how much of the worker's output the daemon writes to its
  log file in one incarnation; then a note says the limit was reached and
  the worker's output channel is closed.

``None`` for a field means "no limit".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["WorkerLimits", "DEFAULT_LIMITS", "limits_for", "format_bytes"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class WorkerLimits:
    memory_bytes: int | None = None
    tasks: int | None = None
    scratch_bytes: int | None = None
    log_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> WorkerLimits:
        return cls(**(data or {}))


#: Budgets by power level. Confined levels: a Python worker with trio needs
#: ~25 MiB resident and a handful of threads; 1 GiB and 256 tasks leave room
#: for real work (numpy, a thread pool) while one worker can no longer take
#: the machine's memory or PID space. 256 MiB of scratch (in memory, counted
#: in the memory budget) and 16 MiB of log per incarnation. HOST workers
#: were trusted by the user and get no budget, as before.
DEFAULT_LIMITS: dict[str, WorkerLimits] = {
    "NONE": WorkerLimits(memory_bytes=1024 * MiB, tasks=256, scratch_bytes=256 * MiB, log_bytes=16 * MiB),
    "ENDO": WorkerLimits(memory_bytes=1024 * MiB, tasks=256, scratch_bytes=256 * MiB, log_bytes=16 * MiB),
    "CUSTOM": WorkerLimits(memory_bytes=1024 * MiB, tasks=256, scratch_bytes=256 * MiB, log_bytes=16 * MiB),
    "HOST": WorkerLimits(),
}


def limits_for(level: str, override: WorkerLimits | None = None) -> WorkerLimits:
    return override if override is not None else DEFAULT_LIMITS.get(level, WorkerLimits())


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
