"""Latency and memory of the sandboxed ``L0Notebook-v0`` env: reset, step, kernel start, memory per env.

    python benchmarks/env_latency.py                       # bubblewrap sandbox, 30 repetitions
    python benchmarks/env_latency.py --sandbox none --n 10 --json /tmp/env_latency.json

What is measured (``time.perf_counter`` around the public call, milliseconds):

* reset, warm pool (``pool_size=1``), *after refill*: ``pool.wait_ready()`` plus 0.2 s before the
  reset (untimed). The pool is passed in with ``kernel_pool=`` so the script can wait on it; its
  config is the env's default. Before each such reset the script counts the live kernel process
  trees (expected 3: each env's kernel and the pool's warm spare) and prints how often the spare
  was really alive;
* reset, warm pool, *back-to-back*: a second ``reset()`` right after that one, before the pool
  could refill (a kernel is then starting in the background at the same time);
* reset, cold (``pool_size=0``): the kernel is started inside ``reset()``;
* kernel start alone: ``SandboxedKernel(KernelConfig(sandbox=...))``, and its ``close()``.
  These four are interleaved round by round, so a change in the machine's load hits all alike;
* step, trivial cell (``x = 1``) and a tool-call cell (``web_search('Harvey Pekar', k=3)``, BM25 over
  the bundled corpus), on a ``pool_size=0`` env so no kernel starts in the background meanwhile.
  "env overhead" is the step's wall time minus the cell's kernel round trip
  (``info["timings"]["cell_s"]``). Episodes end after the default 12 steps; the resets between
  episodes are not timed;
* memory: ``--envs`` envs (``pool_size=0``, so each holds exactly one kernel) after reset + one trivial
  step; RSS, PSS and USS summed over each kernel's process tree (bwrap, bwrap's PID-namespace init,
  the ipykernel python), averaged over the envs, plus the growth of this process's RSS/USS per env.
  Summed RSS counts shared library pages once per process; PSS splits them fairly; USS is what
  killing the tree would free.

A one-off warm-up (first reset loads the BM25 index, the env checker runs once) is done before any
timing and reported separately. Nothing uses the network. Every env, pool and kernel is closed on
exit, error or Ctrl-C, and the script checks that no kernel process is left behind.
p99 of 30 samples is close to the maximum: read it as "worst of the run", not as a tail estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import psutil
from common import load_line, machine_info, machine_line, summarize_ms, tree_memory, versions, versions_line

import l0_env
from l0_env.kernel.policy import resolve_sandbox
from l0_env.kernel.pool import KernelPool
from l0_env.kernel.session import KernelConfig, SandboxedKernel

TRIVIAL_ACTION = "<think>trivial step here</think><code>x = 1</code>"
SEARCH_ACTION = "<think>search</think><code>web_search('Harvey Pekar', k=3)</code>"
REFILL_SETTLE_S = 0.2  # a warm kernel killed when its starter thread ends is gone by then
MiB = 1 << 20
VERSIONS_OF = ("l0-gym", "gymnasium", "ipykernel", "jupyter_client", "pyzmq", "psutil")


def env_facts(sandbox: str, **inputs: Any) -> dict[str, Any]:
    """The facts an env benchmark's report starts from: machine, versions, the sandbox, ``inputs``."""
    return {
        "machine": machine_info(),
        "versions": versions(*VERSIONS_OF, bwrap=True),
        "inputs": {"sandbox": sandbox, "bwrap_used": resolve_sandbox(sandbox), **inputs},
        "results": {},
    }


# -- kernel process trees (psutil) -------------------------------------------------------------------


def kernel_roots() -> list[psutil.Process]:
    """Live children of this process that launch an ipykernel (bwrap, or python when unsandboxed)."""
    roots = []
    for child in psutil.Process().children(recursive=False):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "ipykernel_launcher" in child.cmdline():
                roots.append(child)
    return roots


def host_memory() -> tuple[int, int | None]:
    me = psutil.Process()
    try:
        full = me.memory_full_info()
        return full.rss, full.uss
    except psutil.AccessDenied:
        return me.memory_info().rss, None


# -- measurements (IO) -----------------------------------------------------------------------------


def make_env(stack: contextlib.ExitStack, sandbox: str, **kwargs: Any) -> gym.Env:
    env = gym.make(l0_env.ENV_ID, sandbox=sandbox, **kwargs)
    stack.callback(env.close)
    return env


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def warm_up(sandbox: str) -> dict[str, float]:
    with contextlib.ExitStack() as local:
        env = make_env(local, sandbox, pool_size=0)
        first_reset, _ = timed(lambda: env.reset(seed=0))
        first_trivial, _ = timed(lambda: env.step(TRIVIAL_ACTION))
        first_search, (*_, info) = timed(lambda: env.step(SEARCH_ACTION))
        if info["cell_status"] != "ok" or not info["tool_calls"] or not info["tool_calls"][0].get("ok"):
            raise RuntimeError(f"warm-up web_search failed: {info['cell_status']} {info['tool_calls']}")
    return {
        "first_reset_s": first_reset,
        "first_trivial_step_s": first_trivial,
        "first_search_step_s": first_search,
    }


def bench_starts(sandbox: str, n: int) -> dict[str, Any]:
    """Warm-pool resets, cold resets and bare kernel starts, interleaved round by round so that
    a change in background load on the machine hits all of them alike."""
    warm_after, warm_b2b, cold, starts, closes = [], [], [], [], []
    spare_alive = 0
    with contextlib.ExitStack() as local:
        pool = KernelPool(KernelConfig(sandbox=sandbox), size=1)  # type: ignore[arg-type]
        local.callback(pool.close)
        warm_env = make_env(local, sandbox, kernel_pool=pool)
        cold_env = make_env(local, sandbox, pool_size=0)
        warm_env.reset(seed=0)
        cold_env.reset(seed=0)

        def settle() -> None:
            pool.wait_ready()
            time.sleep(REFILL_SETTLE_S)

        for i in range(n):
            settle()
            # Live now: each env's kernel and, if the pool works, its warm spare.
            spare_alive += len(kernel_roots()) >= 3
            warm_after.append(timed(lambda i=i: warm_env.reset(seed=i))[0])
            warm_b2b.append(timed(lambda i=i: warm_env.reset(seed=i))[0])
            settle()
            cold.append(timed(lambda i=i: cold_env.reset(seed=i))[0])
            kernel = None
            try:
                start, kernel = timed(lambda: SandboxedKernel(KernelConfig(sandbox=sandbox)))  # type: ignore[arg-type]
                starts.append(start)
                closes.append(timed(kernel.close)[0])
            finally:
                if kernel is not None:
                    kernel.close()
    return {
        "reset_warm": {
            "after_refill": summarize_ms(warm_after, keep_samples=True),
            "back_to_back": summarize_ms(warm_b2b, keep_samples=True),
            "warm_spare_alive": {"alive": spare_alive, "checked": n},
        },
        "reset_cold": summarize_ms(cold, keep_samples=True),
        "kernel": {
            "start": summarize_ms(starts, keep_samples=True),
            "close": summarize_ms(closes, keep_samples=True),
        },
    }


def bench_steps(sandbox: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as local:
        env = make_env(local, sandbox, pool_size=0)
        for name, action in (("trivial", TRIVIAL_ACTION), ("web_search", SEARCH_ACTION)):
            env.reset(seed=0)
            walls, overheads = [], []
            for i in range(n):
                wall, (_, _, terminated, truncated, info) = timed(lambda action=action: env.step(action))
                if info["cell_status"] != "ok":
                    raise RuntimeError(f"{name} step {i}: cell status {info['cell_status']!r}")
                walls.append(wall)
                overheads.append(max(wall - info["timings"]["cell_s"], 0.0))
                if terminated or truncated:
                    env.reset(seed=i + 1)
            out[name] = {
                "wall": summarize_ms(walls, keep_samples=True),
                "env_overhead": summarize_ms(overheads, keep_samples=True),
            }
    return out


def bench_memory(sandbox: str, n_envs: int) -> dict[str, Any]:
    gc.collect()
    if kernel_roots():
        raise RuntimeError("kernels from earlier measurements are still alive; memory would be wrong")
    rss0, uss0 = host_memory()
    with contextlib.ExitStack() as local:
        for i in range(n_envs):
            env = make_env(local, sandbox, pool_size=0)
            env.reset(seed=i)
            env.step(TRIVIAL_ACTION)
        gc.collect()
        rss1, uss1 = host_memory()
        trees = [tree_memory(root) for root in kernel_roots()]
    if len(trees) != n_envs:
        raise RuntimeError(f"expected {n_envs} kernel process trees, found {len(trees)}")

    def mean(key: str) -> float | None:
        values = [t[key] for t in trees]
        return None if any(v is None for v in values) else sum(values) / len(values)

    roles: dict[str, dict[str, list[Any]]] = {}
    for tree in trees:
        for index, proc in enumerate(tree["processes"]):
            role = roles.setdefault(f"{index}:{proc['name']}", {"rss": [], "pss": [], "uss": []})
            for key in role:
                role[key].append(proc[key])
    return {
        "envs": n_envs,
        "processes_per_tree": [len(t["processes"]) for t in trees],
        "tree_rss_mean": mean("rss"),
        "tree_pss_mean": mean("pss"),
        "tree_uss_mean": mean("uss"),
        "by_process_mean": {
            role: {k: None if None in v else sum(v) / len(v) for k, v in values.items()}
            for role, values in roles.items()
        },
        "host_rss_growth_per_env": (rss1 - rss0) / n_envs,
        "host_uss_growth_per_env": None if uss0 is None or uss1 is None else (uss1 - uss0) / n_envs,
    }


# -- report ----------------------------------------------------------------------------------------


def print_report(facts: dict[str, Any]) -> None:
    m, v, inp, r = facts["machine"], facts["versions"], facts["inputs"], facts["results"]
    print(machine_line(m))
    print(load_line(m["loadavg_1min_start"], m["loadavg_1min_end"]))
    print(versions_line(v))
    print(
        f"inputs:   sandbox={inp['sandbox']} (bubblewrap used: {inp['bwrap_used']}), n={inp['n']}, "
        f"envs={inp['envs']}, trivial={TRIVIAL_ACTION!r}, tool={SEARCH_ACTION!r}"
    )
    w = r["warm_up"]
    print(
        f"one-off:  first reset in process (loads BM25 index) {w['first_reset_s'] * 1000:.0f} ms, "
        f"first trivial step {w['first_trivial_step_s'] * 1000:.1f} ms, "
        f"first web_search step {w['first_search_step_s'] * 1000:.1f} ms"
    )
    print()
    rows = [
        ("reset, warm pool (pool_size=1), back-to-back", r["reset_warm"]["back_to_back"]),
        ("reset, warm pool (pool_size=1), after refill", r["reset_warm"]["after_refill"]),
        ("reset, cold (pool_size=0)", r["reset_cold"]),
        ("step, trivial cell: wall", r["steps"]["trivial"]["wall"]),
        ("step, trivial cell: env overhead", r["steps"]["trivial"]["env_overhead"]),
        ("step, web_search cell: wall", r["steps"]["web_search"]["wall"]),
        ("step, web_search cell: env overhead", r["steps"]["web_search"]["env_overhead"]),
        ("kernel start alone (SandboxedKernel())", r["kernel"]["start"]),
        ("kernel close alone (SandboxedKernel.close)", r["kernel"]["close"]),
    ]
    width = max(len(name) for name, _ in rows)
    cols = ("n", "p50 ms", "p99 ms", "mean ms", "max ms")
    print(f"| {'latency':<{width}} | " + " | ".join(f"{c:>8}" for c in cols) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 10 for _ in cols) + "|")
    for name, s in rows:
        cells = [f"{s['n']:>8}"] + [f"{s[k]:>8.1f}" for k in ("p50_ms", "p99_ms", "mean_ms", "max_ms")]
        print(f"| {name:<{width}} | " + " | ".join(cells) + " |")
    health = r["reset_warm"]["warm_spare_alive"]
    print()
    print(
        f"pool health: the warm spare kernel was alive before {health['alive']} of {health['checked']} "
        "'after refill' resets"
        + (
            ""
            if health["alive"] == health["checked"]
            else "  <-- WARM POOL NOT WORKING: resets start kernels cold"
        )
    )
    mem = r["memory"]

    def mib(x: float | None) -> str:
        return "n/a" if x is None else f"{x / MiB:.1f}"

    print()
    print(f"memory per live env ({mem['envs']} envs, pool_size=0, after reset + 1 trivial step), MiB:")
    print(f"| {'kernel process tree':<46} | {'RSS':>8} | {'PSS':>8} | {'USS':>8} |")
    print(f"|{'-' * 48}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    n_procs = sorted(set(mem["processes_per_tree"]))
    label = f"sum over tree ({'/'.join(map(str, n_procs))} processes), mean"
    print(
        f"| {label:<46} | {mib(mem['tree_rss_mean']):>8} | {mib(mem['tree_pss_mean']):>8} "
        f"| {mib(mem['tree_uss_mean']):>8} |"
    )
    for role, m in mem["by_process_mean"].items():
        index, name = role.split(":", 1)
        print(
            f"|   {'process ' + index + ': ' + name:<44} | {mib(m['rss']):>8} | {mib(m['pss']):>8} "
            f"| {mib(m['uss']):>8} |"
        )
    print(
        f"| {'host process growth per env':<46} | {mib(mem['host_rss_growth_per_env']):>8} | {'':>8} "
        f"| {mib(mem['host_uss_growth_per_env']):>8} |"
    )
    print(f"\nleak check: {facts['leftover_kernels']} kernel process trees left after closing everything")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="repetitions per latency measurement")
    parser.add_argument("--sandbox", choices=("bwrap", "none", "auto"), default="bwrap")
    parser.add_argument("--envs", type=int, default=8, help="live envs for the memory measurement")
    parser.add_argument("--json", metavar="PATH", help="also write all numbers (and raw samples) here")
    args = parser.parse_args()
    if args.n < 2 or args.envs < 1:
        parser.error("--n must be >= 2 and --envs >= 1")
    facts = env_facts(args.sandbox, n=args.n, envs=args.envs)
    r = facts["results"]
    try:
        r["warm_up"] = warm_up(args.sandbox)
        r.update(bench_starts(args.sandbox, args.n))
        r["steps"] = bench_steps(args.sandbox, args.n)
        r["memory"] = bench_memory(args.sandbox, args.envs)
    finally:  # every measurement closed its envs, pools and kernels in its own ExitStack
        facts["machine"]["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
        leftover = kernel_roots()
        facts["leftover_kernels"] = len(leftover)
        if leftover:
            print(f"WARNING: {len(leftover)} kernel processes survived close(): {[p.pid for p in leftover]}")
    print_report(facts)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
