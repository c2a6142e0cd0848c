"""Throughput of many sandboxed ``L0Notebook-v0`` envs: ours vs gymnasium's AsyncVectorEnv vs a fresh process per cell.

    python benchmarks/env_throughput.py                                  # sizes 1,8,32,64,128
    python benchmarks/env_throughput.py --sizes 1,8 --episodes-per-env 1 --json /tmp/tp.json
    python benchmarks/env_throughput.py --sizes 16,64 --executors ours,gym-async --kernel-start spawn,zygote

Workload: a scripted policy (no LLM), episodes of three steps, all envs in lockstep:

1. ``hits = web_search(<the task's question>, k=3); print(hits[0]['title'])`` (BM25 on the host);
2. ``print(sum(i * i for i in range(10000)))``;
3. ``submit_final_answer(<gold answer>)`` (ends the episode).

Executors, run side by side for each size N (their order rotates from size to size, so drifting
background load does not always hit the same one):

* ``ours``: ``gym.make_vec(..., vectorization_mode="vector_entry_point")``, i.e. NotebookVectorEnv
  with its defaults (shared warm pool of ``min(N, 8)`` kernels); each round is one ``step_some``
  over all N envs, and envs whose episode ended are reset with one ``reset_some``;
* ``gym-async``: ``gym.make_vec(..., vectorization_mode="async", vector_kwargs={"shared_memory":
  False, "context": "spawn"})``: one worker process per env, each a ``NotebookEnv`` with its
  defaults (its own warm pool of 1 kernel, so two kernels per env); ``step()`` over all N with
  gymnasium's next-step autoreset (the round after an episode ends is a reset round). Spawn, not
  fork: the host process has threads (launcher, pools), and forking them is unsafe. Capped to what
  the free memory allows (the cap is printed);
* ``fresh-subprocess``: stateless, like GEM's python tool: every cell is a NEW sandboxed
  ``python -c <cell>``, started by the kernel package's own launch (``launch_spec`` through the
  launcher thread: same bwrap argv, seccomp filter, environment, rlimits, cgroup and leased uid as
  a kernel). It keeps no state between cells and has no tools, so it runs a tool-free version of
  the same cells: step 1 builds the hit list in Python instead of calling ``web_search`` (so it
  skips the host's BM25 work), step 3 prints the answer. Its "reset" does what a kernel start
  does before the process: a uid lease, the runtime directory and the sandbox's cgroup.

``--kernel-start spawn,zygote`` runs ``ours`` and ``gym-async`` once per start mode (the env's
``kernel_start``; rows ``ours (zygote)``, ``gym-async (zygote)``), in the same rotation as the
executors, so both modes meet the same load; ``fresh-subprocess`` starts no kernel and runs once.
In zygote mode each process that holds envs has its own fork server (``l0_env/kernel/zygote.py``):
one for ``ours``, one per AsyncVectorEnv worker. A forked kernel is no descendant of the process
that holds its sandbox (it is the zygote's), so the memory columns find it through its sandbox's
PID namespace and count each zygote's whole tree (the zygote, its waiters, reapers and kernels).

Measured per executor and N:

* steps/s: env steps / wall time from after the first reset to the last step (autoresets
  included); also steps/s over the step rounds alone;
* reset and step latency p50/p99: each env's own ``reset()``/``step()`` call, timed inside the
  process that runs it by a thin wrapper (so thread-pool and pipe queueing are not in it; the round
  time is); for fresh-subprocess, one process from spawn to exit;
* memory per env after the run, before closing: PSS (and USS, RSS) summed over every process tree
  the executor holds (kernels with their bwrap parents, warm spares included; async workers with
  their kernels), plus the growth of this process's USS, divided by N. PSS splits shared library
  pages between the processes that map them; USS is what killing a tree frees;
* start failures: resets or kernel starts that raised (a failed reset is retried twice so the
  run continues; pool warm-start failures are counted too), and fresh processes that exited
  non-zero.

Per-step overhead: a trivial cell (``x = 1``) on one env, ours (``step_some`` timed by the caller)
interleaved with fresh-subprocess, ``--overhead-n`` times each.

Nothing uses the network. Every env, worker and kernel is closed on exit, error or Ctrl-C, and the
script counts the processes left behind (should be 0). p99 of a few hundred samples is close to
the maximum: read it as "worst of the run". Machine, versions, statistics and process accounting
come from ``common.py`` (same directory). The machine is shared: the 1-minute load average is
printed at start and end.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import gymnasium as gym
import psutil
from common import (
    descendants,
    load_line,
    machine_line,
    summarize_ms,
    tree_memory,
    versions_line,
)
from env_latency import env_facts

import l0_env
from l0_env.kernel import launcher, zygote
from l0_env.kernel.cgroups import SandboxCgroup
from l0_env.kernel.policy import resolve_sandbox, resolve_seccomp
from l0_env.kernel.sandbox import (
    SandboxLimits,
    UidLease,
    host_is_root,
    kernel_environment,
    launch_spec,
    sandbox_cgroup,
)
from l0_env.vector import info_at

EXECUTORS = ("ours", "gym-async", "fresh-subprocess")
KERNEL_STARTS = ("spawn", "zygote")
KERNEL_EXECUTORS = ("ours", "gym-async")  # the executors that start kernels (fresh-subprocess does not)
STEPS_PER_EPISODE = 3
TRIVIAL_CELL = "x = 1"
MiB = 1 << 20
ASYNC_MIB_PER_ENV_GUESS = 200  # PSS, before the first async run has measured it
MEMORY_RESERVE = 2 << 30  # left free for the other users of the machine
FRESH_TIMEOUT_S = 60


# -- the scripted policy (pure) ---------------------------------------------------------------------


def cell(phase: int, task: dict[str, Any]) -> str:
    """The cell an env runs at ``phase`` (0, 1, 2) of its episode."""
    if phase == 0:
        return f"hits = web_search({task['question']!r}, k=3)\nprint(hits[0]['title'])"
    if phase == 1:
        return "print(sum(i * i for i in range(10000)))"
    return f"submit_final_answer({task['answers'][0]!r})"


def fresh_cell(phase: int, task: dict[str, Any]) -> str:
    """The self-contained, tool-free version of ``cell`` for a stateless process."""
    if phase == 0:
        return (
            f"hits = [{{'title': t}} for t in sorted({task['question'].split()!r})][:3]\n"
            "print(hits[0]['title'])"
        )
    if phase == 1:
        return "print(sum(i * i for i in range(10000)))"
    return f"print('submitted:', {task['answers'][0]!r})"


def action(code: str) -> str:
    return f"<think>scripted benchmark step</think><code>\n{code}\n</code>"


# -- timing wrapper (runs in whichever process holds the env) -------------------------------------


class TimedEnv(gym.Wrapper):
    """Times ``reset``/``step`` where they run and reports it in ``info["bench"]``; retries a failed reset."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        failures, errors = 0, []
        t0 = time.perf_counter()
        for _ in range(3):
            try:
                obs, info = self.env.reset(seed=seed, options=options)
                break
            except Exception as exc:  # counted and reported; the third one propagates
                failures += 1
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if failures == 3:
                    raise
        info = dict(info)
        info["bench"] = {
            "reset_s": time.perf_counter() - t0,
            "reset_failures": failures,
            "reset_errors": "; ".join(errors),
            "pool_start_failures": self.env.unwrapped.kernel_pool.start_failures,
        }
        return obs, info

    def step(self, act: Any) -> Any:
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(act)
        info = dict(info)
        info["bench"] = {"step_s": time.perf_counter() - t0}
        return obs, reward, terminated, truncated, info


# -- process accounting (psutil) ---------------------------------------------------------------------


def is_kernel(proc: psutil.Process) -> bool:
    """The kernel's python itself (not its bwrap parents, whose argv also names ipykernel_launcher)."""
    with contextlib.suppress(psutil.Error):
        cmdline = proc.cmdline()
        return "ipykernel_launcher" in cmdline and os.path.basename(cmdline[0]) != "bwrap"
    return False


def is_resource_tracker(proc: psutil.Process) -> bool:
    """multiprocessing's resource tracker: started by the spawn context, lives until this process ends."""
    with contextlib.suppress(psutil.Error):
        return any("resource_tracker" in part for part in proc.cmdline())
    return False


def host_uss() -> int:
    return psutil.Process().memory_full_info().uss


_zygotes_seen: dict[int, psutil.Process] = {}  # zygotes and orphaned waiters, for the leak check


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


ZYGOTE_MARKER = "l0-zygote"  # the fork server's argv[3] (zygote.py starts it so)


def _is_zygote(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return ZYGOTE_MARKER in proc.cmdline()[3:4]
    return False


def zygotes_of(roots: list[psutil.Process]) -> list[psutil.Process]:
    """The process trees that hold the forked kernels of the sandboxes under ``roots``.

    A forked kernel is the zygote's descendant (zygote, waiter, reaper, kernel), not the sandbox
    holder's, but it lives in its sandbox's PID namespace: find the processes of those namespaces
    outside ``roots``' trees and walk up past the namespace to the waiter. Its parent is the
    zygote (whose whole tree is counted), or, once a recycled zygote has exited, whatever adopted
    the waiter (then only the waiter's tree is counted).
    """
    ours: set[int] = set()
    for root in roots:
        with contextlib.suppress(psutil.Error):
            ours.update(p.pid for p in [root, *root.children(recursive=True)])
    namespaces = {_pid_namespace(pid) for pid in ours} - {_pid_namespace(os.getpid()), None}
    if not namespaces:
        return []
    zygotes: dict[int, psutil.Process] = {}
    orphans: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid in ours or _pid_namespace(proc.pid) not in namespaces:
            continue
        with contextlib.suppress(psutil.Error):
            up: psutil.Process | None = proc
            while up is not None and _pid_namespace(up.pid) in namespaces:
                up = up.parent()
            if up is None:
                continue
            parent = up.parent()  # up: the waiter, outside the sandbox
            if parent is not None and _is_zygote(parent):
                zygotes[parent.pid] = parent
            else:
                orphans[up.pid] = up
    _zygotes_seen.update(zygotes)
    _zygotes_seen.update(orphans)
    return [*zygotes.values(), *orphans.values()]


def children_memory() -> dict[str, Any]:
    """PSS/USS/RSS summed over every descendant tree of this process and over the trees of the
    zygotes that forked kernels into its sandboxes; how many kernels (forked ones apart)."""
    total = {"pss": 0, "uss": 0, "rss": 0, "kernels": 0, "forked_kernels": 0, "processes": 0}
    children = psutil.Process().children(recursive=False)
    trees = [(child, "kernels") for child in children]
    trees += [(z, "forked_kernels") for z in zygotes_of(children)]
    for root, kind in trees:
        with contextlib.suppress(psutil.Error):
            tree = tree_memory(root)
            for key in ("pss", "uss", "rss"):
                total[key] = None if total[key] is None or tree[key] is None else total[key] + tree[key]
            total["processes"] += len(tree["processes"])
            total[kind] += sum(is_kernel(p) for p in [root, *root.children(recursive=True)])
    return total


def memory_per_env(n: int, uss_before: int) -> dict[str, Any]:
    gc.collect()
    mem = children_memory()
    growth = max(host_uss() - uss_before, 0)
    return {
        "pss_per_env": None if mem["pss"] is None else (mem["pss"] + growth) / n,
        "uss_per_env": None if mem["uss"] is None else (mem["uss"] + growth) / n,
        "rss_per_env": (mem["rss"] + growth) / n,
        "host_uss_growth_per_env": growth / n,
        "kernels": mem["kernels"],
        "forked_kernels": mem["forked_kernels"],
        "processes": mem["processes"],
    }


# -- executors (IO) ---------------------------------------------------------------------------------


class Tally:
    """What one executor run collects."""

    def __init__(self) -> None:
        self.resets: list[float] = []
        self.steps: list[float] = []
        self.step_rounds_s = 0.0
        self.reset_failures = 0
        self.errors: list[str] = []
        self.bad_cells = 0
        self.setup_s = 0.0  # construction and the first reset of every env, before the timed run

    def add_reset(self, info: dict[str, Any]) -> dict[str, Any]:
        bench = info["bench"]
        self.resets.append(float(bench["reset_s"]))
        self.reset_failures += int(bench["reset_failures"])
        if bench.get("reset_errors"):
            self.errors.append(str(bench["reset_errors"]))
        return info["task"]

    def add_step(self, info: dict[str, Any]) -> None:
        self.steps.append(float(info["bench"]["step_s"]))
        self.bad_cells += info.get("cell_status") != "ok"

    def result(self, n: int, wall: float, memory: dict[str, Any], pool_failures: int) -> dict[str, Any]:
        return {
            "envs": n,
            "setup_s": self.setup_s,
            "steps": len(self.steps),
            "wall_s": wall,
            "steps_per_s": len(self.steps) / wall,
            "steps_per_s_step_rounds": len(self.steps) / self.step_rounds_s if self.step_rounds_s else None,
            "reset": summarize_ms(self.resets),
            "step": summarize_ms(self.steps),
            "start_failures": self.reset_failures + pool_failures,
            "start_errors": self.errors[:5],
            "cells_not_ok": self.bad_cells,
            "memory": memory,
        }


def run_ours(n: int, episodes: int, sandbox: str, seed: int, kernel_start: str = "spawn") -> dict[str, Any]:
    uss0 = host_uss()
    tally = Tally()
    s0 = time.perf_counter()
    fallbacks0 = zygote.fallbacks
    with contextlib.ExitStack() as stack:
        vec = gym.make_vec(
            l0_env.ENV_ID,
            num_envs=n,
            vectorization_mode="vector_entry_point",
            sandbox=sandbox,
            kernel_start=kernel_start,
        )
        stack.callback(vec.close)
        inner = vec.unwrapped
        inner.envs = [TimedEnv(env) for env in inner.envs]  # timing shim, inside the worker threads
        first = inner.reset_some({i: {"seed": seed + i} for i in range(n)})
        tasks = {i: tally.add_reset(info) for i, (_, info) in first.items()}
        phase, done = [0] * n, [0] * n
        t0 = time.perf_counter()
        tally.setup_s = t0 - s0
        while active := [i for i in range(n) if done[i] < episodes]:
            r0 = time.perf_counter()
            results = inner.step_some({i: action(cell(phase[i], tasks[i])) for i in active})
            tally.step_rounds_s += time.perf_counter() - r0
            ended = []
            for i, (_, _, terminated, truncated, info) in results.items():
                tally.add_step(info)
                phase[i] += 1
                if terminated or truncated:
                    done[i] += 1
                    phase[i] = 0
                    if done[i] < episodes:
                        ended.append(i)
            if ended:
                for i, (_, info) in inner.reset_some({i: None for i in ended}).items():
                    tasks[i] = tally.add_reset(info)
        wall = time.perf_counter() - t0
        memory = memory_per_env(n, uss0)
        pool_failures = inner.kernel_pool.start_failures
    result = tally.result(n, wall, memory, pool_failures)
    result["zygote_fallbacks"] = zygote.fallbacks - fallbacks0  # forks that spawned instead
    return result


def run_async(n: int, episodes: int, sandbox: str, seed: int, kernel_start: str = "spawn") -> dict[str, Any]:
    uss0 = host_uss()
    tally = Tally()
    s0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        vec = gym.make_vec(
            l0_env.ENV_ID,
            num_envs=n,
            vectorization_mode="async",
            vector_kwargs={"shared_memory": False, "context": "spawn"},
            wrappers=[TimedEnv],
            sandbox=sandbox,
            kernel_start=kernel_start,
        )
        stack.callback(vec.close)
        _, infos = vec.reset(seed=seed)
        tasks = {i: tally.add_reset(info_at(infos, i)) for i in range(n)}
        pool_failures = [int(info_at(infos, i)["bench"]["pool_start_failures"]) for i in range(n)]
        phase, done = [0] * n, [0] * n
        t0 = time.perf_counter()
        tally.setup_s = t0 - s0
        while min(done) < episodes:
            r0 = time.perf_counter()
            _, _, terminated, truncated, infos = vec.step(
                [action(cell(phase[i], tasks[i])) for i in range(n)]
            )
            elapsed = time.perf_counter() - r0
            stepped = 0
            for i in range(n):
                info = info_at(infos, i)
                if "reset_s" in info["bench"]:  # next-step autoreset: this round reset env i
                    tasks[i] = tally.add_reset(info)
                    pool_failures[i] = int(info["bench"]["pool_start_failures"])
                    continue
                stepped += 1
                tally.add_step(info)
                phase[i] += 1
                if terminated[i] or truncated[i]:
                    done[i] += 1
                    phase[i] = 0
            if stepped:
                tally.step_rounds_s += elapsed
        wall = time.perf_counter() - t0
        memory = memory_per_env(n, uss0)
    return tally.result(n, wall, memory, sum(pool_failures))


class FreshProcessCells:
    """A stateless executor: every cell is a new sandboxed ``python -c`` (like GEM's python tool).

    Each process starts as a kernel does, through the kernel package's own launch
    (``l0_env.kernel.sandbox.launch_spec`` spawned by ``l0_env.kernel.launcher``: bubblewrap, the
    seccomp filter, rlimits, the slot's cgroup and leased uid, the same environment), only with
    ``python -c <cell>`` where a kernel runs ipykernel. Unsandboxed, like an unsandboxed kernel:
    rlimits, a private working directory, the kernel's environment.
    """

    def __init__(self, sandbox: str) -> None:
        self.sandboxed = resolve_sandbox(sandbox)  # type: ignore[arg-type]
        self.seccomp = self.sandboxed and resolve_seccomp(sandbox)  # type: ignore[arg-type]
        self.limits = SandboxLimits()
        self.slots: dict[int, tuple[str, UidLease | None, SandboxCgroup | None]] = {}

    def reset(self, i: int) -> float:
        """Give env ``i`` what a kernel start makes: a fresh runtime directory, uid and cgroup."""
        t0 = time.perf_counter()
        self.release(i)
        runtime_dir = tempfile.mkdtemp(prefix="l0f-", dir=os.environ.get("L0_RUNTIME_DIR") or None)
        os.chmod(runtime_dir, 0o711)
        lease = UidLease() if self.sandboxed and host_is_root() else None
        self.slots[i] = (runtime_dir, lease, None)
        if self.sandboxed:
            cgroup = sandbox_cgroup(self.limits, tag=os.path.basename(runtime_dir))
            self.slots[i] = (runtime_dir, lease, cgroup)
        return time.perf_counter() - t0

    def run(self, i: int, code: str) -> tuple[float, int, str]:
        """Run one cell in a new process; (seconds, exit code, output)."""
        runtime_dir, lease, cgroup = self.slots[i]
        command = [sys.executable, "-c", code]
        common: dict[str, Any] = dict(
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        t0 = time.perf_counter()
        if self.sandboxed:
            with launch_spec(
                command,
                runtime_dir=runtime_dir,
                limits=self.limits,
                uid=lease.uid if lease else None,
                env=kernel_environment(),
                cgroup=cgroup,
                use_seccomp=self.seccomp,
            ) as (argv, sandbox_kwargs):
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
                proc = launcher.spawn(argv, env=env, **sandbox_kwargs, **common)
        else:
            proc = launcher.spawn(
                command,
                cwd=runtime_dir,
                env=kernel_environment({"HOME": runtime_dir}),
                preexec_fn=self.limits.apply,
                **common,
            )
        try:
            out, _ = proc.communicate(timeout=FRESH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            out, _ = proc.communicate()
        return time.perf_counter() - t0, proc.returncode, out.decode(errors="replace")

    def release(self, i: int) -> None:
        runtime_dir, lease, cgroup = self.slots.pop(i, (None, None, None))
        if cgroup is not None:
            cgroup.remove()
        if lease is not None:
            lease.release()
        if runtime_dir is not None:
            shutil.rmtree(runtime_dir, ignore_errors=True)

    def close(self) -> None:
        for i in list(self.slots):
            self.release(i)


def run_fresh(n: int, episodes: int, sandbox: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    uss0 = host_uss()
    tally = Tally()
    s0 = time.perf_counter()
    failures = 0
    with contextlib.ExitStack() as stack:
        cells = FreshProcessCells(sandbox)
        stack.callback(cells.close)
        pool = cf.ThreadPoolExecutor(max_workers=n, thread_name_prefix="fresh")
        stack.callback(pool.shutdown, wait=True)
        tally.resets += [cells.reset(i) for i in range(n)]
        t0 = time.perf_counter()
        tally.setup_s = t0 - s0
        peak: dict[str, Any] = {}
        for episode in range(episodes):
            if episode:
                tally.resets += [cells.reset(i) for i in range(n)]
            for phase in range(STEPS_PER_EPISODE):
                r0 = time.perf_counter()
                codes = [fresh_cell(phase, tasks[(episode * n + i) % len(tasks)]) for i in range(n)]
                futures = [pool.submit(cells.run, i, codes[i]) for i in range(n)]
                if episode == 0 and phase == 1 and n > 1:
                    time.sleep(0.05)  # while the processes run: the memory they hold at once
                    peak = memory_per_env(n, uss0)
                for future in futures:
                    seconds, code, out = future.result()
                    tally.steps.append(seconds)
                    if code != 0:
                        failures += 1
                        tally.errors.append(f"exit {code}: {out.strip()[-300:]}")
                tally.step_rounds_s += time.perf_counter() - r0
        wall = time.perf_counter() - t0
        memory = memory_per_env(n, uss0)
        memory["sampled_mid_round"] = peak
    return tally.result(n, wall, memory, failures)


def bench_overhead(sandbox: str, reps: int) -> dict[str, Any]:
    """Trivial cell on one env: ours (step_some, timed by the caller) vs a fresh process."""
    ours, fresh = [], []
    with contextlib.ExitStack() as stack:
        vec = gym.make_vec(
            l0_env.ENV_ID,
            num_envs=1,
            vectorization_mode="vector_entry_point",
            sandbox=sandbox,
            max_steps=10_000,
        )
        stack.callback(vec.close)
        inner = vec.unwrapped
        inner.reset_some({0: {"seed": 0}})
        cells = FreshProcessCells(sandbox)
        stack.callback(cells.close)
        cells.reset(0)
        trivial = action(TRIVIAL_CELL)
        for _ in range(2):  # warm-up, untimed
            inner.step_some({0: trivial})
            cells.run(0, TRIVIAL_CELL)
        for _ in range(reps):
            t0 = time.perf_counter()
            inner.step_some({0: trivial})
            ours.append(time.perf_counter() - t0)
            seconds, code, out = cells.run(0, TRIVIAL_CELL)
            if code != 0:
                raise RuntimeError(f"fresh-subprocess trivial cell failed (exit {code}): {out[-500:]}")
            fresh.append(seconds)
    return {"ours": summarize_ms(ours), "fresh-subprocess": summarize_ms(fresh)}


# -- report ----------------------------------------------------------------------------------------


def mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x / MiB:.1f}"


def goal_lines(facts: dict[str, Any]) -> list[str]:
    res, lines = facts["results"], []
    big = res.get("128", {}).get("ours")
    if big is None or "error" in big:
        lines.append(
            "NOT RUN  128 sandboxed envs, zero start failures, <= 60 MiB/env (ours at N=128 missing)"
        )
    else:
        pss = big["memory"]["pss_per_env"]
        ok = big["start_failures"] == 0 and pss is not None and pss <= 60 * MiB
        lines.append(
            f"{'PASS' if ok else 'FAIL'}     128 sandboxed envs: {big['start_failures']} start failures, "
            f"{mib(pss)} MiB PSS per env (goal: 0 and <= 60)"
        )
    at64 = res.get("64", {})
    for mode in facts["inputs"].get("kernel_start", ["spawn"]):
        ours, asy = at64.get(label("ours", mode)), at64.get("gym-async")
        what = "ours" if mode == "spawn" else label("ours", mode)
        if not ours or not asy or "error" in ours or "error" in asy:
            lines.append(f"NOT RUN  {what} >= 3x AsyncVectorEnv steps/s at N=64 (a run is missing)")
        else:
            ratio = ours["steps_per_s"] / asy["steps_per_s"]
            capped = f" (async capped to {asy['envs']} envs)" if asy["envs"] != 64 else ""
            lines.append(
                f"{'PASS' if ratio >= 3 else 'FAIL'}     {what} {ours['steps_per_s']:.1f} vs async "
                f"{asy['steps_per_s']:.1f} steps/s at N=64: {ratio:.2f}x (goal: >= 3x){capped}"
            )
    over = res.get("overhead")
    if over:
        ratio = over["fresh-subprocess"]["p50_ms"] / over["ours"]["p50_ms"]
        lines.append(
            f"{'PASS' if ratio >= 10 else 'FAIL'}     trivial-cell step p50: ours {over['ours']['p50_ms']:.1f} ms "
            f"vs fresh-subprocess {over['fresh-subprocess']['p50_ms']:.1f} ms: {ratio:.1f}x lower (goal: >= 10x)"
        )
    return lines


def print_report(facts: dict[str, Any]) -> None:
    m, v, inp = facts["machine"], facts["versions"], facts["inputs"]
    print(machine_line(m))
    print(load_line(m["loadavg_1min_start"], m["loadavg_1min_end"]))
    print(versions_line(v))
    starts = inp.get("kernel_start", ["spawn"])
    print(
        f"inputs:   sandbox={inp['sandbox']} (bubblewrap used: {inp['bwrap_used']}), sizes={inp['sizes']}, "
        f"episodes/env={inp['episodes_per_env']} x {STEPS_PER_EPISODE} steps, executors={inp['executors']}, "
        f"overhead reps={inp['overhead_n']}" + ("" if starts == ["spawn"] else f", kernel starts={starts}")
    )
    print("workload: 1) hits = web_search(question, k=3); print(hits[0]['title'])  2) print(sum(i*i for i in")
    print("          range(10000)))  3) submit_final_answer(gold); fresh-subprocess runs a tool-free version")
    print("          (no web_search there: step 1 sorts the question's words instead)")
    print()
    cols = (
        "N",
        "executor",
        "envs run",
        "setup s",
        "steps/s",
        "steps/s step-rounds",
        "reset p50",
        "reset p99",
        "step p50",
        "step p99",
        "PSS/env MiB",
        "USS/env",
        "RSS/env",
        "kernel trees",
        "start fail",
        "cells !ok",
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for size, by_exec in facts["results"].items():
        if not size.isdigit():
            continue
        for name, r in by_exec.items():
            if "error" in r:
                print(f"| {size} | {name} | ERROR: {r['error']} |")
                continue
            mem, rs, st = r["memory"], r["reset"], r["step"]
            srs = r["steps_per_s_step_rounds"]
            row = [
                size,
                name,
                str(r["envs"]) + (" (capped)" if r["envs"] != int(size) else ""),
                f"{r['setup_s']:.1f}",
                f"{r['steps_per_s']:.1f}",
                "n/a" if srs is None else f"{srs:.1f}",
                f"{rs['p50_ms']:.1f}",
                f"{rs['p99_ms']:.1f}",
                f"{st['p50_ms']:.1f}",
                f"{st['p99_ms']:.1f}",
                mib(mem["pss_per_env"]),
                mib(mem["uss_per_env"]),
                mib(mem["rss_per_env"]),
                str(mem["kernels"])
                + (f"+{mem['forked_kernels']} forked" if mem.get("forked_kernels") else ""),
                str(r["start_failures"]),
                str(r["cells_not_ok"]),
            ]
            print("| " + " | ".join(row) + " |")
    print()
    print("latencies in ms; memory after the run, before close, per env (host USS growth included);")
    print(
        "fresh-subprocess holds no process between steps; its memory sampled mid-round (processes running):"
    )
    for size, by_exec in facts["results"].items():
        r = by_exec.get("fresh-subprocess") if size.isdigit() else None
        if r and "error" not in r and r["memory"].get("sampled_mid_round"):
            s = r["memory"]["sampled_mid_round"]
            print(
                f"  N={size}: {mib(s['pss_per_env'])} MiB PSS/env over {s['processes']} live processes "
                f"(at rest: {mib(r['memory']['pss_per_env'])})"
            )
    for note in facts["notes"]:
        print("note: " + note)
    over = facts["results"].get("overhead")
    if over:
        print()
        print(f"per-step overhead, trivial cell {TRIVIAL_CELL!r} on one env (ms):")
        print("| executor | n | p50 | p99 | max |")
        print("|---|---|---|---|---|")
        for name, s in over.items():
            print(f"| {name} | {s['n']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |")
    print()
    for line in goal_lines(facts):
        print(line)
    left = facts["leftover"]
    print(
        f"\nleak check: {left['kernels']} kernel processes and "
        f"{left['processes']} other child processes left after closing everything"
        + (
            f"; {left['zygote_processes']} processes of the zygotes seen"
            if "zygote_processes" in left
            else ""
        )
    )


# -- main ----------------------------------------------------------------------------------------------


def label(executor: str, kernel_start: str) -> str:
    """The row name: the executor, and the start mode where it is not the default."""
    return executor if kernel_start == "spawn" else f"{executor} ({kernel_start})"


def zygote_leftovers(wait_s: float = 10.0) -> int:
    """Processes still alive in the trees of the zygotes seen, after stopping this process's own
    (an async worker's zygote ends when its worker does)."""
    zygote.shutdown()
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for proc in _zygotes_seen.values():
            with contextlib.suppress(psutil.Error):
                tree = [proc, *proc.children(recursive=True)]
                alive += [p for p in tree if p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.2)


def async_cap(n: int, per_env: float) -> int:
    free = psutil.virtual_memory().available - MEMORY_RESERVE
    return max(1, min(n, int(free / per_env)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32,64,128", help="comma-separated numbers of envs")
    parser.add_argument("--episodes-per-env", type=int, default=2)
    parser.add_argument("--executors", default=",".join(EXECUTORS), help="subset of " + ",".join(EXECUTORS))
    parser.add_argument("--sandbox", choices=("bwrap", "none", "auto"), default="bwrap")
    parser.add_argument("--overhead-n", type=int, default=30, help="trivial-cell repetitions per executor")
    parser.add_argument(
        "--kernel-start",
        default="spawn",
        help="comma-separated kernel start modes (spawn, zygote) for the executors that start kernels",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write all numbers here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    if not sizes or min(sizes) < 1 or args.episodes_per_env < 1 or args.overhead_n < 2:
        parser.error("--sizes must be ints >= 1, --episodes-per-env >= 1, --overhead-n >= 2")
    if unknown := set(executors) - set(EXECUTORS):
        parser.error(f"unknown executors {sorted(unknown)}; choose from {EXECUTORS}")
    starts = list(dict.fromkeys(m.strip() for m in args.kernel_start.split(",") if m.strip()))
    if not starts or set(starts) - set(KERNEL_STARTS):
        parser.error(f"--kernel-start must name some of {KERNEL_STARTS}, got {args.kernel_start!r}")
    # (executor, start mode) pairs, rotated together per size; fresh-subprocess starts no kernel.
    runs = [(e, m) for e in executors for m in (starts if e in KERNEL_EXECUTORS else starts[:1])]
    facts = env_facts(
        args.sandbox,
        sizes=sizes,
        episodes_per_env=args.episodes_per_env,
        executors=executors,
        overhead_n=args.overhead_n,
        kernel_start=starts,
        command=" ".join([os.path.basename(sys.executable), *sys.argv]),
    )
    facts["notes"] = []
    tasks = [dataclasses.asdict(t) for t in l0_env.load_tasks(None, split="dev")]
    async_per_env = float(ASYNC_MIB_PER_ENV_GUESS * MiB)
    try:
        if "ours" in executors and "fresh-subprocess" in executors:
            facts["results"]["overhead"] = bench_overhead(args.sandbox, args.overhead_n)
        for k, n in enumerate(sizes):
            by_exec: dict[str, Any] = {}
            facts["results"][str(n)] = by_exec
            order = runs[k % len(runs) :] + runs[: k % len(runs)]
            for executor, mode in order:
                name = label(executor, mode)
                print(
                    f"[{time.strftime('%H:%M:%S')}] N={n} {name} (load {os.getloadavg()[0]:.1f})", flush=True
                )
                try:
                    if executor == "ours":
                        by_exec[name] = run_ours(n, args.episodes_per_env, args.sandbox, args.seed, mode)
                    elif executor == "gym-async":
                        cap = async_cap(n, async_per_env)
                        by_exec[name] = run_async(cap, args.episodes_per_env, args.sandbox, args.seed, mode)
                    else:
                        by_exec[name] = run_fresh(n, args.episodes_per_env, args.sandbox, tasks)
                except Exception as exc:  # one executor failing does not hide the others' numbers
                    by_exec[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                    print(f"  failed: {by_exec[name]['error']}", flush=True)
                    continue
                r = by_exec[name]
                if r.get("zygote_fallbacks"):
                    facts["notes"].append(
                        f"{name} at N={n}: {r['zygote_fallbacks']} kernel starts fell back to spawning"
                    )
                if executor == "gym-async":
                    async_per_env = max(async_per_env, 1.15 * (r["memory"]["pss_per_env"] or 0))
                    if r["envs"] < n:
                        facts["notes"].append(
                            f"gym-async at N={n} capped to {r['envs']} envs: free memory minus "
                            f"{MEMORY_RESERVE >> 30} GiB reserve / {async_per_env / MiB:.0f} MiB per env"
                        )
                print(
                    f"  {r['steps_per_s']:.1f} steps/s, {r['start_failures']} start failures, "
                    f"{mib(r['memory']['pss_per_env'])} MiB PSS/env",
                    flush=True,
                )
    finally:
        gc.collect()
        facts["machine"]["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
        time.sleep(0.5)  # let killed sandboxes be reaped
        left = [p for p in descendants() if not is_resource_tracker(p)]
        kernels = [p for p in left if is_kernel(p)]
        facts["leftover"] = {"kernels": len(kernels), "processes": len(left) - len(kernels)}
        if "zygote" in starts:
            facts["leftover"]["zygote_processes"] = zygote_leftovers()
        if left:
            print(f"WARNING: processes survived close(): {[(p.pid, p.name()) for p in left]}")
    print()
    print_report(facts)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=2, default=str)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
