"""L0 Gym: L0's NB-Agent notebook environment for gymnasium (no torch import anywhere in it).

``import l0_env`` registers ``L0Notebook-v0``::

    import gymnasium as gym, l0_env
    env = gym.make("L0Notebook-v0")
"""

from gymnasium.envs.registration import register, registry

from .checker import check_l0_env
from .notebook import NotebookEnv
from .spaces import ChatSpace, TextSpace, refuse_shared_memory
from .tasks import FILE_TASKS_DIR, Task, load_tasks
from .tool import Tool, ToolCallError

ENV_ID = "L0Notebook-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="l0_env.notebook:NotebookEnv",
        vector_entry_point="l0_env.vector:make_notebook_vector_env",
        nondeterministic=True,
        # gymnasium's PassiveEnvChecker (gymnasium 1.x) breaks an env whose first reset raises:
        # it marks reset checked before calling it, keeps no data, and the first step after a good
        # reset then fails with TypeError (after the cell ran). Our tests run check_env and
        # check_l0_env on this id instead; gym.make(..., disable_env_checker=False) still adds it.
        disable_env_checker=True,
    )

refuse_shared_memory()


def parallel_env(agents=("solver", "verifier"), **kwargs):
    """PettingZoo ParallelEnv: ``agents`` share one task and one notebook (needs ``pettingzoo``)."""
    from .parallel import parallel_env as make

    return make(agents, **kwargs)


__all__ = [
    "ENV_ID",
    "FILE_TASKS_DIR",
    "ChatSpace",
    "NotebookEnv",
    "Task",
    "TextSpace",
    "Tool",
    "ToolCallError",
    "check_l0_env",
    "load_tasks",
    "parallel_env",
]
__version__ = "0.1.0"
