"""The probe against fake cgroup trees in temporary folders: v2, v1, child groups, unlimited,
missing."""

import os

import pytest

from liroo.governor.probe import MB, MemoryProbe, find_cgroup
from tests.cgroupfake import V1_MOUNTINFO, V2_MOUNTINFO, fake_proc, v1_group, v2_group, write


def probe_of(root, source, limit_bytes):
    """The probe on the fake tree at ``root``, having found where to read and the limit."""
    probe = MemoryProbe(root)
    assert probe.source == source and probe.limit_bytes == limit_bytes
    return probe


def test_v2_working_set_and_limit(tmp_path):
    root = str(tmp_path)
    fake_proc(root, "0::/\n", V2_MOUNTINFO)
    v2_group(root, "", current=600 * MB, maxv=1024 * MB, inactive=100 * MB)
    probe = probe_of(root, "cgroup_v2", 1024 * MB)
    assert probe.used_bytes() == 500 * MB  # usage minus inactive_file
    assert probe.rss_bytes() == 2560 * os.sysconf("SC_PAGE_SIZE")


def test_v2_child_group_inherits_parent_limit(tmp_path):
    root = str(tmp_path)
    fake_proc(root, "0::/kubepods/pod1/app\n", V2_MOUNTINFO)
    v2_group(root, "", current=10, maxv="max", inactive=0)
    v2_group(root, "kubepods/pod1", current=900 * MB, maxv=2048 * MB, inactive=0)
    v2_group(root, "kubepods/pod1/app", current=300 * MB, maxv="max", inactive=50 * MB)
    probe = probe_of(root, "cgroup_v2", 2048 * MB)
    assert probe.cgroup.path.endswith("kubepods/pod1/app")
    assert probe.used_bytes() == 250 * MB


def test_v2_unlimited_falls_back_to_rss(tmp_path):
    root = str(tmp_path)
    fake_proc(root, "0::/\n", V2_MOUNTINFO, rss_pages=1000)
    v2_group(root, "", current=600 * MB, maxv="max", inactive=0)
    assert probe_of(root, "rss", None).used_bytes() == 1000 * os.sysconf("SC_PAGE_SIZE")


def test_v1_uses_total_inactive_file_and_hierarchical_limit(tmp_path):
    root = str(tmp_path)
    fake_proc(root, "4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/\n", V1_MOUNTINFO)
    # The group's own limit is unlimited, its parent's (hierarchical) is 3 GiB.
    v1_group(
        root,
        "docker/abc",
        usage=1200 * MB,
        limit=9223372036854771712,
        inactive=200 * MB,
        hier=3072 * MB,
    )
    assert probe_of(root, "cgroup_v1", 3072 * MB).used_bytes() == 1000 * MB


def test_v1_container_namespace_mount_root(tmp_path):
    # Inside a container the mount's root is the container's own group and
    # /proc/self/cgroup shows the full path: the probe must not double it.
    root = str(tmp_path)
    mountinfo = "35 30 0:31 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    fake_proc(root, "4:memory:/docker/abc\n", mountinfo)
    v1_group(root, "", usage=700 * MB, limit=1024 * MB, inactive=0)
    assert probe_of(root, "cgroup_v1", 1024 * MB).used_bytes() == 700 * MB


def test_v1_unlimited_value_is_unlimited(tmp_path):
    root = str(tmp_path)
    fake_proc(root, "4:memory:/\n", V1_MOUNTINFO)
    v1_group(root, "", usage=700 * MB, limit=9223372036854771712, inactive=0)
    probe_of(root, "rss", None)


def test_hybrid_prefers_v1_memory_when_v2_has_no_memory_controller(tmp_path):
    root = str(tmp_path)
    mountinfo = V1_MOUNTINFO + "40 30 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    fake_proc(root, "4:memory:/job\n0::/\n", mountinfo)
    write(root, "sys/fs/cgroup/unified/cgroup.procs", "1\n")  # a v2 tree without memory files
    v1_group(root, "job", usage=100 * MB, limit=512 * MB, inactive=0)
    assert probe_of(root, "cgroup_v1", 512 * MB).cgroup.version == 1


def test_missing_cgroup_uses_rss(tmp_path):
    root = str(tmp_path)
    write(root, "proc/self/statm", "100 42 0 0 0 0 0\n")
    assert find_cgroup(root) is None
    probe = probe_of(root, "rss", None)
    assert probe.used_bytes() == 42 * os.sysconf("SC_PAGE_SIZE")
    details = probe.details()
    assert details["cgroup"] is None and details["source"] == "rss"


def test_readings_follow_the_files(tmp_path):
    """The probe keeps its files open and re-reads them (pread), so new figures show up."""
    root = str(tmp_path)
    fake_proc(root, "0::/\n", V2_MOUNTINFO)
    v2_group(root, "", current=100 * MB, maxv=1024 * MB, inactive=0)
    probe = MemoryProbe(root)
    assert probe.used_bytes() == 100 * MB
    # Rewrite in place (same inode), as the kernel's files behave.
    with open(os.path.join(root, "sys/fs/cgroup/memory.current"), "r+") as fh:
        fh.write(f"{300 * MB}\n")
    assert probe.used_bytes() == 300 * MB


def test_real_machine_probe_is_sane():
    probe = MemoryProbe()
    assert probe.rss_bytes() > 5 * MB
    assert probe.used_bytes() > 0
    if probe.cgroup is None:
        pytest.skip("no memory cgroup on this machine")
    assert probe.details()["cgroup"]["usage_bytes"] > 0
