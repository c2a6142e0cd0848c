"""Kernel start handshake: wall time to "tools installed" with the old and the new client timings.

    python benchmarks/kernel_handshake.py --runs 16

A fresh kernel's sockets do not exist yet when the host's client connects, so zmq retries the
connection every ``RECONNECT_IVL``; and the host confirms the iopub subscription by asking for
``kernel_info`` until a status message arrives. Old: zmq's default 100 ms reconnect interval and a
fixed 0.2 s wait per iopub probe. New (``l0_env.kernel.transport.RECONNECT_IVL_MS``,
``l0_env.kernel.session.IOPUB_PROBE_FIRST_S``): 10 ms and a probe wait that starts at 20 ms and
doubles up to 0.2 s. Each start is ``SandboxedKernel(KernelConfig(sandbox="bwrap",
tools=builtin_stubs()))`` (bubblewrap, kernel, handshake, tools), then one cell (untimed).
Starts alternate ``old, new, new, old, ...`` after one untimed warm-up of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import load_line, machine_line, markdown_table, uptime, versions, versions_line

from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel import session, transport
from l0_env.kernel.session import KernelConfig, SandboxedKernel

TIMINGS = {"old": (100, 0.2), "new": (10, 0.02)}


def use(mode: str) -> None:
    transport.RECONNECT_IVL_MS, session.IOPUB_PROBE_FIRST_S = TIMINGS[mode]
    transport.reset_client_context()  # new sockets take the context's reconnect interval


def start_once(config: KernelConfig) -> float:
    t0 = time.perf_counter()
    kernel = SandboxedKernel(config)
    elapsed = time.perf_counter() - t0
    try:
        result = kernel.execute("print(6 * 7)")
        if "42" not in result.text:
            raise RuntimeError(f"the kernel did not run a cell: {result.text!r}")
    finally:
        kernel.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="timed starts per setting")
    args = parser.parse_args()
    config = KernelConfig(sandbox="bwrap", tools=builtin_stubs())
    print(machine_line())
    print(versions_line(versions("ipykernel", "jupyter_client", "pyzmq", bwrap=True)))
    start_load = float(uptime().rsplit("load average:", 1)[-1].split(",")[0])
    print("uptime:  ", uptime())
    for mode in TIMINGS:
        use(mode)
        start_once(config)
    samples: dict[str, list[float]] = {mode: [] for mode in TIMINGS}
    for i in range(args.runs):
        for mode in ("old", "new") if i % 2 == 0 else ("new", "old"):
            use(mode)
            samples[mode].append(start_once(config) * 1000)
    use("new")
    rows = []
    for mode, xs in samples.items():
        q = statistics.quantiles(xs, n=4)
        ivl, probe = TIMINGS[mode]
        rows.append(
            [
                mode,
                f"{ivl} ms",
                f"{probe * 1000:.0f} ms",
                len(xs),
                f"{statistics.median(xs):.0f}",
                f"[{q[0]:.0f}, {q[2]:.0f}]",
            ]
        )
    print()
    print(markdown_table(["timings", "reconnect", "first iopub probe", "n", "wall ms median", "IQR"], rows))
    ratio = statistics.median(samples["new"]) / statistics.median(samples["old"])
    print(f"\nnew / old median: {ratio:.2f}")
    end_load = float(uptime().rsplit("load average:", 1)[-1].split(",")[0])
    print(load_line(start_load, end_load))


if __name__ == "__main__":
    main()
