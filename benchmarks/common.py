"""What every benchmark states about where it ran, and the helpers the benchmarks share.

A benchmark prints a table a person can read and states machine, versions and inputs (STYLE.md):

* ``machine_info`` / ``machine_line``: CPU model, CPUs (logical, cores, usable), RAM, OS, euid;
* ``versions`` / ``versions_line``: Python and the given distributions (installed metadata, so
  nothing heavy is imported), bubblewrap's version when asked;
* ``load_line``, ``uptime`` and ``LoadSampler``: the machine is shared, so every number comes with
  the load it was measured under (at start and end, or sampled through a long run);
* ``percentile`` / ``summarize_ms``: latency statistics; ``markdown_table``;
* ``descendants`` / ``tree_memory``: the process accounting the env benchmarks use to count and
  weigh kernel process trees and to find what a run left behind.

Scripts import it as ``from common import ...`` (they run as ``python benchmarks/<script>.py``,
which puts this directory first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import psutil

# -- the machine, versions, load -------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (else what ``platform`` knows)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine's facts, with the 1-minute load average now (``loadavg_1min_start``)."""
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "os": f"{platform.system()} {platform.release()}",
        "euid": os.geteuid(),
        "loadavg_1min_start": round(os.getloadavg()[0], 2),
    }


def machine_line(info: Mapping[str, Any] | None = None) -> str:
    """``machine: <cpu>, N logical CPUs (c cores, u usable), R GiB RAM, <os>, euid E``."""
    m = machine_info() if info is None else info
    return (
        f"machine:  {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} cores, "
        f"{m['usable_cpus']} usable), {m['ram_gib']} GiB RAM, {m['os']}, euid {m['euid']}"
    )


def load_line(start: float, end: float | None = None) -> str:
    """The 1-minute load average at start (and end) of a run, with what it means for the numbers."""
    at_end = "" if end is None else f", {end:.2f} at end"
    return (
        f"load:     1-min load average {start:.2f} at start{at_end} "
        "(shared machine: other work makes the numbers noisier)"
    )


def uptime() -> str:
    """``uptime``'s line (the 1, 5 and 15-minute load averages)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def versions(*dists: str, bwrap: bool = False) -> dict[str, str]:
    """Python's version and each distribution's installed one; bubblewrap's and Linux's with ``bwrap``."""
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    if bwrap:
        path = shutil.which("bwrap")
        if path is None:
            out["bwrap"] = "not found"
        else:
            proc = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
            out["bwrap"] = (proc.stdout or proc.stderr).strip()
        out["linux"] = platform.release()
    return out


def versions_line(found: Mapping[str, str]) -> str:
    return "versions: " + ", ".join(f"{k} {v}" for k, v in found.items())


class LoadSampler:
    """The 1-minute load average every ``period`` seconds while a run goes on (min / mean / max)."""

    def __init__(self, period: float = 30.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)

    def _loop(self, period: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(period)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        s = self.samples
        return f"{min(s):.1f} / {sum(s) / len(s):.1f} / {max(s):.1f} (min / mean / max of {len(s)} samples)"


# -- statistics and tables (pure) --------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``q`` in [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_ms(seconds: Sequence[float], *, keep_samples: bool = False) -> dict[str, Any]:
    """n, p50, p99, mean, min and max in milliseconds (``{"n": 0}`` for no samples)."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    out: dict[str, Any] = {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }
    if keep_samples:
        out["samples_ms"] = [round(x, 3) for x in ms]
    return out


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats with three decimals."""

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# -- process trees (psutil) --------------------------------------------------------------------------


def descendants() -> list[psutil.Process]:
    """Live (non-zombie) descendants of this process."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


def tree_memory(root: psutil.Process) -> dict[str, Any]:
    """RSS/PSS/USS (bytes) summed over ``root`` and its descendants; PSS/USS None if unreadable."""
    procs = [root, *root.children(recursive=True)]
    total: dict[str, Any] = {"rss": 0, "pss": 0, "uss": 0, "processes": []}
    for proc in procs:
        try:
            name = proc.name()
            try:
                full = proc.memory_full_info()
                rss, pss, uss = full.rss, getattr(full, "pss", None), full.uss
            except psutil.AccessDenied:
                rss, pss, uss = proc.memory_info().rss, None, None
        except psutil.NoSuchProcess:
            continue
        total["processes"].append({"name": name, "rss": rss, "pss": pss, "uss": uss})
        total["rss"] += rss
        for key, value in (("pss", pss), ("uss", uss)):
            total[key] = None if value is None or total[key] is None else total[key] + value
    return total


if __name__ == "__main__":  # the header every benchmark prints, for a quick look at this machine
    print(machine_line())
    print(load_line(os.getloadavg()[0]))
    print(versions_line(versions("l0-gym", "gymnasium", "torch", "transformers", bwrap=True)))
    print(f"python executable: {sys.executable}")
