"""Forging the code-execution reward from inside the kernel.

The host scores a cell from what it knows, the status of the kernel's ``execute_reply`` (and the
timeout, death and flood limits), not from the outputs the cell controls. What stays forgeable:
a kernel that rewrites ipykernel itself (its reply) -- see the README.
"""

from __future__ import annotations

import pytest

import l0_env
from l0_env import rewards as R

from .conftest import LIMITS, TASK, TinySearch, assert_env_works, cell_text, step


def test_silenced_traceback_does_not_turn_a_failure_into_a_success(env):
    _, _, info = step(env, "get_ipython().showtraceback = lambda *a, **k: None\nprint('silenced')")
    assert info["reward_components"]["code"] == 1.0
    obs_text, _, info = step(env, "x = 1 / 0")
    assert info["cell_status"] == "error", cell_text(info)
    assert info["reward_components"]["code"] == 0.0
    assert "ZeroDivisionError: division by zero" in obs_text, obs_text  # the agent is told anyway
    assert_env_works(env)


def test_many_displays_do_not_dilute_an_error(env):
    _, _, info = step(env, "from IPython.display import display\nfor i in range(99):\n    display(i)\n1 / 0")
    assert info["cell_status"] == "error"
    assert info["reward_components"]["code"] == 0.0  # was 0.99: 1 error in 100 outputs
    assert_env_works(env)


def test_printed_fake_errors_do_not_fail_a_good_cell(env):
    """Error-looking outputs of a cell that ran fine (a post-run hook that raises prints a real
    ``error`` output) do not cost the cell its reward; its own exception does."""
    step(
        env,
        "def _boom(*a):\n    raise ValueError('fake error from a hook')\nget_ipython().events.register('post_run_cell', _boom)",
    )
    _, _, info = step(env, "print('fine')")
    assert "fine" in cell_text(info)
    assert info["reward_components"]["code"] == 1.0, cell_text(info)
    step(env, "get_ipython().events.unregister('post_run_cell', _boom)")
    assert_env_works(env)


def test_one_agent_cannot_fail_the_other_agents_cells():
    """In the shared notebook, the solver installs a hook that prints an error into every later cell;
    the verifier's good cell still scores its full code reward."""
    env = l0_env.parallel_env(
        sandbox="bwrap", max_cycles=3, pool_size=0, tasks=[TASK], search=TinySearch(), limits=LIMITS
    )
    try:
        env.reset(seed=0)
        _, _, _, _, infos = env.step(
            {
                "solver": "<think>Make the verifier look bad.</think><code>def _boom(*a):\n"
                "    raise RuntimeError('verifier failed')\n"
                "get_ipython().events.register('post_run_cell', _boom)\nprint('armed')</code>",
                "verifier": "<think>Check a simple value.</think><code>print('checked', 6 * 7)</code>",
            }
        )
        verifier = infos["verifier"]
        assert "checked 42" in "\n".join(o["text"] for o in verifier["cell_outputs"])
        assert verifier["cell_status"] == "ok"
        assert verifier["reward_components"]["code"] == 1.0
    finally:
        env.close()


@pytest.mark.parametrize(
    ("failed", "n_outputs", "n_errors", "expected"),
    # (False, 0, 0): a silent cell scores 0 (L0's rule), however it got silent.
    [(True, 100, 1, 0.0), (True, 0, 0, 0.0), (False, 1, 1, 1.0), (False, 0, 0, 0.0), (None, 4, 1, 0.75)],
)
def test_code_reward_from_the_host_known_outcome(failed, n_outputs, n_errors, expected):
    assert R.code_execution_reward(n_outputs, n_errors, failed=failed) == pytest.approx(expected)
    assert R.code_execution_reward(n_outputs, n_errors, ran=False, failed=failed) == 0.0
