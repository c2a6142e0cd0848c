"""Soak test: thousands of scripted episodes (honest, malicious, timing out) through the vector env.

    python benchmarks/soak.py                          # 10,000 episodes, 16 envs
    nice -n 19 python benchmarks/soak.py --n 300       # a quick run
    python benchmarks/soak.py --n 10000 --results benchmarks/RESULTS-soak.md

Every episode starts a fresh sandboxed kernel (``pool_size`` warm ones are kept ready). Each env of a
``NotebookVectorEnv`` runs its own asyncio loop over ``areset``/``astep``, so a slow episode never
holds the others up. Episode kinds, drawn with fixed weights from a seeded RNG:

* ``oracle``: search the gold titles, read the pages, note them, submit the gold answer (3 steps);
* malicious, one attack cell then a check cell and an answer: ``fork_bomb`` (fork until EAGAIN,
  kill the children), ``memory_bomb`` (10 GB bytearray, then 64 MiB mmaps until refused),
  ``disk_fill`` (write home until ENOSPC), ``tiny_files`` (5,000 empty files), ``output_flood``
  (6 MB of print, stopped at the flood limit), ``kill_self`` (``os.kill(os.getpid(), 9)``: the
  kernel is restarted), ``daemons`` (``setsid`` + double fork + a detached ``sleep`` that must die
  with the episode's kernel);
* timing out: ``sleep`` (``time.sleep`` past ``--cell-timeout``: interrupted) and ``c_loop``
  (``sum(range(10**12))``, ignores SIGINT: killed and restarted after the grace period).

What is measured:

* episodes/s over the whole run (wall clock), and per kind the count and wrong outcomes (an
  oracle episode that did not score EM 1, an attack whose cell status was not the expected one);
* leaks: after ``close()``, this process's descendant processes, live processes running as a
  sandbox uid this run leased (only uids no other process holds now, so a concurrent run on the same
  machine is not counted), runtime dirs left in this run's private ``L0_RUNTIME_DIR``, open fds and
  threads of this process (start vs end). Uid leases stay machine-wide (``/tmp/l0_env-uids``; a
  symlink there from the private runtime dir covers versions that kept them under L0_RUNTIME_DIR);
* kernel restarts (``info["kernel_restarted"]``) and ``step``/``reset`` exceptions;
* RSS of this process: sampled at every finished episode; growth = median of the last thousand
  samples over the median of the first thousand (with fewer than 2,000 episodes: first vs last
  fifth), after a warm-up that loads the BM25 index.

The table goes to stdout and, with ``--results``, to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from common import descendants, machine_info, versions
from env_latency import VERSIONS_OF
from tqdm import tqdm

tqdm.monitor_interval = 0  # no monitor thread: the thread count is measured

ATTACKS: dict[str, str] = {
    "fork_bomb": (
        "import os, signal, time\n"
        "pids = []\n"
        "for _ in range(500):\n"
        "    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(60); os._exit(0)\n"
        "    pids.append(pid)\n"
        "for p in pids:\n    os.kill(p, signal.SIGKILL)\n"
        "for p in pids:\n    os.waitpid(p, 0)\n"
        "print('forked', len(pids))\n"
    ),
    "memory_bomb": (
        "import mmap\n"
        "try:\n    x = bytearray(10 * 2**30)\nexcept MemoryError:\n    print('MemoryError')\n"
        "chunks = []\n"
        "try:\n    while True:\n        chunks.append(mmap.mmap(-1, 64 << 20))\n"
        "except (MemoryError, OSError):\n    print('capped at', len(chunks) * 64, 'MiB')\n"
        "del chunks\n"
    ),
    "disk_fill": (
        "import os\n"
        "chunk = b'x' * (1 << 20)\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        with open(f'fill{i}', 'wb') as f:\n            f.write(chunk * 4)\n"
        "except OSError as e:\n    print('stopped', e.errno)\n"
    ),
    "tiny_files": (
        "import os\n"
        "n = 0\n"
        "try:\n"
        "    for i in range(5000):\n        open(f'f{i}', 'w').close(); n += 1\n"
        "except OSError as e:\n    print('stopped', e.errno)\n"
        "print('files', n)\n"
    ),
    "output_flood": "print('y' * 6_000_000)\n",
    "kill_self": "import os; os.kill(os.getpid(), 9)\n",
    "daemons": (
        "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '100000'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n        time.sleep(100000)\n"
        "    os._exit(0)\n"
        "print('spawned')\n"
    ),
    "sleep": "import time; time.sleep(1000)\n",
    "c_loop": "sum(range(10**12))\n",
}
# A contained attack may also run into the cell timeout on a loaded machine (fork_bomb).
EXPECTED_STATUS = {
    "fork_bomb": {"ok", "timeout"},
    "memory_bomb": {"ok"},
    "disk_fill": {"ok"},
    "tiny_files": {"ok"},
    "output_flood": {"output_limit"},
    "kill_self": {"died"},
    "daemons": {"ok"},
    "sleep": {"timeout"},
    "c_loop": {"timeout"},
}
# Weights: half honest episodes, the rest attacks and timeouts. Restarting kinds (kill_self, c_loop)
# cost a second kernel start, timeouts cost wall time: they are rarer.
WEIGHTS: dict[str, float] = {
    "oracle": 0.50,
    "fork_bomb": 0.06,
    "memory_bomb": 0.06,
    "disk_fill": 0.06,
    "tiny_files": 0.06,
    "output_flood": 0.06,
    "kill_self": 0.04,
    "daemons": 0.06,
    "sleep": 0.06,
    "c_loop": 0.04,
}
CHECK_CELL = "<think>Check that the notebook still works.</think><code>print('alive', 6 * 7)</code>"


def attack_script(kind: str, answer: str) -> list[str]:
    return [
        f"<think>Run the {kind} cell now.</think><code>{ATTACKS[kind]}</code>",
        CHECK_CELL,
        f"<think>Answer and end the episode.</think><code>submit_final_answer({answer!r})</code>",
    ]


# -- host accounting ---------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def uid_is_free(uid: int, lock_dir: str = "/tmp/l0_env-uids") -> bool:
    """True when no process holds the lease on ``uid`` (so any process running as it leaked)."""
    try:
        fd = os.open(os.path.join(lock_dir, str(uid)), os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # drops the flock if we took it
    return True


def processes_of_uids(uids: set[int]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids", "status"]):
        ids = proc.info["uids"]
        if ids is not None and ids.real in uids and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@dataclass
class Stats:
    kinds: Counter = field(default_factory=Counter)
    wrong: Counter = field(default_factory=Counter)
    wrong_details: list[str] = field(default_factory=list)
    restarts: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    uids: set[int] = field(default_factory=set)
    max_descendants: int = 0
    steps: int = 0

    def note(self, what: str, info: dict[str, Any]) -> None:
        if len(self.wrong_details) < 20:
            detail = f"{what}: status {info['cell_status']}, restarted {info['kernel_restarted']}, "
            self.wrong_details.append(detail + repr(cell_text(info)[:160]))


# -- the run -----------------------------------------------------------------------------------------


async def run_env(i: int, venv: Any, stats: Stats, plan: list[str], counter: dict, bar: tqdm) -> None:
    from l0_env.policies import OraclePolicy

    oracle = OraclePolicy("gold", read_steps=2)
    proc = psutil.Process()
    seed: int | None = counter["seed"] + i  # the first reset seeds this env's task RNG
    while counter["next"] < len(plan) and time.monotonic() < counter["deadline"]:
        kind = plan[counter["next"]]
        counter["next"] += 1
        try:
            obs, info = await venv.areset(i, seed=seed)
            seed = None
            kernel = venv.envs[i].kernel
            if kernel is not None and kernel._uid_lease is not None:
                stats.uids.add(kernel._uid_lease.uid)
            gold = info["task"]["answers"][0]
            script = None if kind == "oracle" else attack_script(kind, gold)
            done, t, em = False, 0, None
            while not done:
                action = oracle(obs, info) if script is None else script[min(t, len(script) - 1)]
                obs, _reward, terminated, truncated, info = await venv.astep(i, action)
                stats.steps += 1
                t += 1
                done = terminated or truncated
                stats.restarts += bool(info["kernel_restarted"])
                if script is not None and t == 1:
                    stats.statuses[(kind, info["cell_status"])] += 1
                    if info["cell_status"] not in EXPECTED_STATUS[kind]:
                        stats.wrong[kind] += 1
                        stats.note(kind, info)
                if (
                    script is not None
                    and t == 2
                    and (info["cell_status"], cell_text(info)) != ("ok", "alive 42")
                ):
                    stats.wrong[kind + " (check cell after it)"] += 1
                    stats.note(kind + " check", info)
                if done:
                    em = info["episode_metrics"]["em"]
            if kind == "oracle" and em != 1.0:
                stats.wrong[kind] += 1
        except Exception as exc:  # counted and reported; the soak goes on
            stats.errors.append(f"env {i} {kind}: {type(exc).__name__}: {exc}"[:300])
        stats.kinds[kind] += 1
        stats.rss.append(proc.memory_info().rss)
        bar.update(1)
        if sum(stats.kinds.values()) % 100 == 0:
            stats.fds.append(open_fds())
            stats.max_descendants = max(stats.max_descendants, len(descendants()))
            bar.set_postfix(
                rss_mib=f"{stats.rss[-1] / 2**20:.0f}", fds=stats.fds[-1], restarts=stats.restarts
            )


def cell_text(info: dict[str, Any]) -> str:
    return "".join(o["text"] for o in info["cell_outputs"]).strip()


def growth(samples: list[int]) -> tuple[float, float, float]:
    window = 1000 if len(samples) >= 2000 else max(1, len(samples) // 5)
    first, last = statistics.median(samples[:window]), statistics.median(samples[-window:])
    return first, last, (last - first) / first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="episodes")
    parser.add_argument("--envs", type=int, default=16, help="envs in the vector env")
    parser.add_argument("--pool-size", type=int, default=4, help="warm kernels kept ready")
    parser.add_argument("--cell-timeout", type=float, default=5.0)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop starting episodes after this long; report what ran",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None, help="write the table as Markdown here")
    args = parser.parse_args(argv)

    runtime = tempfile.mkdtemp(prefix="l0-soak-")
    os.symlink("/tmp/l0_env-uids", os.path.join(runtime, "l0_env-uids"))  # uid leases are machine-wide
    os.makedirs("/tmp/l0_env-uids", mode=0o700, exist_ok=True)
    os.environ["L0_RUNTIME_DIR"] = runtime

    import l0_env  # noqa: F401  (after L0_RUNTIME_DIR is set)
    from l0_env.kernel.sandbox import SandboxLimits
    from l0_env.vector import NotebookVectorEnv

    machine, vers = machine_info(), versions(*VERSIONS_OF, bwrap=True)
    rng = np.random.default_rng(args.seed)
    names = list(WEIGHTS)
    probs = np.array([WEIGHTS[k] for k in names]) / sum(WEIGHTS.values())
    plan = [names[j] for j in rng.choice(len(names), size=args.n, p=probs)]

    limits = SandboxLimits(disk_bytes=16 << 20, max_file_bytes=8 << 20)
    # Warm-up outside the measurement: the BM25 index, zmq context, launcher thread, one episode.
    warm = NotebookVectorEnv(1, pool_size=0, sandbox="bwrap", cell_timeout=args.cell_timeout, limits=limits)
    warm.reset(seed=0)
    warm.close()
    del warm
    time.sleep(1.0)
    gc.collect()  # event loops of finished threads (jupyter_client makes one per thread) close here
    fds_start, threads_start = open_fds(), threading.active_count()
    desc_start = len(descendants())
    stats = Stats()
    venv = NotebookVectorEnv(
        args.envs,
        pool_size=args.pool_size,
        sandbox="bwrap",
        cell_timeout=args.cell_timeout,
        limits=limits,
        max_steps=6,
    )
    deadline = time.monotonic() + (args.max_minutes * 60 if args.max_minutes else float("inf"))
    counter = {"next": 0, "seed": args.seed, "deadline": deadline}
    started = time.monotonic()
    try:
        with tqdm(total=args.n, desc="soak", unit="ep", mininterval=5, file=sys.stderr) as bar:

            async def drive() -> None:
                await asyncio.gather(*(run_env(i, venv, stats, plan, counter, bar) for i in range(args.envs)))

            asyncio.run(drive())
    finally:
        elapsed = time.monotonic() - started
        venv.close()
    time.sleep(1.0)  # let killed process trees be reaped
    gc.collect()
    leaked_desc = descendants()
    free_uids = {u for u in stats.uids if uid_is_free(u)}
    leaked_uid_procs = processes_of_uids(free_uids)
    leftover_dirs = [p for p in os.listdir(runtime) if p.startswith("l0k-")]
    fds_end, threads_end = open_fds(), threading.active_count()
    first, last, rss_growth = growth(stats.rss)
    n_done = sum(stats.kinds.values())
    rows = [
        ("episodes", f"{n_done:,} of {args.n:,} planned ({stats.steps:,} steps)"),
        ("wall time", f"{elapsed:,.0f} s"),
        ("episodes/s", f"{n_done / elapsed:.2f}"),
        ("kernel restarts", f"{stats.restarts:,}"),
        ("step/reset exceptions", f"{len(stats.errors)}"),
        ("wrong outcomes", ", ".join(f"{k}: {v}" for k, v in sorted(stats.wrong.items())) or "0"),
        ("leaked processes (descendants after close)", f"{len(leaked_desc) - desc_start}"),
        (f"leaked processes (run as the {len(stats.uids)} sandbox uids leased)", f"{len(leaked_uid_procs)}"),
        ("runtime dirs left", f"{len(leftover_dirs)}"),
        ("open fds start / end (max during)", f"{fds_start} / {fds_end} ({max(stats.fds, default=0)})"),
        ("threads start / end", f"{threads_start} / {threads_end}"),
        ("max descendant processes during", f"{stats.max_descendants}"),
        (
            "host RSS first → last thousand (median)",
            f"{first / 2**20:.1f} → {last / 2**20:.1f} MiB ({rss_growth * 100:+.2f}%)",
        ),
    ]
    kinds = ", ".join(f"{k} {stats.kinds[k]}" for k in names)
    inputs = (
        f"--n {args.n} --envs {args.envs} --pool-size {args.pool_size} --cell-timeout {args.cell_timeout:g} "
        f"--seed {args.seed}; sandbox bwrap, limits {limits}, bundled HotpotQA dev + BM25, max_steps 6"
    )
    lines = [
        "# Soak test",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/soak.py', *(argv if argv is not None else sys.argv[1:])])}`",
        "",
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in machine.items())
        + f", loadavg_1min_end {os.getloadavg()[0]:.2f}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        "",
        f"Inputs: {inputs}",
        "",
        f"Episode kinds: {kinds}",
        "",
        "| measure | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "First cell status of attack/timeout episodes: "
        + ", ".join(f"{k}/{s} {n}" for (k, s), n in sorted(stats.statuses.items())),
    ]
    if stats.wrong_details:
        lines += ["", "Wrong outcomes (first 20):", *(f"- {d}" for d in stats.wrong_details)]
    if stats.errors:
        lines += ["", "Exceptions (first 10):", *(f"- {e}" for e in stats.errors[:10])]
    if leaked_desc or leaked_uid_procs:
        lines += ["", "Leaked processes:"]
        for proc in [*leaked_desc, *leaked_uid_procs][:20]:
            with contextlib.suppress(psutil.Error):
                lines.append(f"- pid {proc.pid} uid {proc.uids().real}: {' '.join(proc.cmdline())[:200]}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        Path(args.results).write_text(text, encoding="utf-8")
    shutil.rmtree(runtime, ignore_errors=True)
    leaks = len(leaked_desc) - desc_start + len(leaked_uid_procs) + len(leftover_dirs)
    return 1 if leaks or fds_end > fds_start else 0


if __name__ == "__main__":
    sys.exit(main())
