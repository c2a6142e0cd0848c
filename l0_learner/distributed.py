"""Data-parallel training over ranks (``torchrun``): DDP or FSDP2, rollouts split by question group.

Launch with ``torchrun --nproc-per-node N -m l0_learner.run …``; a single process needs nothing
from here (every helper is the identity when ``world == 1``). How a batch flows:

1. Every rank builds the same job list (the question order and seeds come from the same NumPy
   generator). Rank ``r`` runs question groups ``r, r + N, …`` through its own envs and sampler,
   then the episodes are all-gathered (:meth:`Ranks.gather_in_order`): every rank holds the whole
   batch in job order and computes the same dynamic sampling and advantages, so the learner's code
   is the single-process code.
2. The micro-batches are computed identically on every rank and dealt out token-balanced, padded
   to the same count with zero-weight copies (:meth:`Ranks.deal`): FSDP's forward and backward are
   collectives, so every rank must run as many of them.
3. Each rank's loss is scaled by ``world / total tokens``: DDP and FSDP average gradients over
   ranks, so the result is the single-process token-mean gradient.
4. Metrics are sums all-reduced over ranks; rank 0 writes metrics, notebooks and checkpoints.

Strategies (``Config.dist_strategy``): ``ddp`` replicates the model (small models, LoRA);
``fsdp`` shards every decoder layer and the root with FSDP2 (``fully_shard``), parameters kept in
float32 and computed in the training dtype (``MixedPrecisionPolicy``; gradients reduced in
float32). FSDP and the ``hf`` sampler: for the rollouts the parameters are gathered once
(:func:`gathered_for_inference`), so each rank generates on its own, without collectives. Under
FSDP every forward is a collective, so the trainer runs exactly one per micro-batch (and one of
the reference model): ``prompt_grad=False`` (a separate no-grad pass over the prompt, and a shared
prefix pass whose presence depends on the batch) is not used there; the gradient is the exact one.

Not covered: more than one node (nothing here assumes one, but it was run on one machine only),
tensor or pipeline parallelism, surviving a rank that dies (the run stops; start it again with
``--resume``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job: its rank, the world size, its local rank."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> Ranks:
        """The initialised process group's view, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return cls()

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str = "auto") -> torch.device:
        """This rank's device: ``cuda:<local rank>`` for 'auto'/'cuda' where CUDA is there, else CPU."""
        if device in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        if device == "cuda":
            raise RuntimeError("device='cuda' but CUDA is not available")
        return torch.device("cpu" if device == "auto" else device)

    # -- rollouts ----------------------------------------------------------------------------------

    def my_jobs(self, n_jobs: int, group_size: int) -> list[int]:
        """Indices of the jobs this rank runs: whole question groups, dealt round-robin."""
        return [i for i in range(n_jobs) if (i // group_size) % self.world == self.rank]

    def gather_in_order(self, mine: Sequence[int], results: Sequence[T], n: int) -> list[T]:
        """Every rank's results in job order (this rank's own objects kept as they are).

        Episode logs (``.log``, only kept for sample notebooks) stay on the rank that made them.
        """
        if not self.enabled:
            return list(results)
        payload = [(i, _without_log(r)) for i, r in zip(mine, results, strict=True)]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, payload)
        out: dict[int, T] = {i: r for part in gathered for i, r in part}
        out.update(zip(mine, results, strict=True))
        if sorted(out) != list(range(n)):
            raise RuntimeError(f"gathered {len(out)} of {n} results")
        return [out[i] for i in range(n)]

    # -- training ----------------------------------------------------------------------------------

    def deal(self, batches: Sequence[list[T]], size: Any = len) -> list[tuple[list[T], float]]:
        """This rank's micro-batches as ``(batch, weight)``: token-balanced, the same count on every rank.

        Largest first to the least-loaded rank (ties to the lower rank), the same on every rank;
        a rank with fewer batches gets zero-weight copies of the smallest batch (FSDP needs the
        same number of forward/backward passes everywhere).
        """
        if not self.enabled:
            return [(b, 1.0) for b in batches]
        loads = [0] * self.world
        mine: list[list[T]] = []
        counts = [0] * self.world
        for b in sorted(batches, key=lambda b: -sum(size(s) for s in b)):
            r = min(range(self.world), key=lambda k: (loads[k], k))
            loads[r] += sum(size(s) for s in b)
            counts[r] += 1
            if r == self.rank:
                mine.append(b)
        out = [(b, 1.0) for b in mine]
        if batches:
            smallest = min(batches, key=lambda b: sum(size(s) for s in b))
            out += [(smallest, 0.0)] * (max(counts) - len(mine))
        return out

    def sum(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Sum each value over ranks."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _without_log(obj: Any) -> Any:
    if getattr(obj, "log", None) is None:
        return obj
    import copy

    light = copy.copy(obj)
    light.log = None
    return light


def init_from_env(device: str = "auto") -> Ranks:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else a single process.

    NCCL on CUDA, gloo on CPU. On CPU each rank gets ``cores / local ranks`` torch threads.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return Ranks.current()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.set_device(local_rank)
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if on_cuda else "gloo")
    global _JOINED_GROUP
    _JOINED_GROUP = True
    return Ranks.current()


_JOINED_GROUP = False  # this process joined a torchrun process group (init_from_env)


def exit_after_distributed_run() -> None:
    """End a ``torchrun`` rank that finished its run with status 0 at once, skipping interpreter teardown.

    After a complete run (every rank past :func:`shutdown`'s barrier, the run directory written),
    rank 1 was seen, rarely and under load, to abort at exit with SIGABRT ("terminate called
    without an active exception": a C++ thread of the collective stack destroyed unjoined), which
    turns a finished run into a failed ``torchrun``. Nothing is left to do, so the rank flushes its
    output and leaves with ``os._exit(0)``. A no-op in a process that never joined a group.
    """
    if not _JOINED_GROUP:
        return
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def shutdown(*, together: bool = False) -> None:
    """Tear down the process group (if any).

    Args:
        together: Wait for every rank first (the normal end of a run). A rank that destroys its
            gloo group and exits while another still works (rank 0 writing ``final/``) was seen to
            abort ("terminate called without an active exception"). Not after an error: the other
            ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


# -- wrapping the model --------------------------------------------------------------------------


def is_fsdp(module: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def wrap(model: torch.nn.Module, ranks: Ranks, strategy: str, compute_dtype: torch.dtype) -> torch.nn.Module:
    """The module the training forward goes through: ``model`` itself (one process, FSDP, sharded in
    place) or a DDP wrapper around it.

    Raises:
        ValueError: On an unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"dist_strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not ranks.enabled:
        return model
    if strategy == "fsdp":
        shard(model, compute_dtype)
        return model
    from torch.nn.parallel import DistributedDataParallel

    on_cuda = next(model.parameters()).device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[ranks.local_rank] if on_cuda else None)


def shard(model: torch.nn.Module, compute_dtype: torch.dtype) -> None:
    """FSDP2 in place: each decoder layer, then the root (embeddings, norm, head), float32 kept,
    ``compute_dtype`` computed, gradients reduced in float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [
        m
        for m in model.modules()
        if m is not model and (type(m).__name__ in names or type(m).__name__.endswith("DecoderLayer"))
    ]
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


@contextlib.contextmanager
def gathered_for_inference(model: Any) -> Iterator[None]:
    """FSDP: all parameters gathered (in the compute dtype) for the duration, so that forwards on
    this rank need no collective (each rank samples its own prompts, a different number of steps).
    A no-op for any other module. Every rank must enter it together (the gather is a collective)."""
    if not is_fsdp(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.unshard()
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def no_grad_sync(train_model: Any, last: bool) -> contextlib.AbstractContextManager:
    """DDP: skip the gradient all-reduce on all but the last micro-batch (gradients accumulate
    locally in float32). FSDP reduces every micro-batch: its unsynchronised accumulation would
    be in the bfloat16 compute dtype."""
    if last or not hasattr(train_model, "no_sync"):
        return contextlib.nullcontext()
    return train_model.no_sync()


# -- state -----------------------------------------------------------------------------------------


def unwrapped(model: Any) -> Any:
    """The model inside a DDP wrapper (FSDP shards in place: the module itself)."""
    return getattr(model, "module", model)


def trainable_state(model: Any, ranks: Ranks) -> dict[str, torch.Tensor]:
    """Full float tensors of the trainable parameters, on CPU, by parameter name.

    FSDP: a collective; the tensors are on rank 0 only (other ranks get ``{}``).
    """
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # A model's state dict holds tensors; torch types it as any state value.
        full: dict[str, Any] = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return {n: t.contiguous() for n, t in full.items() if n in names}
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if n in names}


def optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state to save: FSDP, by parameter name (full tensors on rank 0, a collective);
    otherwise ``optimizer.state_dict()`` (DDP replicas hold the same state everywhere)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return optimizer.state_dict()


def load_state(
    model: Any, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor], optim: dict[str, Any]
) -> None:
    """Load full trainable weights and an optimizer state (as saved above) on every rank."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    by_name = bool(optim.get("state")) and all(isinstance(k, str) for k in optim["state"])
    if is_fsdp(model):
        options = StateDictOptions(full_state_dict=True, strict=False)
        state: dict[str, Any] = dict(weights)  # torch's parameter type is dict[str, any state value]
        set_model_state_dict(model, state, options=options)
        if optim.get("state") and not by_name:
            raise ValueError(
                "this checkpoint's optimizer state is by parameter index (written without FSDP): "
                "resume it with dist_strategy='ddp' or in one process"
            )
        set_optimizer_state_dict(model, optimizer, optim, options=options)
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    if by_name:  # written by an FSDP run
        set_optimizer_state_dict(model, optimizer, optim, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(optim)


def grad_norm_value(norm: Any) -> float:
    """A float from ``clip_grad_norm_``'s result (a DTensor under FSDP)."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if callable(full) else norm)
