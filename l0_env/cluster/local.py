"""A real multi-node Ray cluster on one machine, for tests and benchmarks: ``LocalCluster``.

Each node is its own ``ray start --block`` process group (a head, then workers joining it), with
its own resources, so a test can kill one node (every process of it, at once) and watch the rest
carry on. Run it inside a network namespace with only loopback up (:func:`loopback_namespace_argv`):
Ray then binds 127.0.0.1; outside one it would bind the machine's own address.

    with LocalCluster(workers=[{"num_cpus": 1, "resources": {"l0_env": 1}}] * 2) as cluster:
        ray.init(address=cluster.address)
        ...
        cluster.kill_worker(1)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# A node that stops answering is declared dead after period x threshold (Ray's defaults: 3 s x 5).
# The local cluster's nodes share a loaded machine, so keep a margin, but do not wait 15 s+.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "4",
    "RAY_health_check_timeout_ms": "2000",
}


def loopback_namespace_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run in new network, PID and mount namespaces with only loopback up.

    Everything the command starts dies with the namespace (its PID 1 is the command's shell), and
    nothing in it can reach or bind the machine's own address. Needs root (or user namespaces) and
    ``unshare``/``ip`` (util-linux, iproute2).
    """
    import shlex

    script = "ip link set lo up && exec " + shlex.join(list(argv))
    return ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script]


def loopback_namespace_available() -> str | None:
    """None when :func:`loopback_namespace_argv` works here, else why not."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    try:
        proc = subprocess.run(loopback_namespace_argv(["true"]), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if proc.returncode != 0:
        return f"unshare --net --pid failed: {proc.stderr.strip()[-300:]}"
    return None


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A Ray head and worker nodes on this machine, each a separate ``ray start --block`` process group.

    Args:
        head: The head's ``num_cpus`` and ``resources`` (default: no CPUs, so work lands on the workers).
        workers: One mapping per worker node, with its ``num_cpus`` and ``resources``.
        ray_exe: The ``ray`` command (default: the one next to this Python).
        env: Extra environment variables for every node (:data:`FAST_HEALTH_CHECKS` by default).
        start_timeout: Seconds to wait for every node to register.
    """

    def __init__(
        self,
        *,
        head: Mapping[str, Any] | None = None,
        workers: Sequence[Mapping[str, Any]] = (),
        ray_exe: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.ray_exe = ray_exe or str(Path(sys.executable).with_name("ray"))
        self.temp_dir = Path(tempfile.mkdtemp(prefix="l0-ray-"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            **(FAST_HEALTH_CHECKS if env is None else env),
        }
        self.nodes: list[subprocess.Popen] = []  # [head, worker 1, worker 2, ...]
        self._start_timeout = start_timeout
        try:
            self._start(
                head or {"num_cpus": 0},
                [
                    "--head",
                    f"--port={self.port}",
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                ],
            )
            self._wait_nodes(1)
            for k, worker in enumerate(workers, start=1):  # one at a time: they register with one GCS
                self._start(worker, [f"--address={self.address}"])
                self._wait_nodes(1 + k)
        except BaseException:
            self.stop()
            raise

    def _start(self, spec: Mapping[str, Any], extra: list[str]) -> None:
        argv = [
            self.ray_exe,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={spec.get('num_cpus', 1)}",
            f"--resources={json.dumps(dict(spec.get('resources', {})))}",
            f"--object-store-memory={int(spec.get('object_store_bytes', 200 * 2**20))}",
            # Nodes on one machine would share a session directory and clash on its sockets.
            f"--temp-dir={self.temp_dir / f'node-{len(self.nodes)}'}",
            *extra,
        ]
        log = open(self.temp_dir / f"node-{len(self.nodes)}.log", "wb")  # noqa: SIM115 - the node owns it
        # start_new_session: the node (raylet, its workers, the head's GCS) is one process group.
        self.nodes.append(
            subprocess.Popen(
                argv, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        log.close()

    def _alive_nodes(self) -> int:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _COUNT_NODES, self.address],
                capture_output=True,
                text=True,
                env=self._env,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            return -1
        return int(proc.stdout.strip() or 0) if proc.returncode == 0 else -1

    def _wait_nodes(self, n: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            for k, node in enumerate(self.nodes):
                if node.poll() is not None:
                    raise RuntimeError(f"ray node {k} exited ({node.returncode}): {self.node_log(k)[-2000:]}")
            if self._alive_nodes() >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{n} ray nodes did not register in {self._start_timeout:.0f} s")

    def node_log(self, k: int) -> str:
        path = self.temp_dir / f"node-{k}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def node_pids(self, k: int) -> list[int]:
        """Every live process of node ``k``: its ``ray start`` and all descendants (Ray's workers
        start their own process groups, so the group alone misses them)."""
        return [self.nodes[k].pid, *descendants(self.nodes[k].pid)]

    def kill_worker(self, k: int) -> list[int]:
        """SIGKILL every process of worker node ``k`` (1-based: node 0 is the head) at once, as if
        its machine died; returns their PIDs."""
        if not 1 <= k < len(self.nodes):
            raise IndexError(f"worker {k} out of range: workers are 1..{len(self.nodes) - 1}")
        pids = self.node_pids(k)
        for _ in range(2):  # stop them all first, so none starts a replacement, then kill
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            pids = sorted(set(pids) | set(descendants(self.nodes[k].pid)))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.nodes[k].wait()
        return pids

    def stop(self) -> None:
        """Stop every node (workers first), then remove the temp dir."""
        leftovers = [pid for k in range(len(self.nodes)) for pid in descendants(self.nodes[k].pid)]
        for node in reversed(self.nodes):
            if node.poll() is None:
                try:
                    os.killpg(node.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        for pid in leftovers:  # workers in their own process groups that outlived their raylet
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Counted in a child process: a driver connected here would pin this process to the cluster.
_COUNT_NODES = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
"""
