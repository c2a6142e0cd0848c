"""The run directory: resolved config, ``metrics.jsonl``, TensorBoard events, notebooks, checkpoints.

Layout::

    <output_dir>/
      config.json            the resolved config (every value)
      metrics.jsonl          one JSON line per iteration (stable names: charts/…, losses/…, perf/…)
      tb/                    TensorBoard events
      notebooks/             sample episodes as .ipynb
      checkpoints/iter_000003/
        model.safetensors    trainable weights (all of them, or only the LoRA adapters)
        optimizer.pt         AdamW state (by parameter name when written under FSDP)
        rng.pt               torch / Python RNG states (and every rank's, from a torchrun run)
        trainer_state.json   iteration, question order and position, NumPy generator state

A checkpoint is written to a temporary folder beside its final name and renamed into place, so a
crash, a stop signal or a full disk never leaves a half-written checkpoint that ``--resume`` would
pick up; a failed write removes its temporary folder and raises ``OSError`` (``ENOSPC``, naming the
checkpoint and the intact one before it, when the disk is full). ``metrics.jsonl`` is appended one
whole line at a time; :meth:`RunDir.rollback_to` drops lines (and sample notebooks) of iterations
after the checkpoint a run resumes from, so the log never holds an iteration twice.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l0_env.recording import append_jsonl, atomic_write_text, save_notebook

CHECKPOINT_PREFIX = "iter_"
_CHECKPOINT_NAME = re.compile(re.escape(CHECKPOINT_PREFIX) + r"\d+")
_NOTEBOOK_NAME = re.compile(r"iter_(\d+)_.*\.ipynb")


def find_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The complete checkpoints of a run directory, oldest first (temporary folders are skipped)."""
    root = Path(run_dir) / "checkpoints"
    return sorted(
        p for p in root.glob(CHECKPOINT_PREFIX + "*") if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()
    )


def checkpoint_iteration(path: str | os.PathLike[str]) -> int:
    """The iteration a checkpoint folder holds, from its name (``iter_000003`` -> 3)."""
    return int(Path(path).name[len(CHECKPOINT_PREFIX) :])


class RunDir:
    """Write a run's files.

    Args:
        path: The run directory (created).
        tensorboard: Also write TensorBoard events under ``tb/``.
    """

    def __init__(self, path: str | os.PathLike[str], *, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))

    def write_config(self, config: dict[str, Any], name: str = "config.json") -> Path:
        return atomic_write_text(self.path / name, json.dumps(config, indent=2, default=str) + "\n")

    def log_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        append_jsonl(self.path / "metrics.jsonl", {"iteration": step, **metrics})
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def rollback_to(self, iteration: int) -> int:
        """Forget what was logged after ``iteration`` (the checkpoint a run continues from).

        Drops ``metrics.jsonl`` lines of later iterations and any torn line (rewritten atomically),
        later sample notebooks, and later TensorBoard points (``purge_step``). Lines of iteration 0
        (the SFT stage) stay. Returns how many metrics lines were dropped.
        """
        metrics = self.path / "metrics.jsonl"
        dropped = 0
        if metrics.exists():
            kept = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    keep = int(record["iteration"]) <= iteration
                except (ValueError, KeyError, TypeError):
                    keep = False  # a torn line: a full disk cut a write short
                if keep:
                    kept.append(line + "\n")
                else:
                    dropped += 1
            if dropped:
                atomic_write_text(metrics, "".join(kept))
        notebooks = self.path / "notebooks"
        for nb in notebooks.glob("iter_*.ipynb") if notebooks.is_dir() else []:
            m = _NOTEBOOK_NAME.fullmatch(nb.name)
            if m and int(m.group(1)) > iteration:
                nb.unlink(missing_ok=True)
        if dropped and self._tb is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(str(self.path / "tb"), purge_step=iteration + 1)
        return dropped

    def save_episode(self, episode_log: Any, name: str) -> Path | None:
        if episode_log is None:
            return None
        return save_notebook(episode_log, self.path / "notebooks" / f"{name}.ipynb")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        return find_checkpoints(self.path)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(
        self,
        iteration: int,
        *,
        trainer_state: dict[str, Any],
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        weights: dict[str, torch.Tensor] | None = None,
        optimizer_state: dict[str, Any] | None = None,
        rng: list[dict[str, Any]] | None = None,
        keep: int = 2,
    ) -> Path:
        """Write the checkpoint of ``iteration`` atomically and prune older ones (keeps ``keep``).

        Args:
            iteration: The iteration it holds.
            trainer_state: JSON-able trainer state.
            model, optimizer: Take the trainable weights and the optimizer state from these...
            weights, optimizer_state: ...or pass them gathered already (a sharded model).
            rng: Every rank's :func:`rng_state` (default: this process's).
            keep: Checkpoints to keep.

        Raises:
            OSError: The checkpoint could not be written (``errno.ENOSPC`` when the disk is full).
                Nothing of it is left behind and the previous checkpoints are untouched.
        """
        from safetensors.torch import save_file

        root = self.path / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{iteration:06d}"
        tmp = final.with_name(final.name + ".tmp")
        for leftover in root.glob(CHECKPOINT_PREFIX + "*.tmp*"):  # from a run killed mid-write
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            if weights is None:
                if model is None:
                    raise ValueError("save_checkpoint needs model= or weights=")
                weights = {
                    n: p.detach().cpu().contiguous().clone()
                    for n, p in model.named_parameters()
                    if p.requires_grad
                }
            save_file(weights, str(tmp / "model.safetensors"))
            del weights
            ranks = rng or [rng_state()]
            rngs = {**ranks[0], "ranks": ranks} if len(ranks) > 1 else ranks[0]
            if optimizer_state is None:
                if optimizer is None:
                    raise ValueError("save_checkpoint needs optimizer= or optimizer_state=")
                optimizer_state = optimizer.state_dict()
            # torch.save to an open file: a failed write raises the OSError itself (to a path it
            # raises an opaque RuntimeError from the zip writer).
            for name, obj in (("optimizer.pt", optimizer_state), ("rng.pt", rngs)):
                with open(tmp / name, "wb") as fh:
                    torch.save(obj, fh)
            with open(tmp / "trainer_state.json", "w", encoding="utf-8") as fh:
                fh.write(json.dumps(trainer_state, indent=2) + "\n")
            for f in tmp.iterdir():  # data on disk before the rename makes it visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, Exception) and _disk_full(exc):
                previous = self.latest_checkpoint()
                raise OSError(
                    errno.ENOSPC,
                    f"No space left on device: could not write the checkpoint of iteration {iteration} "
                    f"({type(exc).__name__}: {exc}); nothing of it was kept, the last checkpoint "
                    f"{previous if previous else '(none yet)'} is intact. Free space in {root}, then "
                    "continue with --resume",
                    str(final),
                ) from exc
            raise
        old = None
        if final.exists():  # a rewrite of the same iteration: move the old copy aside first
            old = final.with_name(final.name + ".tmp-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.checkpoints()[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
        return final


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or an exhausted quota."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """This process's torch (and CUDA) and Python RNG states."""
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
    return {"torch": torch.get_rng_state(), "python": random.getstate(), **cuda}


def restore_rng(rng: dict[str, Any], rank: int = 0) -> None:
    """Set the RNGs from a checkpoint's ``rng.pt``: rank ``rank``'s states where it holds them."""
    ranks = rng.get("ranks") or [rng]
    mine = ranks[rank] if rank < len(ranks) else rng
    torch.set_rng_state(mine["torch"])
    random.setstate(mine["python"])
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(mine["cuda"])


@dataclass
class Checkpoint:
    """What a checkpoint folder holds (see the module docstring)."""

    weights: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng: dict[str, Any]
    trainer_state: dict[str, Any]


def read_checkpoint(path: str | os.PathLike[str], expected: set[str] | None = None) -> Checkpoint:
    """Read a checkpoint folder.

    Args:
        path: The checkpoint folder.
        expected: The model's trainable parameter names, to check the weights against.

    Raises:
        ValueError: If the checkpoint's weights do not match ``expected``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    if expected is not None and set(weights) != expected:
        missing, extra = sorted(expected - set(weights))[:5], sorted(set(weights) - expected)[:5]
        raise ValueError(
            f"{path}: checkpoint does not match the model (missing {missing}, unexpected {extra})"
        )
    return Checkpoint(
        weights=weights,
        optimizer_state=torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False),
        rng=torch.load(path / "rng.pt", weights_only=False),
        trainer_state=json.loads((path / "trainer_state.json").read_text(encoding="utf-8")),
    )


def load_checkpoint(
    path: str | os.PathLike[str], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states from a checkpoint into an unsharded model;
    returns its trainer state (the trainer uses :func:`read_checkpoint` and loads shards itself).

    Raises:
        ValueError: If the checkpoint's weights do not match the model's trainable parameters.
    """
    params = dict(model.named_parameters())
    ckpt = read_checkpoint(path, {n for n, p in params.items() if p.requires_grad})
    with torch.no_grad():
        for name, tensor in ckpt.weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(ckpt.optimizer_state)
    restore_rng(ckpt.rng)
    return ckpt.trainer_state
