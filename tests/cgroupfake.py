"""Fake cgroup trees in a temporary folder, read by the real probe (``MemoryProbe(root)``)."""
import os

from liroo.governor.probe import MB

V2_MOUNTINFO = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate\n"
)
V1_MOUNTINFO = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
    "35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup "
    "rw,memory\n"
    "36 30 0:32 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup "
    "rw,cpu\n"
)


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def fake_proc(root, cgroup, mountinfo, rss_pages=2560):
    write(root, "proc/self/cgroup", cgroup)
    write(root, "proc/self/mountinfo", mountinfo)
    write(root, "proc/self/statm", _statm(rss_pages))


def _statm(rss_pages: int) -> str:
    return f"100000 {rss_pages:<12} 300 1 0 500 0\n"  # fixed width: rewritten in place


def group(root, folder, files):
    """One cgroup's files (name: content), each ending in a newline as the kernel's do."""
    for name, content in files.items():
        write(root, os.path.join(folder, name), f"{content}\n")


def v2_group(root, rel, current, maxv, inactive):
    stat = f"anon 1000\nfile 2000\nactive_file 5\ninactive_file {inactive}\nslab 7"
    files = {"memory.current": current, "memory.max": maxv, "memory.stat": stat}
    group(root, os.path.join("sys/fs/cgroup", rel), files)


def v1_group(root, rel, usage, limit, inactive, hier=None):
    stat = (
        "cache 10\nrss 20\ninactive_file 1\n"
        f"hierarchical_memory_limit {hier if hier is not None else limit}\n"
        f"total_cache 10\ntotal_rss 20\ntotal_inactive_file {inactive}"
    )
    files = {"memory.usage_in_bytes": usage, "memory.limit_in_bytes": limit, "memory.stat": stat}
    group(root, os.path.join("sys/fs/cgroup/memory", rel), files)


class FakeCgroupV2:
    """A v2 tree whose memory figures a test sets; the probe reads them like the kernel's."""

    def __init__(self, root, limit_mb=1024, used_mb=100):
        self.root = str(root)
        fake_proc(self.root, "0::/\n", V2_MOUNTINFO)
        v2_group(self.root, "", current=int(used_mb * MB), maxv=int(limit_mb * MB), inactive=0)

    def set_rss(self, mb):
        """This process's resident set as /proc/self/statm shows it (written in place)."""
        with open(os.path.join(self.root, "proc/self/statm"), "r+") as fh:
            fh.write(_statm(int(mb * MB) // os.sysconf("SC_PAGE_SIZE")))

    def set_used(self, mb):
        # One fixed-width write in place, never an empty file: a probe reading at that
        # moment would fall back to RSS and a test would see a wrong figure.
        with open(os.path.join(self.root, "sys/fs/cgroup/memory.current"), "r+") as fh:
            fh.write(f"{int(mb * MB):<20}\n")
