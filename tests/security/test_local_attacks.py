"""Attacks from another local user of a shared host (not from the sandbox): the uid-lock directory
in /tmp, and the kernel's ipc sockets.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from l0_env.kernel.sandbox import SandboxUnavailable, UidLease

from .conftest import assert_env_works, cell_text, kernel_of, step

OTHER_UID = 65534  # nobody: "another user"


# -- the uid-lock directory --------------------------------------------------------------------------


def test_a_planted_symlink_as_the_lock_dir_is_refused(tmp_path):
    """Another user creates /tmp/l0_env-uids first, as a symlink to a directory of their choice:
    root would create (and truncate-open) its lock files there."""
    target = tmp_path / "victim"
    target.mkdir(mode=0o700)
    planted = tmp_path / "l0_env-uids"
    planted.symlink_to(target)
    with pytest.raises(SandboxUnavailable, match="symlink"):
        UidLease(planted)
    assert list(target.iterdir()) == [], "lock files were created where the symlink points"


def test_a_lock_dir_owned_by_another_user_is_refused(tmp_path):
    """Owned by someone else, they could hold every uid's lock or plant links inside."""
    planted = tmp_path / "l0_env-uids"
    planted.mkdir(mode=0o700)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(SandboxUnavailable, match=f"owned by uid {OTHER_UID}"):
        UidLease(planted)
    assert list(planted.iterdir()) == []


def test_a_lock_dir_others_can_write_is_refused(tmp_path):
    planted = tmp_path / "l0_env-uids"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(SandboxUnavailable, match="0777"):
        UidLease(planted)


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    lock_dir = tmp_path / "uids"
    lock_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for uid in range(2_100_000, 2_100_000 + 4096):  # whichever uid this process tries first
        (lock_dir / str(uid)).symlink_to(victim)
    with pytest.raises(SandboxUnavailable, match="lock file"):
        UidLease(lock_dir)
    assert victim.read_text() == "keep me"


def test_a_private_lock_dir_works_and_is_created_0700(tmp_path):
    lock_dir = tmp_path / "fresh" / "uids"
    first, second = UidLease(lock_dir), UidLease(lock_dir)
    try:
        assert first.uid != second.uid
        assert (lock_dir.stat().st_mode & 0o777) == 0o700 and lock_dir.stat().st_uid == os.geteuid()
    finally:
        first.release()
        second.release()


# -- the kernel's sockets ------------------------------------------------------------------------------


def test_a_client_without_the_key_cannot_run_code_in_the_kernel(env):
    """Jupyter messages are signed with a per-kernel random key (HMAC-SHA256) that only the host and
    the kernel hold (the 0600 connection file). A process that reaches the kernel's shell socket but
    lacks the key sends an execute_request: the kernel drops it, runs nothing, sends no reply.
    (Before: an empty key, nothing signed, and the forged cell ran.)"""
    kernel = kernel_of(env)
    info = json.loads(Path(kernel.runtime_dir, "kernel.json").read_text())
    marker = f"/home/agent/forged-{uuid.uuid4().hex}"
    intruder = BlockingKernelClient()
    intruder.load_connection_info({**info, "key": uuid.uuid4().hex})  # the connection, not the key
    intruder.start_channels(iopub=False, stdin=False, hb=False, control=False)
    try:
        forged_id = intruder.execute(f"open({marker!r}, 'w').write('forged')")
        # Then a correctly signed request on the same connection: the kernel handles one
        # connection's requests in order, so once this one is answered the forged one was handled.
        intruder.session.key = info["key"].encode()
        probe_id = intruder.kernel_info()
        replies = []
        while not any(r["parent_header"].get("msg_id") == probe_id for r in replies):
            replies.append(intruder.get_shell_msg(timeout=60))
        assert forged_id not in [r["parent_header"].get("msg_id") for r in replies]
    finally:
        intruder.stop_channels()
    _, _, info_step = step(env, f"import os\nprint('forged file', os.path.exists({marker!r}))")
    assert "forged file False" in cell_text(info_step), cell_text(info_step)
    assert len(info["key"]) >= 32 and info["signature_scheme"] == "hmac-sha256"
    assert Path(kernel.runtime_dir, "kernel.json").stat().st_mode & 0o077 == 0
    assert_env_works(env)
