"""Memory readings: what the OOM killer sees, read cheaply enough for every request.

The kernel (and so Cloud Run) kills on the container's cgroup total, which
covers every worker plus files in the in-memory filesystem. So the figure the
governor acts on is the cgroup's working set (usage minus inactive page cache,
the figure kubelet and cAdvisor use too) against the cgroup's limit. Without a
visible limit it falls back to this process's RSS.

Hand-written rather than psutil: psutil reads neither cgroup files nor keeps a
file open, and costs 13-35 us per call against ~1 us here. psutil still gives
the detailed figures of ``details()`` when it is installed.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number;
# anything this large is treated as unlimited.
_V1_UNLIMITED = 1 << 62
# inactive_file moves slowly; re-reading memory.stat on every request would
# triple the cost of a reading for no real precision.
_STAT_REFRESH_S = 0.25
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024


@dataclass(frozen=True)
class CgroupMemory:
    """Where this process's memory cgroup lives and which interface it speaks."""

    version: int  # 1 or 2
    path: str  # the group's folder
    limit_bytes: int | None  # effective limit; None when unlimited


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("ascii", "replace")
    except OSError:
        return None


def _stat_value(text: str | None, key: str) -> int | None:
    if not text:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    raw = raw.strip()
    if not raw or raw == "max":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return None if value <= 0 or value >= _V1_UNLIMITED else value


def _mounts(root: str) -> list[tuple[str, str, str, str]]:
    """(mount root within the hierarchy, mount point, fs type, super options) from mountinfo."""
    text = _read(os.path.join(root, "proc/self/mountinfo")) or ""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3:
            mounts.append((fields[3], fields[4], rfields[0], rfields[2]))
    return mounts


def _group_dir(root: str, mount_point: str, mount_root: str, group: str) -> str | None:
    """The folder of ``group`` under a mount whose root is ``mount_root``.

    The group path in /proc/self/cgroup is relative to the hierarchy's root;
    inside a container the mount often starts deeper (or the namespace hides
    the prefix). Try the exact place, then climb towards the mount point.
    """
    base = os.path.join(root, mount_point.lstrip("/"))
    rel = group
    if mount_root not in ("/", "") and (
        group == mount_root or group.startswith(mount_root.rstrip("/") + "/")
    ):
        rel = group[len(mount_root.rstrip("/")) :]
    rel = rel.strip("/")
    while True:
        candidate = os.path.join(base, rel) if rel else base
        if os.path.isdir(candidate):
            return candidate
        if not rel:
            return None
        rel = rel.rpartition("/")[0]


def find_cgroup(root: str = "/") -> CgroupMemory | None:
    """Locate this process's memory cgroup (v2 preferred, then v1), or None."""
    cgroup_text = _read(os.path.join(root, "proc/self/cgroup")) or ""
    v2_group = v1_group = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2_group = path
        elif "memory" in controllers.split(","):
            v1_group = path
    mounts = _mounts(root)
    if not mounts:  # no mountinfo: assume the standard places
        mounts = [
            ("/", "/sys/fs/cgroup", "cgroup2", "rw"),
            ("/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
        ]

    if v2_group is not None:
        for mount_root, point, fstype, _ in mounts:
            if fstype != "cgroup2":
                continue
            path = _group_dir(root, point, mount_root, v2_group)
            if path and os.path.exists(os.path.join(path, "memory.current")):
                base = os.path.join(root, point.lstrip("/"))
                return CgroupMemory(2, path, _v2_limit(path, base))
    if v1_group is not None:
        for mount_root, point, fstype, options in mounts:
            if fstype != "cgroup" or "memory" not in options.split(","):
                continue
            path = _group_dir(root, point, mount_root, v1_group)
            if path and os.path.exists(os.path.join(path, "memory.usage_in_bytes")):
                return CgroupMemory(1, path, _v1_limit(path))
    return None


def _v2_limit(path: str, mount_base: str) -> int | None:
    """The tightest memory.max from the group up to the mount: a child group often has none of its
    own."""
    limit = None
    current = path
    while True:
        value = _parse_limit(_read(os.path.join(current, "memory.max")))
        if value is not None:
            limit = value if limit is None else min(limit, value)
        if os.path.normpath(current) == os.path.normpath(mount_base):
            return limit
        parent = os.path.dirname(current)
        if parent == current or not parent.startswith(os.path.normpath(mount_base)):
            return limit
        current = parent


def _v1_limit(path: str) -> int | None:
    """v1's effective limit: hierarchical_memory_limit covers the ancestors' limits too."""
    own = _parse_limit(_read(os.path.join(path, "memory.limit_in_bytes")))
    hier = _parse_limit(
        str(
            _stat_value(_read(os.path.join(path, "memory.stat")), "hierarchical_memory_limit") or ""
        )
    )
    candidates = [v for v in (own, hier) if v is not None]
    return min(candidates) if candidates else None


class MemoryProbe:
    """Cheap memory readings for one process, from kept-open files read with ``os.pread``.

    ``used_bytes()`` is the figure to act on: the cgroup working set when the
    cgroup has a limit, else this process's RSS. ``limit_bytes`` is the
    cgroup's limit, or None.
    """

    def __init__(self, root: str = "/") -> None:
        self._root = root
        self.cgroup = find_cgroup(root)
        self.limit_bytes = self.cgroup.limit_bytes if self.cgroup else None
        if self.cgroup and self.limit_bytes is not None:
            self.source = f"cgroup_v{self.cgroup.version}"
        else:
            self.source = "rss"
        self._usage_fd = self._stat_fd = None
        if self.cgroup:
            names = (
                ("memory.current", "memory.stat")
                if self.cgroup.version == 2
                else ("memory.usage_in_bytes", "memory.stat")
            )
            self._usage_fd = os.open(os.path.join(self.cgroup.path, names[0]), os.O_RDONLY)
            self._stat_fd = os.open(os.path.join(self.cgroup.path, names[1]), os.O_RDONLY)
        self._inactive_key = (
            b"\ninactive_file "
            if self.cgroup and self.cgroup.version == 2
            else b"\ntotal_inactive_file "
        )
        self._inactive = 0
        self._inactive_at = -1.0
        self.last_used_bytes = 0  # the latest used_bytes() reading, by any thread
        self._statm_fd: int | None = None
        self._statm_lock = threading.Lock()
        self._open_statm()
        if hasattr(os, "register_at_fork"):
            # /proc/self is resolved when a file is opened: a child must reopen it
            # or it would keep reading its parent's figures. A weak reference, so
            # the hook does not keep a discarded probe alive.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (p := ref()) is not None and p._open_statm())

    def _open_statm(self) -> None:
        if self._statm_fd is not None:
            try:
                os.close(self._statm_fd)
            except OSError:
                pass
        try:
            self._statm_fd = os.open(os.path.join(self._root, "proc/self/statm"), os.O_RDONLY)
        except OSError:
            self._statm_fd = None

    # --- hot path ------------------------------------------------------------
    def rss_bytes(self) -> int:
        """This process's resident set size."""
        fd = self._statm_fd
        if fd is not None:
            try:
                data = os.pread(fd, 128, 0)
                return int(data.split(None, 2)[1]) * _PAGE_SIZE
            except (OSError, ValueError, IndexError):
                pass
        return _psutil_rss()

    def cgroup_usage_bytes(self) -> int | None:
        """The cgroup's working set (usage minus inactive page cache), or None without a cgroup."""
        if self._usage_fd is None:
            return None
        try:
            usage = int(os.pread(self._usage_fd, 64, 0))
        except (OSError, ValueError):
            return None
        now = time.monotonic()
        if now - self._inactive_at > _STAT_REFRESH_S:
            self._inactive = self._read_inactive()
            self._inactive_at = now
        return max(usage - self._inactive, 0)

    def used_bytes(self) -> int:
        """The figure the governor acts on (see the class docstring); also kept as
        ``last_used_bytes``."""
        used = self.cgroup_usage_bytes() if self.source != "rss" else None
        if used is None:
            used = self.rss_bytes()
        self.last_used_bytes = used
        return used

    def _read_inactive(self) -> int:
        try:
            data = b"\n" + os.pread(self._stat_fd, 16384, 0)
        except OSError:
            return 0
        start = data.find(self._inactive_key)
        if start < 0:
            return 0
        start += len(self._inactive_key)
        end = data.find(b"\n", start)
        try:
            return int(data[start : end if end >= 0 else None])
        except ValueError:
            return 0

    # --- detail (for /memory, never on the hot path) -----------------------
    def details(self) -> dict:
        """Detailed figures: process memory from psutil (when present) and the cgroup's."""
        out: dict = {"source": self.source, "rss_bytes": self.rss_bytes()}
        try:
            import psutil  # optional: detailed figures only

            proc = psutil.Process()
            info = proc.memory_info()
            out.update(
                rss_bytes=info.rss,
                vms_bytes=info.vms,
                percent=proc.memory_percent(),
                psutil_available=True,
            )
        except Exception:  # psutil missing or unsupported here
            out.update(vms_bytes=None, percent=None, psutil_available=False)
        if self.cgroup:
            try:
                usage = int(os.pread(self._usage_fd, 64, 0))
            except (OSError, ValueError):
                usage = None
            out["cgroup"] = {
                "version": self.cgroup.version,
                "path": self.cgroup.path,
                "usage_bytes": usage,
                "working_set_bytes": self.cgroup_usage_bytes(),
                "limit_bytes": self.limit_bytes,
            }
        else:
            out["cgroup"] = None
        return out

    def close(self) -> None:
        for fd in (self._usage_fd, self._stat_fd, self._statm_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._usage_fd = self._stat_fd = self._statm_fd = None


def _psutil_rss() -> int:
    """Non-Linux fallback."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
