"""Where sandbox cgroups can be made: the parsing of /proc/self/{mountinfo,cgroup} (pure), and the
v1/v2 decision against directory trees shaped like cgroupfs. The real hierarchy of this machine is
exercised by ``test_kernel_escape_attacks.py``; these cover the layouts it does not have.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l0_env.kernel import cgroups
from l0_env.kernel.cgroups import CgroupError, CgroupSupport, SandboxCgroup

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids ro,relatime - cgroup cgroup rw,pids
41 31 0:38 /init.scope /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
PROC_CGROUP = "8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/init.scope/app\n"


def test_parse_mountinfo_and_proc_cgroup():
    mounts = cgroups.parse_mountinfo(MOUNTINFO + "garbage line\n")
    assert ("/sys/fs/cgroup/memory", "/", "cgroup", {"rw", "relatime", "memory"}) in mounts
    pids = next(m for m in mounts if m[0] == "/sys/fs/cgroup/pids")
    assert "ro" in pids[3] and "pids" in pids[3]
    assert next(m for m in mounts if m[2] == "cgroup2")[:3] == (
        "/sys/fs/cgroup/unified",
        "/init.scope",
        "cgroup2",
    )
    assert cgroups.parse_proc_cgroup(PROC_CGROUP) == {
        "pids": "/",
        "memory": "/process_api/abc",
        "cpu": "/x",
        "cpuacct": "/x",
        "": "/init.scope/app",
    }


def test_read_only_v1_pids_makes_v1_unusable():
    support = cgroups._detect_v1(cgroups.parse_mountinfo(MOUNTINFO), cgroups.parse_proc_cgroup(PROC_CGROUP))
    assert not support.available and "/sys/fs/cgroup/pids is mounted read-only" in support.reason


def _v2_tree(root: Path, controllers: str, subtree: str) -> tuple[list, dict]:
    mine = root / "app"
    mine.mkdir(parents=True)
    (mine / "cgroup.controllers").write_text(controllers)
    (mine / "cgroup.subtree_control").write_text(subtree)
    mounts = [(str(root), "/", "cgroup2", {"rw"})]
    return mounts, {"": "/app"}


@pytest.mark.parametrize(
    ("controllers", "subtree", "why"),
    [
        ("cpu io", "", "lacks the memory/pids controller"),
        ("cpu memory pids", "cpu", "not enabled in"),
    ],
)
def test_v2_without_delegated_memory_and_pids_says_why(tmp_path, controllers, subtree, why):
    support = cgroups._detect_v2(*_v2_tree(tmp_path, controllers, subtree))
    assert not support.available and why in support.reason, support.reason


def test_v2_with_delegated_controllers_makes_one_cgroup_with_both_limits(tmp_path):
    support = cgroups._detect_v2(*_v2_tree(tmp_path, "cpu memory pids", "memory pids"))
    assert support == CgroupSupport(2, {"memory": str(tmp_path / "app"), "pids": str(tmp_path / "app")})
    cgroup = SandboxCgroup(support, memory_bytes=123 << 20, max_pids=66, tag="t")
    (directory,) = set(cgroup.dirs.values())
    assert os.path.basename(directory).startswith(f"l0-{os.getpid()}-")
    assert Path(directory, "memory.max").read_text() == str(123 << 20)
    assert Path(directory, "pids.max").read_text() == "66"
    assert cgroup.pids() == []  # a plain directory: no cgroup.procs
    for name in os.listdir(directory):  # cgroupfs removes its files with the directory; a tmpfs not
        os.unlink(os.path.join(directory, name))
    cgroup.remove()
    assert not os.path.exists(directory)


def test_a_cgroup_cannot_be_made_where_none_is_usable():
    with pytest.raises(CgroupError, match="not usable here: no mount"):
        SandboxCgroup(CgroupSupport(0, {}, "no mount"), memory_bytes=1 << 30, max_pids=10)


@pytest.mark.skipif(not cgroups.detect().available, reason="no writable cgroups here")
def test_stale_cgroups_of_dead_host_processes_are_removed():
    """A host process SIGKILLed before close() leaves its empty cgroups; the next one removes them
    (real cgroupfs), but never a live process's or a foreign one."""
    parent = cgroups.detect().parents["memory"]
    dead_pid = 2**22 + 12345  # above the largest pid Linux hands out: never alive
    stale = os.path.join(parent, f"l0-{dead_pid}-0-test")
    mine = os.path.join(parent, f"l0-{os.getpid()}-999999-test")
    for d in (stale, mine):
        os.mkdir(d)
    try:
        cgroups._remove_stale(parent)
        assert not os.path.exists(stale) and os.path.exists(mine)
    finally:
        for d in (stale, mine):
            if os.path.exists(d):
                os.rmdir(d)
