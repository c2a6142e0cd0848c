"""The notebook env end to end: real sandboxed kernel, real BM25 index, bundled questions."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import nbformat
import pytest

import l0_env
from l0_env import rewards as R
from l0_env.policies import OraclePolicy

SANDBOX = "bwrap"


def run(env, policy, **reset_kwargs):
    obs, info = env.reset(**reset_kwargs)
    infos, total = [info], 0.0
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(policy(obs, info))
        total += reward
        infos.append(info)
    return total, infos, terminated, truncated


def skip_unsupported_start(kernel_start: str) -> None:
    from l0_env.kernel import zygote

    if kernel_start == "zygote" and zygote.unsupported_reason(True) is not None:
        pytest.skip(f"forked kernels: {zygote.unsupported_reason(True)}")


@pytest.fixture(scope="module", params=["spawn", "zygote"])
def env(request):
    """The env tests run with both kernel start modes (a spawned and a forked kernel per episode)."""
    skip_unsupported_start(request.param)
    env = gym.make(l0_env.ENV_ID, sandbox=SANDBOX, max_steps=5, cell_timeout=10, kernel_start=request.param)
    yield env
    env.close()


@pytest.mark.parametrize("task_index", [0, 7, 21])
def test_oracle_episode_gets_em_1_and_the_full_l0_reward(env, task_index):
    total, infos, terminated, truncated = run(
        env, OraclePolicy("gold"), seed=1, options={"task_index": task_index}
    )
    last = infos[-1]
    assert terminated and not truncated
    assert last["reward_components"]["em"] == 1.0
    assert last["final_answer"] == last["task"]["answers"][0]
    assert total == pytest.approx(1.0)  # 0.8·(0.9 + 0.1) + 0.1·1 + 0.1·1
    titles = set(last["task"]["supporting_titles"])
    assert titles <= set(last["notepad"]["facts"]), "the oracle noted every gold page it opened"


def test_wrong_answer_gets_em_0(env):
    total, infos, terminated, _ = run(env, OraclePolicy("wrong"), seed=2)
    assert terminated
    comps = infos[-1]["reward_components"]
    assert comps["em"] == 0.0 and comps["has_answer"] == 1.0
    assert total == pytest.approx(0.8 * 0.1 + 0.1 + 0.1)


def test_step_rewards_sum_to_l0_trajectory_reward_and_components_reallocate(env):
    env.reset(seed=3)
    steps = [
        "<think>Look at one search result first.</think><code>print(web_search('Harvey Pekar')[0]['title'])</code>",
        "<think>This step raises on purpose now.</think><code>x = 1 / 0</code>",
        "no tags at all",
        "<think>Submit a guess to end it.</think><code>submit_final_answer('nobody')</code>",
    ]
    rewards, comps = [], []
    for action in steps:
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
        comps.append(info["reward_components"])
    assert terminated
    formats = [c["format"] for c in comps]
    codes = [c["code"] for c in comps]
    assert formats == [1.0, 1.0, 0.0, 1.0]
    assert codes == [1.0, 0.0, 0.0, 1.0]
    qa = comps[-1]["qa"]
    assert sum(rewards) == pytest.approx(R.trajectory_reward(formats, codes, qa))
    assert sum(R.l0_step_rewards(formats, codes, qa)) == pytest.approx(sum(rewards))


def test_a_silent_cell_gets_no_code_credit_unless_configured(env):
    """L0's rule: a cell that runs without error but shows nothing scores code 0."""
    think = "<think>Compute something and look at it.</think>"
    env.reset(seed=0, options={"task_index": 3})
    *_, silent = env.step(f"{think}<code>x = 6 * 7</code>")
    *_, shown = env.step(f"{think}<code>print(x)</code>")
    *_, failed = env.step(f"{think}<code>print(x); 1 / 0</code>")
    assert (silent["cell_status"], shown["cell_status"], failed["cell_status"]) == ("ok", "ok", "error")
    codes = [i["reward_components"]["code"] for i in (silent, shown, failed)]
    assert codes == [0.0, 1.0, 0.0]
    lenient = gym.make(l0_env.ENV_ID, sandbox=SANDBOX, reward_weights={"silent_cell": 1.0}, pool_size=0)
    try:
        lenient.reset(seed=0, options={"task_index": 3})
        *_, info = lenient.step(f"{think}<code>x = 6 * 7</code>")
        assert info["reward_components"]["code"] == 1.0
    finally:
        lenient.close()


@pytest.mark.parametrize(
    "action",
    [
        "",
        "just prose, no tags",
        "<think>only thinking, no code at all</think>",
        None,
        b"<think>\xff\xfe</think>",
        12345,
    ],
)
def test_malformed_actions_get_a_helpful_observation_and_format_0(env, action):
    env.reset(seed=4)
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["reward_components"]["format"] == 0.0
    assert "<think>" in obs[-1]["content"] and "<code>" in obs[-1]["content"], "the format is explained"
    assert not terminated and type(truncated) is bool
    assert reward == 0.0


def test_tool_misuse_and_budgets_raise_clear_python_errors_in_the_kernel():
    env = gym.make(
        l0_env.ENV_ID, sandbox=SANDBOX, tool_budgets={"web_search": 1, "open_page": 5}, pool_size=0
    )
    try:
        env.reset(seed=0)
        code = (
            "for call in [lambda: web_search(123), lambda: web_search('x', k=0), lambda: open_page('no-such-id'),\n"
            "             lambda: web_search('first'), lambda: web_search('second')]:\n"
            "    try:\n"
            "        call(); print('ok')\n"
            "    except Exception as exc:\n"
            "        print(type(exc).__name__, '|', exc)\n"
        )
        _obs, *_, info = env.step(f"<think>Probe every misuse.</think><code>{code}</code>")
        lines = next(o["text"] for o in info["cell_outputs"]).splitlines()
        assert lines[0].startswith("TypeError | query must be a str")
        assert lines[1].startswith("ValueError | k must be an int")
        assert lines[2].startswith("LookupError | no page with id 'no-such-id'")
        assert lines[3] == "ok"
        assert lines[4].startswith("BudgetExhausted | web_search budget spent")
        # every call reaches the host, which checks the arguments against the tool's hints, and is logged
        assert [c["ok"] for c in info["tool_calls"]] == [False, False, False, True, False]
    finally:
        env.close()


def test_double_submit_is_refused_and_the_first_answer_counts(env):
    env.reset(seed=5)
    code = "submit_final_answer('first')\ntry:\n    submit_final_answer('second')\nexcept Exception as e:\n    print(e)"
    _, _, terminated, _, info = env.step(f"<think>Submit twice to test it.</think><code>{code}</code>")
    assert terminated and info["final_answer"] == "first"
    assert "already submitted" in info["cell_outputs"][0]["text"]


def test_truncation_at_max_steps_scores_qa_as_no_answer(env):
    total, infos, terminated, truncated = run(env, OraclePolicy("none", read_steps=1), seed=6)
    assert truncated and not terminated and len(infos) - 1 == 5
    assert infos[-1]["reward_components"]["qa"] == 0.0
    assert total == pytest.approx(0.2)


def test_notebook_export_opens_in_jupyter_format(env, tmp_path):
    run(env, OraclePolicy("gold"), seed=7)
    path = env.unwrapped.save_notebook(str(tmp_path / "episode.ipynb"))
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code_cells) == 3 and "web_search" in code_cells[0].source
    assert any(o.output_type == "stream" for o in code_cells[0].outputs)
    assert nb.metadata["l0"]["metrics"]["em"] == 1.0
    assert not list(tmp_path.glob(".episode.ipynb.*")), "no temp file left behind"


def test_reset_options_task_and_custom_task_list_and_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"id": "d1", "contents": '"Zorblax"\nZorblax is a fictional planet whose capital is Quenth.'},
        {"id": "d2", "contents": '"Other"\nSomething unrelated about weather.'},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    tasks = [{"question": "What is the capital of Zorblax?", "answers": ["Quenth"]}]
    env = gym.make(l0_env.ENV_ID, sandbox=SANDBOX, tasks=tasks, corpus=str(corpus), pool_size=0)
    try:
        obs, info = env.reset(seed=0)
        assert "Zorblax" in obs[1]["content"]
        code = "h = web_search('capital of Zorblax', k=1)[0]; print(h['id'], open_page(h['id']))"
        obs, *_ = env.step(f"<think>Search the tiny corpus.</think><code>{code}</code>")
        assert "d1" in obs[-1]["content"] and "Quenth" in obs[-1]["content"]
        _, info = env.reset(options={"task": {"question": "Two plus two?", "answers": ["4", "four"]}})
        assert info["task"]["question"] == "Two plus two?"
        _, _reward, terminated, _, info = env.step(
            "<think>Simple sum, answer.</think><code>submit_final_answer('four')</code>"
        )
        assert terminated and info["reward_components"]["em"] == 1.0
    finally:
        env.close()


def test_same_seed_same_task_and_fresh_info_dicts(env):
    obs1, info1 = env.reset(seed=123)
    obs2, info2 = env.reset(seed=123)
    assert obs1 == obs2 and info1["task"]["id"] == info2["task"]["id"]
    _, _, _, _, a = env.step("<think>A trivial cell here.</think><code>notepad.add_fact('k', 'v')</code>")
    _, _, _, _, b = env.step("<think>A trivial cell here.</think><code>x = 2</code>")
    assert (
        a is not b and a["notepad"] is not b["notepad"] and a["notepad"]["facts"] is not b["notepad"]["facts"]
    )
    assert b["notepad"]["facts"] == {"k": "v"}


def test_notepad_is_rendered_in_the_last_message_only(env):
    env.reset(seed=8)
    obs, *_ = env.step(
        "<think>Keep a note for later.</think><code>notepad.add_todo('find the director')</code>"
    )
    obs, *_ = env.step("<think>Another trivial step.</think><code>print('hi')</code>")
    assert "find the director" in obs[-1]["content"]
    assert all("find the director" not in m["content"] for m in obs[:-1] if m["role"] == "user")
    roles = [m["role"] for m in obs]
    assert roles[:2] == ["system", "user"] and roles[2:] == ["assistant", "user"] * 2


def test_step_before_reset_is_a_clear_error():
    env = gym.make(l0_env.ENV_ID, sandbox=SANDBOX, pool_size=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step("<think>too early</think><code>1</code>")
    env.close()


def test_bad_configuration_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="max_steps"):
        l0_env.NotebookEnv(max_steps=0)
    with pytest.raises(ValueError, match="sandbox"):
        l0_env.NotebookEnv(sandbox="docker")
    with pytest.raises(ValueError, match="cell_timeout"):
        l0_env.NotebookEnv(cell_timeout=-1)


@pytest.mark.parametrize("kernel_start", ["spawn", "zygote"])
def test_gymnasium_check_env_and_check_l0_env_pass_for_every_registered_id(kernel_start):
    skip_unsupported_start(kernel_start)
    ids = [env_id for env_id in gym.registry if env_id.startswith("L0")]
    assert ids == [l0_env.ENV_ID]
    for env_id in ids:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # gymnasium's checker warns about what it dislikes: fail on it
            env = gym.make(env_id, sandbox=SANDBOX, max_steps=4, pool_size=0, kernel_start=kernel_start)
            l0_env.check_l0_env(env)
