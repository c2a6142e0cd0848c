"""SFT data: demonstrations that show their answer, and episodes read back from notebooks and JSONL."""

from __future__ import annotations

import ast
import json

import gymnasium as gym
import pytest

import l0_env
from l0_env.policies import OraclePolicy, answer_visible
from l0_learner.sft import load_samples, record_demonstrations


def test_answer_visible_needs_the_whole_answer_in_the_context_or_yes_no() -> None:
    system = {"role": "system", "content": "Example: Paris is the capital."}
    obs = [
        system,
        {"role": "user", "content": "Question: Who wrote it?\nThe Hobbit - written by J. R. R. Tolkien."},
    ]
    assert answer_visible(["J.R.R. Tolkien", "Tolkien"], obs)  # any alias, after normalisation
    assert answer_visible("the Hobbit", obs)  # articles and case do not matter
    assert not answer_visible("Paris", obs)  # the system prompt is not evidence
    assert not answer_visible("Tolk", obs)  # whole words only
    assert answer_visible("Yes", obs) and answer_visible(["no"], obs)
    assert not answer_visible("", obs)


def play(env, policy, **reset_kwargs):
    obs, info = env.reset(**reset_kwargs)
    seen, done = [], False
    while not done:
        action = policy(obs, info)
        seen.append((obs, action))
        obs, _r, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return seen, info


def test_the_question_oracle_searches_the_question_and_submits_what_the_hits_show(tmp_path) -> None:
    env = gym.make(l0_env.ENV_ID, split="train", sandbox="bwrap", max_steps=2, record_dir=tmp_path)
    try:
        seen, info = play(env, OraclePolicy("gold", lookup="question"), seed=0, options={"task_index": 0})
    finally:
        env.close()
    task = info["task"]
    (obs0, search), (obs1, submit) = seen
    assert f"web_search({task['question']!r}, k=3)" in search
    assert info["reward_components"]["em"] == 1.0 and info["cell_status"] == "ok"
    assert task["answers"][0] in submit
    assert " - " in obs1[-1]["content"]  # the hits were printed as "title - snippet"
    # Notebooks are lossless trajectories: SFT rebuilds exactly the contexts the agent saw.
    samples = load_samples(next(tmp_path.glob("*.ipynb")), max_steps=2)
    assert [s["messages"] for s in samples] == [obs0, obs1]
    assert [s["action"] for s in samples] == [search, submit]
    assert load_samples(tmp_path, max_steps=2) == samples  # a folder of notebooks
    episode = json.loads((tmp_path / "episodes.jsonl").read_text().splitlines()[0])
    jsonl = tmp_path / "episode.jsonl"
    jsonl.write_text(json.dumps(episode) + "\n")
    assert [s["messages"] for s in load_samples(jsonl, max_steps=2)] == [obs0, obs1]


def test_demonstrations_keep_only_episodes_whose_answer_was_visible() -> None:
    stats: dict[str, int] = {}
    samples = record_demonstrations(6, max_steps=2, seed=3, stats=stats)
    assert len(samples) == 6 and [s["step"] for s in samples] == [0, 1] * 3
    assert stats["kept"] == 3 and stats["episodes"] >= 3
    for search, submit in zip(samples[::2], samples[1::2], strict=True):
        assert search["task_id"] == submit["task_id"] and "web_search(" in search["action"]
        answer = ast.literal_eval(submit["action"].split("submit_final_answer(", 1)[1].rsplit(")", 1)[0])
        assert answer_visible(answer, submit["messages"])


def test_a_foreign_notebook_or_line_gets_a_clear_error(tmp_path) -> None:
    import nbformat
    from nbformat import v4

    path = tmp_path / "mine.ipynb"
    nbformat.write(v4.new_notebook(cells=[v4.new_code_cell("1+1")]), str(path))
    with pytest.raises(ValueError, match="not an l0_env episode notebook"):
        load_samples(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: neither a sample"):
        load_samples(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"without \.ipynb"):
        load_samples(tmp_path / "empty")
