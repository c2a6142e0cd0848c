"""Which sandbox protections are active on this machine, each checked for real.

``python -m l0_env.kernel --report`` prints one line per protection (bubblewrap, namespaces,
rlimits, the seccomp filter, the memory + pids cgroup): active or INACTIVE, and the evidence. The
seccomp line runs a probe sandbox that tries calls the filter must refuse; the cgroup line makes a
sandbox cgroup, runs the probe inside it and reads back the memory it charged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from . import cgroups, seccomp
from .cgroups import SandboxCgroup
from .sandbox import SandboxLimits, check_bwrap, host_is_root, probe

# Run inside a probe sandbox: each call the filter must refuse, and the errno it got (0: allowed).
_PROBE_CODE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(f, *args):
    ctypes.set_errno(0)
    return 0 if f(*args) >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())
out = {}
out["unshare(CLONE_NEWUSER)"] = call(libc.unshare, 0x10000000)
out["memfd_create"] = call(libc.syscall, NR["memfd_create"], b"probe", 0)
out["add_key"] = call(libc.syscall, NR["add_key"], b"user", b"l0-probe", b"x", 1, -3)
out["shmget"] = call(libc.syscall, NR["shmget"], 0, 1 << 20, 0o1600)
out["clone3"] = call(libc.syscall, NR["clone3"], None, 0)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Protection:
    """One line of the report: a protection, whether it is active here, and the evidence."""

    name: str
    active: bool
    detail: str


def sandbox_report(bwrap: str = "bwrap") -> list[Protection]:
    """Which protections a sandboxed kernel gets on this machine, each checked for real.

    The seccomp line runs a probe sandbox that tries calls the filter must refuse; the cgroup line
    creates a sandbox cgroup, runs the probe inside it and reads back the memory it charged.
    """
    report: list[Protection] = []
    problem = check_bwrap(bwrap)
    report.append(Protection("bubblewrap", problem is None, problem or f"{shutil.which(bwrap)}"))
    if problem is not None:
        return report
    report.append(
        Protection(
            "namespaces",
            True,
            "root host: pid/net/ipc/uts/cgroup unshared, kernel runs as a leased uid (setpriv)"
            if host_is_root()
            else "--unshare-all --disable-userns, kernel runs as this user",
        )
    )
    report.append(Protection("rlimits", True, "address space, processes, file size, open files, no core"))
    support = cgroups.detect()
    cgroup = None
    if support.available:
        try:
            limits = SandboxLimits()
            cgroup = SandboxCgroup(
                support, memory_bytes=limits.sandbox_memory_bytes, max_pids=limits.sandbox_pids, tag="probe"
            )
        except cgroups.CgroupError as exc:
            report.append(Protection("memory+pids cgroup", False, str(exc)))
    else:
        report.append(Protection("memory+pids cgroup", False, support.describe()))
    try:
        numbers = {
            name: seccomp.syscall_number(name) for name in ("memfd_create", "add_key", "shmget", "clone3")
        }
        proc = probe(f"NR = {numbers!r}\n{_PROBE_CODE}", use_seccomp=True, cgroup=cgroup, bwrap=bwrap)
        results = json.loads(proc.stdout.decode().strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (seccomp.SeccompUnavailable, OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        results, why = None, str(exc)
    else:
        why = proc.stderr.decode(errors="replace").strip()[-300:]
    if results is None:
        report.append(Protection("seccomp filter", False, why or "the probe failed"))
    else:
        refused = all(v in ("EPERM", "ENOSYS") for v in results.values())
        evidence = ", ".join(f"{k} {v or 'ALLOWED'}" for k, v in results.items())
        arch = os.uname().machine
        report.append(
            Protection(
                "seccomp filter",
                refused,
                f"{arch}, {len(seccomp.filter_program()) // 8} BPF instructions; probe: {evidence}",
            )
        )
    if cgroup is not None:
        peak = cgroup.memory_peak()
        cgroup.remove()
        ran_inside = bool(peak)
        report.append(
            Protection(
                "memory+pids cgroup",
                ran_inside,
                f"{support.describe()}; memory limit {SandboxLimits().sandbox_memory_bytes >> 20} MiB "
                f"(default), pids.max {SandboxLimits().sandbox_pids}; the probe charged "
                f"{(peak or 0) / 2**20:.1f} MiB to it",
            )
        )
    return report


def format_report(report: list[Protection]) -> str:
    """The report as aligned lines: ``name  active|INACTIVE  detail``."""
    width = max(len(p.name) for p in report)
    return "\n".join(
        f"{p.name:<{width}}  {'active  ' if p.active else 'INACTIVE'}  {p.detail}" for p in report
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m l0_env.kernel --report``: print which protections are active here."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m l0_env.kernel", description=main.__doc__)
    parser.add_argument("--report", action="store_true", help="print which protections are active")
    parser.add_argument("--bwrap", default="bwrap", help="the bubblewrap binary")
    args = parser.parse_args(argv)
    if not args.report:
        parser.print_help()
        return 2
    report = sandbox_report(args.bwrap)
    print(format_report(report))
    return 0 if all(p.active for p in report) else 1
