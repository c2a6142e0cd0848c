"""The cluster executor's pure parts, without Ray: observation deltas, the entry point's errors,
and that the single-machine path never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l0_env.cluster.search import is_embedded
from l0_env.cluster.wire import decode_obs, encode_obs
from l0_env.vector import make_notebook_vector_env

messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=20)}
    ),
    max_size=8,
)


@given(messages, messages)
def test_a_delta_rebuilds_the_observation_from_any_previous_one(previous, obs) -> None:
    keep, tail = encode_obs(previous, obs)
    assert decode_obs(previous, keep, tail) == obs
    assert keep == 0 or previous[:keep] == obs[:keep]


def test_a_growing_chat_sends_only_its_new_messages() -> None:
    chat = [{"role": "system", "content": "s" * 10_000}, {"role": "user", "content": "q"}]
    grown = [*chat, {"role": "assistant", "content": "a"}, {"role": "user", "content": "o"}]
    keep, tail = encode_obs(chat, grown)
    assert keep == 2 and tail == grown[2:]
    trimmed = [chat[0], {"role": "user", "content": "q (trimmed)"}, *grown[2:]]
    assert encode_obs(grown, trimmed) == (1, trimmed[1:]), "a changed message is sent again"
    assert encode_obs(None, chat) == (0, chat)


def test_a_delta_longer_than_what_the_receiver_holds_is_refused() -> None:
    with pytest.raises(ValueError, match="keeps 3 messages, but 1 are held"):
        decode_obs([{"role": "user", "content": "x"}], 3, [])


def test_embedded_search_settings_get_a_server_per_node_remote_ones_do_not() -> None:
    assert is_embedded(None) and is_embedded("bm25") and is_embedded({"backend": "hybrid", "rrf_k": 10})
    assert not is_embedded("http://127.0.0.1:8000") and not is_embedded("serper")
    assert not is_embedded({"backend": "http", "url": "http://127.0.0.1:8000"})


def test_the_entry_point_names_bad_executors_and_misplaced_ray_options() -> None:
    with pytest.raises(ValueError, match="executor must be one of"):
        make_notebook_vector_env(2, executor="dask")
    with pytest.raises(ValueError, match=r"\['ray_address'\] are options of executor='ray'"):
        make_notebook_vector_env(2, ray_address="auto")


def test_the_single_machine_path_does_not_import_ray() -> None:
    code = (
        "import sys, gymnasium as gym, l0_env, l0_env.cluster\n"
        "venv = gym.make_vec('L0Notebook-v0', num_envs=1, pool_size=0)\n"
        "venv.close()\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
