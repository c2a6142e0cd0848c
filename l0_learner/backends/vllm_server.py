"""A vLLM OpenAI-compatible server in its own Python environment, started and stopped by the learner.

vLLM pins torch and transformers versions of its own, so it runs from a separate virtual
environment (``bash scripts/setup.sh`` makes ``.venv-vllm``) as a child process that listens on
127.0.0.1 only. The learner talks to it over HTTP (:mod:`l0_learner.backends.vllm`).

Lifetime. The server leads a session of its own, so a Ctrl-C in the terminal reaches the learner
only, and the learner stops the server itself: :meth:`VLLMServer.close` sends SIGTERM (vLLM then
shuts down its engine-core and worker processes), waits, and SIGKILLs whatever is left of the
session's process group. If the learner dies without closing it (SIGKILL, a crash of the
interpreter), the server still gets SIGTERM: a small launcher sets ``PR_SET_PDEATHSIG`` before it
``exec``s vLLM. (The death signal follows the *thread* that started the server: start it from a
thread that lives as long as the run, as the learner's main thread does.)

Environment of the server: the learner's, plus ``VLLM_SERVER_DEV_MODE=1`` (the
``/collective_rpc`` and ``/reset_prefix_cache`` endpoints that the weight sync uses),
``VLLM_HOST_IP=127.0.0.1`` (vLLM's internal sockets stay on loopback), ``VLLM_NO_USAGE_STATS=1``
(no usage report leaves the machine) and ``HF_HUB_OFFLINE=1`` (the model is a local directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

HOST = "127.0.0.1"

# Runs in the vLLM environment's python: ask for SIGTERM when the learner (our parent) dies, make
# sure it has not died already, then exec the vLLM server (same pid, so the pid we hold is it; the
# death signal survives exec).
_LAUNCHER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("l0_learner: the learner exited before the vLLM server started")
os.execv(sys.executable, [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *sys.argv[2:]])
"""

SERVER_ENV = {
    "VLLM_SERVER_DEV_MODE": "1",
    "VLLM_HOST_IP": HOST,
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}


class VLLMServerError(RuntimeError):
    """The vLLM server could not start, died, or answered with an error."""


def default_vllm_python() -> Path:
    """The vLLM environment's python: ``$L0_VLLM_PYTHON``, else ``.venv-vllm`` beside the package."""
    env = os.environ.get("L0_VLLM_PYTHON")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the server retries with another if it is taken by then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` in the vLLM environment, on 127.0.0.1.

    Args:
        model: The model to serve: a directory (config, tokenizer, safetensors) or a hub id.
        args: Further server arguments (``--dtype``, ``--max-model-len``, …); not ``--host``/``--port``.
        log_path: Where the server's stdout and stderr go (kept after it stops).
        python: The vLLM environment's python (default :func:`default_vllm_python`).
        port: The port (default: a free one, retried if it is taken before the server binds it).
        env: Extra environment variables for the server.
        startup_timeout: Seconds to wait for ``/health`` (a CPU server takes 30-90 s).
        served_model_name: The name the server answers to.

    Raises:
        FileNotFoundError: When the vLLM environment is missing (the message says how to make it).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        args: Sequence[str] = (),
        log_path: str | Path,
        python: str | Path | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 900.0,
        served_model_name: str = "policy",
    ) -> None:
        self.python = Path(python) if python else default_vllm_python()
        if not self.python.exists():
            raise FileNotFoundError(
                f"no vLLM environment at {self.python}: run `bash scripts/setup.sh` (it makes .venv-vllm), "
                "or pass --vllm-python / set L0_VLLM_PYTHON to the python of an environment with vllm"
            )
        self.model = str(model)
        self.args = list(args)
        self.log_path = Path(log_path)
        self.fixed_port = port
        self.port = port or 0
        self.env = {**os.environ, **SERVER_ENV, **(env or {})}
        self.startup_timeout = startup_timeout
        self.served_model_name = served_model_name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (without ``/v1``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-c",
            _LAUNCHER,
            str(os.getpid()),
            "--model",
            self.model,
            "--served-model-name",
            self.served_model_name,
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self) -> VLLMServer:
        """Start the server and wait until ``/health`` answers; on any failure nothing is left running.

        Raises:
            VLLMServerError: The server exited during start-up or did not become healthy in time
                (the message holds the end of its log).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(3):
                self.port = self.fixed_port or free_port()
                self._spawn(append=attempt > 0)
                if self._wait_healthy():
                    return self
                # Exited during start-up: retry only when another process took the port meanwhile.
                if self.fixed_port or "address already in use" not in log_tail(self.log_path).lower():
                    break
            raise VLLMServerError(
                f"the vLLM server exited with status {self.proc.returncode if self.proc else '?'} "
                f"during start-up; the end of its log ({self.log_path}):\n{log_tail(self.log_path)}"
            )
        except BaseException:
            self.close()
            raise

    def _spawn(self, append: bool) -> None:
        self._close_log()
        self._log = open(self.log_path, "ab" if append else "wb")  # noqa: SIM115 (kept open for the child's lifetime)
        self._log.write(
            f"$ {' '.join(self.command()[:2])} <launcher> {' '.join(self.command()[3:])}\n".encode()
        )
        self._log.flush()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def _wait_healthy(self) -> bool:
        """True once ``/health`` answers 200; False if the process exited first."""
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/health").status_code == 200:
                        return True
                time.sleep(0.5)
        raise VLLMServerError(
            f"the vLLM server did not answer {self.url}/health within {self.startup_timeout:.0f} s; "
            f"the end of its log ({self.log_path}):\n{log_tail(self.log_path)}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started (idempotent).

        SIGTERM first (vLLM stops its engine processes), then after ``timeout`` seconds SIGKILL to
        the process group the server leads.
        """
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid)
                    proc.wait()
            _kill_group(proc.pid)  # engine processes that outlived the server
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group that the server led (its own session: only processes it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def model_source(name: str) -> str:
    """What vLLM loads for ``cfg.model``: the local directory the trainer loads, or a hub id.

    Raises:
        ValueError: For a GGUF file (the smollm2 GGUF is converted to a directory on its first
            load, so only a failed conversion gets here).
    """
    from ..models import resolve_model

    path, gguf = resolve_model(name)
    if gguf is not None:
        raise ValueError(
            f"model {name!r} is a GGUF file ({path}/{gguf}), which vLLM is not given here: load it once "
            "with the hf backend (the converted copy is cached), or pass a transformers directory"
        )
    return path


def model_config(source: str) -> dict[str, Any]:
    """The model's ``config.json`` as a dict ({} when it cannot be read, e.g. an uncached hub id)."""
    try:
        if Path(source, "config.json").exists():
            return dict(json.loads(Path(source, "config.json").read_text()))
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source).to_dict()
    except (OSError, ValueError, ImportError):
        return {}


def max_model_len(cfg: Any, source: str) -> int:
    """Prompt budget + action budget + slack for the chat template, within the model's positions."""
    limit = int(model_config(source).get("max_position_embeddings") or 0)
    want = cfg.max_context_tokens + cfg.max_new_tokens + 512
    return min(limit, want) if limit > 0 else want


def server_args(cfg: Any, *, dtype: str, on_gpu: bool, model_len: int) -> list[str]:
    """Command-line arguments of an ``auto`` server for this config (``cfg.vllm_args`` last, so they win)."""
    args = ["--dtype", dtype, "--max-model-len", str(model_len), "--seed", str(cfg.seed)]
    args += ["--logprobs-mode", "processed_logprobs", "--generation-config", "vllm"]
    if cfg.vllm_kv_cache_bytes is not None or not on_gpu:
        # vLLM on a CPU does not size its KV cache by itself: 1 GiB unless told.
        args += ["--kv-cache-memory-bytes", str(cfg.vllm_kv_cache_bytes or 1 << 30)]
    if on_gpu:
        args += ["--gpu-memory-utilization", str(cfg.vllm_gpu_memory_utilization)]
    else:
        # No CUDA graphs on a CPU, and torch.compile's warm-up costs ~30 s per start.
        args += ["--enforce-eager"]
        # vLLM 0.32 on a CPU crashes when a seeded request's prefill is split over steps (it rewinds
        # the request's torch generator, which a CPU generator cannot do): whole prefills only.
        args += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(model_len, 8192))]
    return args + shlex.split(cfg.vllm_args)


def make_server(cfg: Any, device: Any, *, port: int | None = None) -> VLLMServer:
    """The server that an ``auto`` run of ``cfg`` on ``device`` (the trainer's) starts, not started
    yet: ``cfg.model``, the learner's arguments, the log in ``<output_dir>/vllm/server.log``."""
    from ..models import pick_dtype

    source = model_source(cfg.model)
    dtype = str(pick_dtype(cfg.dtype, device)).removeprefix("torch.")
    on_gpu = device.type == "cuda"
    return VLLMServer(
        source,
        args=server_args(cfg, dtype=dtype, on_gpu=on_gpu, model_len=max_model_len(cfg, source)),
        log_path=Path(cfg.output_dir) / "vllm" / "server.log",
        python=cfg.vllm_python,
        port=port,
        env={"CUDA_VISIBLE_DEVICES": cfg.vllm_devices} if cfg.vllm_devices is not None else None,
        startup_timeout=cfg.vllm_startup_timeout,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m l0_learner.backends.vllm_server [--port 8000] [learner flags]``: the server a run would start.

    Runs in the foreground with exactly the arguments that ``--vllm-server auto`` gives for the same
    learner flags (``--preset``, ``--model``, ``--max-context-tokens``, …), on 127.0.0.1; a learner
    started with the same flags and ``--vllm-server http://127.0.0.1:PORT`` then uses it. Ctrl-C or
    SIGTERM stops it and its engine processes.
    """
    import argparse
    import sys

    from ..config import parse_cli
    from ..models import pick_device

    ap = argparse.ArgumentParser(prog="python -m l0_learner.backends.vllm_server", add_help=False)
    ap.add_argument("--port", type=int, default=8000)
    known, rest = ap.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    cfg = parse_cli(rest, prog="python -m l0_learner.backends.vllm_server [--port N]")
    from ..models import load_policy, resolve_model

    if resolve_model(cfg.model)[1] is not None:  # builds 'tiny'; a GGUF (smollm2) is converted once
        load_policy(cfg.model, device="cpu")
    server = make_server(cfg, pick_device(cfg.device), port=known.port)
    print(f"starting {server.model} on {server.url} (log: {server.log_path})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # stop via `finally`
    try:
        server.start()
        print(f"ready: --backend vllm --vllm-server {server.url}  (Ctrl-C stops it)", flush=True)
        assert server.proc is not None
        server.proc.wait()
        print(f"the server exited with status {server.proc.returncode}; see {server.log_path}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
