"""Kernel start, spawned vs forked from the zygote: CPU, wall to tools installed, and env reset.

    python benchmarks/kernel_start_modes.py                  # 10 starts and 10 resets of each mode
    python benchmarks/kernel_start_modes.py --runs 20 --json /tmp/modes.json

The two start modes (``KernelConfig.kernel_start``, ``l0_env/kernel/zygote.py``):

* ``spawn``: bubblewrap runs a fresh ``python`` that imports ipykernel and starts the kernel;
* ``zygote``: bubblewrap builds the same sandbox around a holder, and the kernel is forked from a
  warm interpreter that imported ipykernel once.

Measured, the modes alternating ``spawn, zygote, zygote, spawn, ...`` after one untimed warm-up of
each (which also starts the zygote):

* wall to tools installed: ``time.perf_counter`` around ``SandboxedKernel(KernelConfig(...,
  tools=builtin_stubs()))``;
* kernel CPU: what every process of the start consumed, from a cgroup v1 ``cpuacct`` cgroup
  (``benchmarks/kernel_start.py``'s ``CpuacctMeter``) that holds the launcher thread (bubblewrap and
  the holder start there) and the zygote (its fork, the waiter and the forked kernel start
  there), so both modes are accounted alike, to the nanosecond. The zygote's own start (its
  imports), paid once per ``$L0_ZYGOTE_RECYCLE`` kernels (default 64), is printed apart;
* reset, cold: ``env.reset()`` of an ``L0Notebook-v0`` env with ``pool_size=0`` (the kernel starts
  inside ``reset``), a two-passage in-memory search backend, the previous episode's kernel closed
  inside the same call.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import psutil
from common import machine_line, markdown_table, percentile, uptime, versions, versions_line
from kernel_start import CpuacctMeter, ms, stats

import l0_env  # noqa: F401 - registers L0Notebook-v0
from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel import zygote
from l0_env.kernel.session import KernelConfig, SandboxedKernel
from l0_env.tools.search import Hit, Page, PageNotFound, SearchBackend

MODES = ("spawn", "zygote")
VERSIONS_OF = ("l0-gym", "ipykernel", "ipython", "jupyter_client", "pyzmq", "tornado")
TASK = {"id": "t0", "question": "Who wrote the Analytical Engine notes?", "answers": ["Ada Lovelace"]}


class TinySearch(SearchBackend):
    """Two passages, answered at once: the benchmark is about kernel starts, not retrieval."""

    PAGES: ClassVar[dict[str, Page]] = {"p1": Page("p1", "Ada Lovelace", "Ada Lovelace wrote notes.")}

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        return [[Hit("p1", "Ada Lovelace", "Ada", 1.0)][:k] for _ in queries]

    def get(self, doc_id: str) -> Page:
        if doc_id not in self.PAGES:
            raise PageNotFound(doc_id)
        return self.PAGES[doc_id]


def join_meter(meter: CpuacctMeter, pid: int) -> None:
    """Move a whole process (the zygote) into the meter's cgroup: its children start there."""
    with open(os.path.join(meter.path, "cgroup.procs"), "w", encoding="ascii") as f:
        f.write(str(pid))


def start_once(mode: str, meter: CpuacctMeter | None) -> dict[str, Any]:
    config = KernelConfig(sandbox="bwrap", tools=builtin_stubs(), kernel_start=mode)  # type: ignore[arg-type]
    cg0 = meter.usage_ns() if meter else 0
    t0 = time.perf_counter()
    kernel = SandboxedKernel(config)
    wall = time.perf_counter() - t0
    cg = (meter.usage_ns() - cg0) / 1e9 if meter else None
    try:
        assert kernel.start_mode == mode, f"{mode} start fell back to {kernel.start_mode}"
        modules = int(kernel.execute("import sys; print(len(sys.modules))").text)
    finally:
        kernel.close()
    return {"mode": mode, "what": "start", "wall_s": wall, "cpu_cgroup_s": cg, "modules": modules}


def reset_once(envs: dict[str, gym.Env], mode: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    envs[mode].reset(seed=0)
    wall = time.perf_counter() - t0
    assert envs[mode].unwrapped.kernel.start_mode == mode
    return {"mode": mode, "what": "reset", "wall_s": wall}


def row(samples: Sequence[dict[str, Any]], mode: str, key: str) -> str:
    values = [s[key] for s in samples if s["mode"] == mode and s.get(key) is not None]
    return ms(stats(values)) if values else "-"


def ratio(samples: Sequence[dict[str, Any]], key: str) -> str:
    med = {
        m: percentile([s[key] for s in samples if s["mode"] == m and s.get(key) is not None] or [0], 50)
        for m in MODES
    }
    return f"{med['zygote'] / med['spawn']:.2f}" if med["spawn"] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured starts (and resets) of each mode")
    parser.add_argument("--json", metavar="PATH", help="also write every sample here")
    args = parser.parse_args()
    os.environ.setdefault(zygote.RECYCLE_ENV, str(10 * args.runs + 10))  # no recycling mid-run

    print(machine_line())
    print(versions_line(versions(*VERSIONS_OF, bwrap=True)))
    load_start = uptime()
    print(f"load at start: {load_start}")
    python = KernelConfig().python
    t0 = time.perf_counter()
    z = zygote.shared_zygote(python, 60)
    zygote_wall = time.perf_counter() - t0
    zygote_cpu = sum(psutil.Process(z.pid).cpu_times()[:2])
    for mode in MODES:  # warm-up (page cache, the launcher thread), untimed
        start_once(mode, None)
    try:
        meter: CpuacctMeter | None = CpuacctMeter()
        assert meter is not None
        join_meter(meter, zygote.shared_zygote(python, 60).pid)
        how = f"cgroup v1 cpuacct ({meter.path}): launcher thread and zygote"
    except OSError as exc:
        meter, how = None, f"none (no writable cpuacct cgroup: {exc})"
    print(f"kernel CPU: {how}")
    print(
        f"zygote start (once per ${zygote.RECYCLE_ENV} kernels): {zygote_wall * 1000:.0f} ms wall, "
        f"{zygote_cpu * 1000:.0f} ms CPU, {z.modules} modules preloaded"
    )

    samples: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                samples.append(start_once(mode, meter))
    finally:
        if meter is not None:
            meter.close()
    envs = {
        mode: gym.make(
            "L0Notebook-v0",
            tasks=[TASK],
            search=TinySearch(),
            sandbox="bwrap",
            pool_size=0,
            kernel_start=mode,
        )
        for mode in MODES
    }
    try:
        for mode in MODES:
            envs[mode].reset(seed=0)  # warm-up
        for i in range(args.runs):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                samples.append(reset_once(envs, mode))
    finally:
        for env in envs.values():
            env.close()
    load_end = uptime()

    starts = [s for s in samples if s["what"] == "start"]
    resets = [s for s in samples if s["what"] == "reset"]
    headers = [
        "mode",
        "n",
        "kernel CPU (cgroup), ms median [IQR]",
        "wall to tools installed, ms",
        "reset, pool_size=0, ms",
        "modules at first cell",
    ]
    rows: list[list[object]] = []
    for mode in MODES:
        n = sum(s["mode"] == mode for s in starts)
        modules = next(s["modules"] for s in starts if s["mode"] == mode)
        rows.append(
            [
                mode,
                n,
                row(starts, mode, "cpu_cgroup_s"),
                row(starts, mode, "wall_s"),
                row(resets, mode, "wall_s"),
                modules,
            ]
        )
    rows.append(
        [
            "zygote / spawn",
            "",
            ratio(starts, "cpu_cgroup_s"),
            ratio(starts, "wall_s"),
            ratio(resets, "wall_s"),
            "",
        ]
    )
    print()
    print(markdown_table(headers, rows))
    print()
    print(f"zygote fallbacks during the run: {zygote.fallbacks}")
    print(f"load at end: {load_end}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"samples": samples, "load_start": load_start, "load_end": load_end}, f, indent=1)
    zygote.shutdown()


if __name__ == "__main__":
    main()
