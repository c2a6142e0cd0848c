"""The kernel's seccomp filter: system calls a sandboxed kernel is refused, compiled by libseccomp.

bubblewrap loads the filter (``--seccomp FD``) just before it runs the kernel, so it covers the
kernel and everything the kernel starts; a filter cannot be removed, only narrowed. Everything not
listed is allowed: the list below is what an agent used (or could use) to reach past the other
limits, plus kernel attack surface that no notebook needs.

Each refused call fails with an error (``EPERM``; ``ENOSYS`` for ``clone3``), never a kill, so the
agent sees an ordinary Python exception and the kernel lives on:

* nested namespaces: ``unshare``/``clone`` with any ``CLONE_NEW*`` flag (``unshare -Urm`` then
  mounting a tmpfs of any size held host memory past every limit), ``setns``; ``clone3`` passes its
  flags in memory a filter cannot read, so it answers ``ENOSYS`` and glibc falls back to ``clone``;
* mounts: ``mount``, ``umount2``, ``pivot_root``, ``chroot`` and the new mount API;
* the kernel keyring (``add_key``, ``request_key``, ``keyctl``): keys outlive the sandbox and are
  shared by uid, so they carried data from one episode into the next;
* memory that ``RLIMIT_AS`` does not count: ``memfd_create`` (written with ``write()``, never
  mapped), ``memfd_secret``, System V shared memory (a segment outlives its mapping);
* other processes' memory and tracing: ``ptrace``, ``process_vm_readv/writev``,
  ``process_madvise``, ``kcmp``, ``pidfd_getfd``;
* kernel attack surface: ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*`` (its
  operations bypass seccomp), module loading, ``kexec``, ``reboot``, swap, accounting, quotas,
  ``syslog``, ``open_by_handle_at``, ``iopl``/``ioperm`` and other legacy calls;
* ``AF_VSOCK`` sockets (not confined by the network namespace: they reach the hypervisor), and the
  terminal-injection ``ioctl`` ``TIOCSTI``/``TIOCLINUX``.

Other architectures' system calls (32-bit ``int 0x80`` on x86_64, AArch32 on arm64) fail with
``ENOSYS``: the filter knows only the native table. Only x86_64 and aarch64 are supported; elsewhere
:func:`filter_program` raises :class:`SeccompUnavailable` with the reason.

libseccomp (``libseccomp.so.2``, present wherever systemd is) resolves names to numbers per
architecture and emits the BPF; we use its C API through ctypes, no Python package needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from dataclasses import dataclass

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
SUPPORTED_ARCHES = {AUDIT_ARCH_X86_64: "x86_64", AUDIT_ARCH_AARCH64: "aarch64"}

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# clone(2)'s low byte is the exit signal, so CLONE_NEWTIME (0x80) is only a flag for unshare(2).
CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)
AF_VSOCK = 40
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

# Refused outright with EPERM. Names libseccomp does not know for this architecture are skipped.
REFUSED = (
    # namespaces and mounts
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    # the keyring
    "add_key",
    "request_key",
    "keyctl",
    # memory outside RLIMIT_AS
    "memfd_create",
    "memfd_secret",
    "shmget",
    "shmat",
    # other processes
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
    # kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "open_by_handle_at",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vhangup",
    "iopl",
    "ioperm",
    "fanotify_init",
)
# Newer than the libseccomp releases in circulation know; numbers from 424 up are the same on every
# architecture (the unified syscall table, Linux 5.1+).
UNIFIED_NUMBERS = {"open_tree_attr": 467}


class SeccompUnavailable(RuntimeError):
    """No seccomp filter can be built here (unsupported architecture, or libseccomp missing)."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class Rule:
    """One refusal: ``syscall`` fails with ``errno_value`` when every ``(arg, mask, value)`` holds
    (``arg & mask == value``); with no conditions it always fails."""

    syscall: str
    errno_value: int = errno.EPERM
    conditions: tuple[tuple[int, int, int], ...] = ()


def rules() -> list[Rule]:
    """The whole policy as data (pure): what :func:`filter_program` compiles."""
    out = [Rule(name) for name in REFUSED]
    # Rules for one call are OR'd: one per flag, each "this bit is set".
    for flag in (*CLONE_NAMESPACE_FLAGS, CLONE_NEWTIME):
        out.append(Rule("unshare", conditions=((0, flag, flag),)))
    for flag in CLONE_NAMESPACE_FLAGS:
        out.append(Rule("clone", conditions=((0, flag, flag),)))  # flags are arg 0 on x86_64 and arm64
    out.append(Rule("clone3", errno_value=errno.ENOSYS))
    out.append(Rule("socket", errno_value=errno.EAFNOSUPPORT, conditions=((0, 0xFFFFFFFF, AF_VSOCK),)))
    for request in (TIOCSTI, TIOCLINUX):  # ioctl's request is an int: ignore the upper 32 bits
        out.append(Rule("ioctl", conditions=((1, 0xFFFFFFFF, request),)))
    return out


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(
            f"libseccomp not found ({exc}); install it: apt-get install -y libseccomp2"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _errno_action(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)  # SCMP_ACT_ERRNO(value)


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes:
    """The compiled filter: a classic-BPF program (``struct sock_filter[]``) for ``bwrap --seccomp``.

    Raises:
        SeccompUnavailable: not x86_64/aarch64, or libseccomp cannot be loaded or fails.
    """
    lib = _libseccomp()
    arch = lib.seccomp_arch_native()
    if arch not in SUPPORTED_ARCHES:
        raise SeccompUnavailable(
            f"the seccomp policy supports x86_64 and aarch64 only (this machine: {os.uname().machine})"
        )
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, _errno_action(errno.ENOSYS)), "attr")
        for rule in rules():
            number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if number < 0:  # unknown here (-1) or a pseudo number: absent on this architecture
                number = UNIFIED_NUMBERS.get(rule.syscall, -1)
                if number < 0:
                    continue
            conditions = (_ArgCmp * max(len(rule.conditions), 1))()
            for i, (arg, mask, value) in enumerate(rule.conditions):
                conditions[i] = _ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value)
            action = _errno_action(rule.errno_value)
            _check(
                lib.seccomp_rule_add_array(ctx, action, number, len(rule.conditions), conditions),
                f"rule for {rule.syscall}",
            )
        fd = os.memfd_create("l0-seccomp-export", os.MFD_CLOEXEC)
        try:
            _check(lib.seccomp_export_bpf(ctx, fd), "export")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SeccompUnavailable(f"libseccomp failed ({what}): {os.strerror(-rc)}")


def program_fd() -> int:
    """A fresh file descriptor holding :func:`filter_program`, positioned at 0 (bwrap reads it to
    EOF); the caller passes it to the child and closes it afterwards."""
    program = filter_program()
    fd = os.memfd_create("l0-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def syscall_number(name: str) -> int:
    """The native number of system call ``name`` (for probes that call it through ``syscall(2)``).

    Raises:
        SeccompUnavailable: libseccomp is missing, or the call does not exist here.
    """
    number = _libseccomp().seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        number = UNIFIED_NUMBERS.get(name, -1)
    if number < 0:
        raise SeccompUnavailable(f"no system call {name!r} on {os.uname().machine}")
    return number
