"""One control group per worker: its memory (shared memory included) and its task count.

The daemon's ``Launcher`` finds where it may make cgroups (``Cgroups.discover``)
and makes one per worker *below its own cgroup*, so every worker stays
charged to whatever already bounds the daemon. The worker child joins its
group first thing, before any of its code runs (``join``), and the
launcher removes the group once the worker has been reaped, after reading
why it ended (``WorkerCgroup.exit_reason``).

Both kernels' interfaces are handled:

- cgroup v2 (unified): needs ``memory`` and ``pids`` in the daemon's own
  cgroup's ``cgroup.subtree_control`` (a delegated subtree, e.g. systemd
  ``Delegate=yes``); ``memory.max``, ``memory.swap.max``, ``pids.max``;
- cgroup v1: the ``memory`` and ``pids`` hierarchies; ``memory.limit_in_bytes``
  (and ``memory.memsw.limit_in_bytes`` when swap accounting exists), ``pids.max``.

The memory controller charges shmem pages (memfd, SysV shm, tmpfs) to the
group of the task that first touches them, so a worker's shared memory and
its scratch tmpfs count against its own budget.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from .limits import WorkerLimits, format_bytes

__all__ = ["Cgroups", "WorkerCgroup", "join"]

CONTROLLERS = ("memory", "pids")


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    return own


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of each cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if rfields and rfields[0] in ("cgroup", "cgroup2"):
                found.append((fields[4], rfields[0], set(rfields[2].split(",")) if len(rfields) > 2 else set()))
    return found


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class WorkerCgroup:
    """A worker's group: one folder (v2) or one per controller (v1)."""

    version: int
    folders: dict[str, Path]  # controller -> folder (v2: the same folder for both)
    limits: WorkerLimits

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(folder / "cgroup.procs") for folder in self.folders.values()})

    def _counter(self, controller: str, file: str, key: str) -> int:
        folder = self.folders.get(controller)
        if folder is None:
            return 0
        try:
            for line in (folder / file).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def oom_kills(self) -> int:
        return self._counter("memory", "memory.events" if self.version == 2 else "memory.oom_control", "oom_kill")

    def task_limit_hits(self) -> int:
        return self._counter("pids", "pids.events", "max")

    def exit_reason(self) -> str | None:
        """Why the worker ended, if one of its limits ended it (read before ``remove``)."""
        if self.oom_kills() and self.limits.memory_bytes:
            return f"killed by the kernel: memory limit of {format_bytes(self.limits.memory_bytes)} reached (shared memory and scratch included)"
        return None

    def remove(self) -> bool:
        """Remove the group (empty once its worker was reaped); False if the kernel still holds it."""
        gone = True
        for folder in set(self.folders.values()):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                gone = False
        return gone


@dataclass
class Cgroups:
    """Where this daemon makes its workers' groups."""

    version: int
    bases: dict[str, Path]  # controller -> the daemon's folder for worker groups
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def discover(cls) -> tuple[Cgroups | None, str]:
        """Find a writable place for worker groups below this process's own cgroup, or say why not."""
        try:
            own, mounts = _own_cgroups(), _mounts()
        except OSError as e:
            return None, f"cannot read this process's cgroups: {e}"
        tag = f"ocapd-{os.getpid()}"
        reasons = []
        # cgroup v2, when the daemon's own group delegates memory and pids.
        for point, fstype, _opts in mounts:
            if fstype != "cgroup2" or "" not in own:
                continue
            mine = Path(point) / own[""].lstrip("/")
            try:
                enabled = set((mine / "cgroup.subtree_control").read_text().split())
            except OSError as e:
                reasons.append(f"cgroup v2 at {point}: {e}")
                continue
            if not set(CONTROLLERS) <= enabled:
                try:
                    _write(mine / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
                except OSError as e:
                    available = (mine / "cgroup.controllers").read_text().split() if (mine / "cgroup.controllers").exists() else []
                    reasons.append(
                        f"cgroup v2 at {point}: memory and pids are not delegated to {mine} "
                        f"(available: {' '.join(available) or 'none'}; enabling: {e.strerror})"
                    )
                    continue
            _sweep_stale(mine)
            return cls(2, {c: mine for c in CONTROLLERS}), ""
        # cgroup v1: one hierarchy per controller.
        bases: dict[str, Path] = {}
        for point, fstype, opts in mounts:
            for controller in CONTROLLERS:
                if fstype == "cgroup" and controller in opts and controller in own:
                    _sweep_stale(Path(point) / own[controller].lstrip("/"))
        for controller in CONTROLLERS:
            hierarchy = next((p for p, fstype, opts in mounts if fstype == "cgroup" and controller in opts), None)
            if hierarchy is None or controller not in own:
                reasons.append(f"cgroup v1: no {controller} hierarchy")
                continue
            base = Path(hierarchy) / own[controller].lstrip("/") / tag
            try:
                base.mkdir(exist_ok=True)
            except OSError as e:
                reasons.append(f"cgroup v1 {controller}: cannot create {base}: {e.strerror}")
                continue
            bases[controller] = base
        if set(bases) == set(CONTROLLERS):
            return cls(1, bases), ""
        for base in bases.values():
            try:
                base.rmdir()
            except OSError:
                pass
        return None, "; ".join(reasons) or "no cgroup file system mounted"

    def create(self, name: str, limits: WorkerLimits) -> WorkerCgroup:
        """Make a group for one worker with ``limits`` written; raises OSError if the kernel refuses."""
        leaf = f"{name}-{next(self._names)}"
        if self.version == 2:
            folder = self.bases["memory"] / f"ocapd-{os.getpid()}-{leaf}"
            folders = dict.fromkeys(CONTROLLERS, folder)
        else:
            folders = {c: self.bases[c] / leaf for c in CONTROLLERS}
        group = WorkerCgroup(self.version, folders, limits)
        try:
            for folder in set(folders.values()):
                folder.mkdir()
            memory, pids = folders["memory"], folders["pids"]
            if limits.memory_bytes:
                if self.version == 2:
                    _write(memory / "memory.max", str(limits.memory_bytes))
                    if (memory / "memory.swap.max").exists():
                        _write(memory / "memory.swap.max", "0")
                else:
                    _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
                    if (memory / "memory.memsw.limit_in_bytes").exists():
                        _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            if limits.tasks:
                _write(pids / "pids.max", str(limits.tasks))
        except OSError:
            group.remove()
            raise
        return group

    def leftovers(self) -> list[Path]:
        """Worker groups that still exist (for tests and ``aclose``)."""
        if self.version == 2:
            base = self.bases["memory"]
            return sorted(p for p in base.glob(f"ocapd-{os.getpid()}-*") if p.is_dir())
        return sorted(p for base in self.bases.values() if base.exists() for p in base.iterdir() if p.is_dir())

    def close(self) -> None:
        """Remove every group this daemon made (their workers are gone by now)."""
        for folder in self.leftovers():
            try:
                folder.rmdir()
            except OSError:
                pass
        if self.version == 1:
            for base in self.bases.values():
                try:
                    base.rmdir()
                except OSError:
                    pass


def _sweep_stale(parent: Path) -> None:
    """Remove groups left by a daemon that was killed (``ocapd-<pid>``, ``ocapd-<pid>-…``, pid gone).

    Only empty groups can be removed: a group with a live process stays."""
    try:
        entries = list(parent.glob("ocapd-*"))
    except OSError:
        return
    for folder in entries:
        pid = folder.name.split("-")[1] if folder.name.count("-") >= 1 else ""
        if not pid.isdigit() or int(pid) == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        for child in [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []:
            try:
                child.rmdir()
            except OSError:
                pass
        try:
            folder.rmdir()
        except OSError:
            pass


def join(procs_files: list[str], limits: dict[str, int | None]) -> dict[str, object]:
    """In the worker child: move this process into its group. Report what holds."""
    try:
        for path in procs_files:
            _write(Path(path), "0")
    except OSError as e:
        return {"applied": False, "reason": f"joining {path}: {e.strerror}"}
    return {"applied": True, "memory_bytes": limits.get("memory_bytes"), "tasks": limits.get("tasks"), "groups": procs_files}
