"""The run directory: resolved config, ``metrics.jsonl``, TensorBoard events, notebooks, checkpoints.

Layout::

    <output_dir>/
      config.json            the resolved config (every value)
      metrics.jsonl          one JSON line per iteration (stable names: charts/…, losses/…, perf/…)
      tb/                    TensorBoard events
      notebooks/             sample episodes as .ipynb
      checkpoints/iter_000003/
        model.safetensors    trainable weights (all of them, or only the LoRA adapters)
        optimizer.pt         AdamW state
        rng.pt               torch / Python RNG states
        trainer_state.json   iteration, question order and position, NumPy generator state

A checkpoint is written to a temporary folder beside its final name and renamed into place, so a
crash never leaves a half-written checkpoint that ``--resume`` would pick up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from l0_env.recording import append_jsonl, atomic_write_text, save_notebook

CHECKPOINT_PREFIX = "iter_"


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
        root = self.path / "checkpoints"
        return sorted(p for p in root.glob(CHECKPOINT_PREFIX + "*") if p.is_dir() and ".tmp" not in p.name)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(
        self,
        iteration: int,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
        keep: int = 2,
    ) -> Path:
        """Write the checkpoint of ``iteration`` atomically and prune older ones (keeps ``keep``)."""
        from safetensors.torch import save_file

        final = self.path / "checkpoints" / f"{CHECKPOINT_PREFIX}{iteration:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weights = {
            n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(
            {"torch": torch.get_rng_state(), "python": random.getstate(), **_cuda_rng()}, tmp / "rng.pt"
        )
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():  # data on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.checkpoints()[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final


def _cuda_rng() -> dict[str, Any]:
    return {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}


def load_checkpoint(
    path: str | os.PathLike[str], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states from a checkpoint; returns its trainer state.

    Raises:
        ValueError: If the checkpoint's weights do not match the model's trainable parameters.
    """
    from safetensors.torch import load_file

    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights))[:5], sorted(set(weights) - expected)[:5]
        raise ValueError(
            f"{path}: checkpoint does not match the model (missing {missing}, unexpected {extra})"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
