"""Kernel start: CPU of the kernel's process tree and wall time to "tools installed", per entry point.

    python benchmarks/kernel_start.py                     # bubblewrap sandbox, 10 starts of each
    python benchmarks/kernel_start.py --runs 20 --json /tmp/kernel_start.json

The two entry points (``l0_env/kernel/kernel_main.py``), chosen per start with ``$L0_KERNEL_LAUNCHER``:

* ``l0`` (the default): ipykernel started without Jupyter's debugger (``debugpy`` refused);
* ``ipykernel``: the stock ``python -m ipykernel_launcher``, as before.

Each start is ``SandboxedKernel(KernelConfig(sandbox=..., tools=builtin_stubs()))``: bubblewrap, the
kernel, the handshake and the tools' installation, as an env's reset with ``pool_size=0`` does.

* wall: ``time.perf_counter`` around that constructor;
* kernel CPU: what the kernel's process tree (bubblewrap's two processes and the kernel, from the
  fork that starts them to "tools installed") consumed, read from a cgroup v1 ``cpuacct``
  cgroup: the launcher thread that forks every sandbox (``l0_env/kernel/launcher.py``) is moved
  into a cgroup of this script's, so every process it starts is accounted there from its first
  instruction, to the nanosecond (the thread's own fork is counted too, a millisecond or two).
  Where no writable ``cpuacct`` hierarchy exists, psutil's user+system time of the live tree
  instead (10 ms ticks per process); both are printed when both are available;
* after the measurement (untimed) a cell counts the kernel's modules and checks for ``debugpy``.

Starts alternate ``l0, ipykernel, ipykernel, l0, ...`` round by round after one untimed warm-up
of each, so drift in the (shared) machine's load hits both alike. Medians with the interquartile
range; "ratio" is l0's median over ipykernel's; "paired" is the median per-round difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psutil
from common import machine_line, markdown_table, percentile, uptime, versions, versions_line

from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel.kernel_main import LAUNCHER_ENV
from l0_env.kernel.session import KernelConfig, SandboxedKernel

LAUNCHERS = ("l0", "ipykernel")
VERSIONS_OF = ("l0-gym", "ipykernel", "ipython", "jupyter_client", "pyzmq", "tornado", "debugpy")
LAUNCHER_THREAD = "l0-launcher"  # launcher.py's thread, which forks every sandbox
CPUACCT_ROOT = "/sys/fs/cgroup/cpuacct"
PROBE = "import sys; print(len(sys.modules), 'debugpy' in sys.modules)"


class CpuacctMeter:
    """A cgroup v1 ``cpuacct`` cgroup holding the launcher thread, so every sandbox it forks is
    accounted in it; :meth:`usage_ns` is the total CPU so far.

    Raises:
        OSError: no writable cpuacct hierarchy, or the thread cannot be moved.
    """

    def __init__(self) -> None:
        parent = CPUACCT_ROOT + _v1_path("cpuacct")
        self.path = os.path.join(parent, f"l0-bench-{os.getpid()}")
        self._parent = parent
        os.mkdir(self.path)
        self._tid = _launcher_tid()
        try:
            _write(os.path.join(self.path, "tasks"), self._tid)
        except OSError:
            os.rmdir(self.path)
            raise

    def usage_ns(self) -> int:
        with open(os.path.join(self.path, "cpuacct.usage"), encoding="ascii") as f:
            return int(f.read())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _write(os.path.join(self._parent, "tasks"), self._tid)  # the thread back where it was
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


def _v1_path(controller: str) -> str:
    with open("/proc/self/cgroup", encoding="ascii") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path.rstrip("/")
    raise OSError(f"no cgroup v1 {controller} hierarchy for this process")


def _launcher_tid() -> int:
    for thread in threading.enumerate():
        if thread.name == LAUNCHER_THREAD and thread.native_id is not None:
            return thread.native_id
    raise OSError(f"no {LAUNCHER_THREAD!r} thread (start one kernel first)")


def _write(path: str, value: int) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(str(value))


def tree_cpu_s(pid: int) -> float:
    """psutil's user + system seconds of ``pid`` and its descendants (and of their reaped children)."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


@contextlib.contextmanager
def launcher(name: str) -> Iterator[None]:
    before = os.environ.get(LAUNCHER_ENV)
    os.environ[LAUNCHER_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LAUNCHER_ENV, None)
        else:
            os.environ[LAUNCHER_ENV] = before


def start_once(config: KernelConfig, name: str, meter: CpuacctMeter | None) -> dict[str, Any]:
    """One measured start; the kernel is closed before this returns."""
    with launcher(name):
        cg0 = meter.usage_ns() if meter else 0
        t0 = time.perf_counter()
        kernel = SandboxedKernel(config)
    try:
        wall = time.perf_counter() - t0
        cg = (meter.usage_ns() - cg0) / 1e9 if meter else None
        assert kernel.pid is not None
        ps = tree_cpu_s(kernel.pid)
        n_modules, debugpy = kernel.execute(PROBE).text.split()
        log = kernel.log_tail()
    finally:
        kernel.close()
    return {
        "launcher": name,
        "wall_s": wall,
        "cpu_cgroup_s": cg,
        "cpu_psutil_s": ps,
        "modules": int(n_modules),
        "debugpy_loaded": debugpy == "True",
        "log_clean": log == "(no output)",
    }


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile."""
    return percentile(values, 50), percentile(values, 25), percentile(values, 75)


def ms(value: tuple[float, float, float]) -> str:
    med, q1, q3 = value
    return f"{med * 1000:.0f} [{q1 * 1000:.0f}, {q3 * 1000:.0f}]"


def report(samples: list[dict[str, Any]], metrics: Sequence[tuple[str, str]]) -> str:
    rows = []
    for name in LAUNCHERS:
        mine = [s for s in samples if s["launcher"] == name]
        row: list[object] = [name, len(mine)]
        row += [ms(stats([s[key] for s in mine])) for key, _ in metrics]
        row += [mine[0]["modules"], sum(s["debugpy_loaded"] for s in mine), sum(s["log_clean"] for s in mine)]
        rows.append(row)
    ratio: list[object] = ["l0 / ipykernel", ""]
    paired: list[object] = ["paired l0 - ipykernel", ""]
    for key, _ in metrics:
        new = [s[key] for s in samples if s["launcher"] == "l0"]
        old = [s[key] for s in samples if s["launcher"] == "ipykernel"]
        ratio.append(f"{percentile(new, 50) / percentile(old, 50):.2f}")
        paired.append(ms(stats([a - b for a, b in zip(new, old, strict=True)])))
    rows += [[*ratio, "", "", ""], [*paired, "", "", ""]]
    headers = ["launcher", "n", *(f"{label}, ms median [IQR]" for _, label in metrics)]
    headers += ["modules", "debugpy loaded", "clean log"]
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured starts of each launcher")
    parser.add_argument("--sandbox", choices=("bwrap", "none", "auto"), default="bwrap")
    parser.add_argument("--json", metavar="PATH", help="also write every sample here")
    args = parser.parse_args()

    config = KernelConfig(sandbox=args.sandbox, tools=builtin_stubs())
    print(machine_line())
    print(versions_line(versions(*VERSIONS_OF, bwrap=True)))
    load_start = uptime()
    print(f"load at start: {load_start}")

    for name in LAUNCHERS:  # warm-up (page cache; the launcher thread starts), untimed
        start_once(config, name, None)
    meter: CpuacctMeter | None
    try:
        meter = CpuacctMeter()
        how = f"cgroup v1 cpuacct ({meter.path}), with psutil's tree sum beside it"
    except OSError as exc:
        meter, how = None, f"psutil over the live tree (no cpuacct cgroup: {exc})"
    print(f"kernel CPU: {how}")
    print(f"starts: {args.runs} of each launcher, interleaved; sandbox={args.sandbox}; tools: builtin")

    samples: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            order = LAUNCHERS if i % 2 == 0 else LAUNCHERS[::-1]
            for name in order:
                samples.append(start_once(config, name, meter))
    finally:
        if meter is not None:
            meter.close()
    load_end = uptime()

    metrics = [("cpu_cgroup_s", "kernel CPU (cgroup)")] if meter else []
    metrics += [("cpu_psutil_s", "kernel CPU (psutil)"), ("wall_s", "wall to tools installed")]
    print()
    print(report(samples, metrics))
    print()
    print(f"load at end: {load_end}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"samples": samples, "load_start": load_start, "load_end": load_end}, f, indent=1)


if __name__ == "__main__":
    main()
