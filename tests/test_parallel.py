"""PettingZoo parallel env: agents share one notebook; PettingZoo's own conformance tests."""

from __future__ import annotations

import nbformat
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import l0_env

SANDBOX = "bwrap"


def make(**kwargs):
    return l0_env.parallel_env(sandbox=SANDBOX, max_cycles=3, pool_size=0, **kwargs)


def test_pettingzoo_parallel_api_test_passes():
    env = make()
    parallel_api_test(env, num_cycles=6)
    env.close()


def test_pettingzoo_parallel_seed_test_passes():
    parallel_seed_test(make)


def test_agents_share_one_kernel_and_the_team_shares_the_answer_reward(tmp_path):
    env = make(record_dir=str(tmp_path))
    try:
        obs, infos = env.reset(seed=0)
        gold = infos["solver"]["task"]["answers"][0]
        obs, rewards, terms, truncs, infos = env.step(
            {
                "solver": "<think>Compute a value for the team.</think><code>x = 40 + 2\nprint(x)</code>",
                "verifier": "<think>Check the solver's value.</think><code>assert x == 42\nprint('verified', x)</code>",
            }
        )
        assert "verified 42" in obs["verifier"][-1]["content"], "the verifier sees the solver's variable"
        assert "x = 40 + 2" in obs["verifier"][1]["content"], (
            "the verifier saw the solver's code before acting"
        )
        assert "verified 42" in obs["solver"][-1]["content"], "the solver sees the verifier's turn"
        assert rewards == {"solver": pytest.approx(0.2), "verifier": pytest.approx(0.2)}
        assert not any(terms.values()) and not any(truncs.values())
        obs, rewards, terms, truncs, infos = env.step(
            {
                "solver": f"<think>The answer is known now.</think><code>submit_final_answer({gold!r})</code>",
                "verifier": "<think>Never runs: the episode ended.</think><code>print('late')</code>",
            }
        )
        assert all(terms.values()) and env.agents == []
        assert infos["verifier"] == {"acted": False}
        assert rewards["solver"] == pytest.approx(0.8)
        assert rewards["verifier"] == pytest.approx(0.8), "the verifier gets the team's answer reward"
        nb = nbformat.read(env.save_notebook(str(tmp_path / "team.ipynb")), as_version=4)
        assert "(solver)" in nb.cells[1].source and "(verifier)" in nb.cells[3].source
    finally:
        env.close()
    assert len(list(tmp_path.glob("*.ipynb"))) == 2  # the recorded episode and the one saved by hand


def test_truncated_after_max_cycles_and_bad_arguments():
    env = make(agents=("a", "b", "c"))
    try:
        env.reset(seed=1)
        step = "<think>Just a small step.</think><code>y = 1</code>"
        for _cycle in range(3):
            _, _, terms, truncs, _ = env.step({a: step for a in ("a", "b", "c")})
        assert all(truncs.values()) and not any(terms.values()) and env.agents == []
        with pytest.raises(RuntimeError, match="reset"):
            env.step({"a": step})
        env.reset(seed=2)
        with pytest.raises(ValueError, match="no action"):
            env.step({"a": step})
    finally:
        env.close()
    with pytest.raises(ValueError, match="distinct"):
        l0_env.parallel_env(agents=("x", "x"))
