"""L0 Gym on a Ray cluster: envs in actors across nodes, one search server per node.

    venv = gym.make_vec("L0Notebook-v0", num_envs=512, executor="ray", ray_address="auto")

is a :class:`RayNotebookVectorEnv` (``l0_env.cluster.vector``). Ray is the optional ``ray``
extra; nothing outside this package imports it, and importing this package does not either.
:mod:`l0_env.cluster.local` starts a real multi-node cluster on one machine for tests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RayNotebookVectorEnv"]


def __getattr__(name: str) -> Any:
    if name == "RayNotebookVectorEnv":
        from .vector import RayNotebookVectorEnv

        return RayNotebookVectorEnv
    raise AttributeError(name)
