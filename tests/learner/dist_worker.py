"""Run by ``torchrun`` from ``test_distributed.py``: one update per strategy on the toy env, 2 ranks.

``python -m torch.distributed.run --nproc-per-node 2 tests/learner/dist_worker.py TINY OUT``: for
'ddp' then 'fsdp', every rank builds an AgenticPG on the tiny model, collects one batch (each
rank runs its share of the question groups), updates once, and writes ``OUT/<strategy>-rank<r>.pt``:
the jobs it ran, the gathered episodes, the metrics, the full weights before and after.
"""

from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter, full, on every rank (a DTensor is gathered)."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            t = p.detach()
            out[name] = (t.full_tensor() if hasattr(t, "full_tensor") else t).cpu().clone()
    return out


def main(tiny: str, out_dir: str) -> None:
    from toy_configs import TWO_RANKS, toy_config  # this file's folder is on sys.path (run by path)

    from l0_learner import distributed as D
    from l0_learner.algorithms import AgenticPG
    from l0_learner.rollout import run_episodes

    ranks = D.init_from_env("cpu")
    torch.set_num_threads(1)
    assert ranks.world == 2, ranks
    import l0_learner.algorithms.agentic_pg as pg

    ran: list[int] = []

    def recording_run(backend, venv, jobs, **kwargs):
        ran.extend(j.group for j in jobs)
        return run_episodes(backend, venv, jobs, **kwargs)

    pg.run_episodes = recording_run
    for strategy in ("ddp", "fsdp"):
        ran.clear()
        cfg = toy_config(tiny, TWO_RANKS, dist_strategy=strategy, prompt_grad=False)
        algo = AgenticPG(cfg)
        before = full_weights(algo.model)
        episodes, _, _ = algo.collect()
        advantages = algo.advantages(episodes)
        metrics = algo.update(episodes, advantages)
        after = full_weights(algo.model)
        torch.save(
            {
                "groups_run": sorted(set(ran)),
                "episodes": episodes,
                "advantages": advantages,
                "metrics": metrics,
                "before": before,
                "after": after,
                "fsdp": D.is_fsdp(algo.model),
            },
            os.path.join(out_dir, f"{strategy}-rank{ranks.rank}.pt"),
        )
        algo.close()
    D.shutdown(together=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
