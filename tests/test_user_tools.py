"""The agent's tools beyond search: user functions as tools, through the real sandboxed kernel.

Everything about a tool derives from one ``l0_env.tool.Tool``: the kernel's function (signature,
docstring), the system prompt's entry, argument checks from the type hints, the budget, the
timeout and what the agent sees when it fails (a ``ToolCallError`` as raised; any other exception
by its type name only, never its text).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import gymnasium as gym
import pytest

import l0_env
from l0_env.checker import check_l0_env
from l0_env.kernel.pool import KernelPool
from l0_env.kernel.session import KernelConfig
from l0_env.tool import MAX_RESULT_BYTES, Tool, ToolCallError
from l0_env.type_hints import ArgumentTypeError, check_hint, check_value, describe

SANDBOX = "bwrap"
SECRET = "sk-live-123456789"


def stock_price(ticker: str) -> float:
    """Last closing price of a ticker.

    Prices are in USD; an unknown ticker is a LookupError.
    """
    prices = {"ACME": 12.5, "INIT": 3.0}
    if ticker not in prices:
        raise ToolCallError("LookupError", f"no ticker {ticker!r}; known: {sorted(prices)}")
    return prices[ticker]


def convert(value: float, unit: Literal["C", "F"] = "C", *, digits: int | None = None) -> dict[str, Any]:
    """Convert a temperature to the other unit."""
    out = value * 9 / 5 + 32 if unit == "C" else (value - 32) * 5 / 9
    return {"value": out if digits is None else round(out, digits), "unit": "F" if unit == "C" else "C"}


def leaky(x: int) -> int:
    """A tool whose failure message carries a secret."""
    raise RuntimeError(f"upstream refused key {SECRET} for {x}")


def not_json() -> Any:
    """Returns a set."""
    return {1, 2}


def huge() -> str:
    """Returns more than the bridge takes."""
    return "x" * (MAX_RESULT_BYTES + 10)


def slow() -> str:
    """Sleeps past its timeout."""
    time.sleep(12)
    return "late"


def make(**kwargs: Any) -> gym.Env:
    kwargs.setdefault("sandbox", SANDBOX)
    kwargs.setdefault("pool_size", 0)
    kwargs.setdefault("cell_timeout", 60)
    return gym.make(l0_env.ENV_ID, max_steps=5, **kwargs)


def run(env: gym.Env, code: str) -> tuple[str, dict[str, Any]]:
    _obs, _r, _term, _trunc, info = env.step(f"<think>Use the tool.</think><code>{code}</code>")
    return "\n".join(o.get("text", "") for o in info["cell_outputs"]), info


# -- the pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hint", "ok"),
    [
        ("a", str, True),
        (1, str, False),
        (3, int, True),
        (True, int, False),  # a bool is not an int for a tool
        (3, float, True),
        (2.5, int, False),
        (None, int | None, True),
        (["a", "b"], list[str], True),
        (["a", 2], list[str], False),
        ({"a": 1}, dict[str, int], True),
        ({"a": "1"}, dict[str, int], False),
        ("C", Literal["C", "F"], True),
        ("K", Literal["C", "F"], False),
        (1, Literal[True], False),
        ([[1], [2]], list[list[int]], True),
        ({"x": [1, "2"]}, dict[str, list[int]], False),
        (object(), Any, True),
    ],
)
def test_json_values_are_checked_against_hints(value: Any, hint: Any, ok: bool) -> None:
    if ok:
        check_value("arg", value, hint)
    else:
        with pytest.raises(ArgumentTypeError, match=r"^arg(\[.*\])* must be "):
            check_value("arg", value, hint)


def test_messages_name_the_argument_and_both_types() -> None:
    with pytest.raises(ArgumentTypeError, match=r"^ids\[1\] must be a str, got int$"):
        check_value("ids", ["a", 1], list[str])
    assert describe(int | None) == "an int or None"
    assert describe(Literal["C", "F"]) == "'C' or 'F'"


@pytest.mark.parametrize("hint", [set[int], tuple[int, int], dict[int, str], bytes, complex, type])
def test_hints_that_are_not_json_data_are_refused_when_the_tool_is_defined(hint: Any) -> None:
    with pytest.raises(ValueError, match=r"JSON|dict keys"):
        check_hint("p", hint)


def test_a_tool_derives_its_signature_docs_and_stub_from_the_function() -> None:
    tool = Tool.from_function(convert)
    assert tool.signature_text == "convert(value, unit='C', *, digits=None)"
    assert tool.doc().doc == "Convert a temperature to the other unit."
    stub = tool.stub().to_json()
    assert stub["params"] == [
        {"name": "value", "keyword_only": False},
        {"name": "unit", "keyword_only": False, "default": "C"},
        {"name": "digits", "keyword_only": True, "default": None},
    ]
    assert stub["doc"].startswith("convert(value, unit='C', *, digits=None)")
    assert Tool.from_function(stock_price).doc().doc == "Last closing price of a ticker."  # first paragraph


def undocumented(x: int) -> int:
    return x


def star_args(*args: int) -> int:
    """Varargs."""
    return 0


def bad_default(x: set[int] | None = None) -> int:
    """A set is not JSON."""
    return 0


def print_(x: int) -> int:
    """Named like a builtin below."""
    return x


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"fn": undocumented}, "has no description"),
        ({"fn": star_args}, "must be named"),
        ({"fn": bad_default}, "not JSON data"),
        ({"fn": print_, "name": "print"}, "taken in the kernel"),
        ({"fn": print_, "name": "notepad"}, "taken in the kernel"),
        ({"fn": print_, "name": "_private"}, "must not start with '_'"),
        ({"fn": print_, "name": "not valid"}, "Python identifier"),
        ({"fn": stock_price, "budget": -1}, "budget must be"),
        ({"fn": stock_price, "timeout": float("nan")}, "timeout must be"),
        ({"fn": 42}, "must be a callable"),
    ],
)
def test_functions_that_cannot_be_tools_are_refused_with_the_reason(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Tool.from_function(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"tools": [stock_price, stock_price]}, "two tools are named 'stock_price'"),
        ({"tools": [Tool.from_function(stock_price, name="web_search")]}, "two tools are named 'web_search'"),
        ({"tools": stock_price}, "tools must be a list"),
        ({"tools": [stock_price], "tool_budgets": {"stock_prise": 1}}, "unknown tool 'stock_prise'"),
        ({"tools": [stock_price], "tool_budgets": {"stock_price": -2}}, r"tool_budgets\['stock_price'\]"),
    ],
)
def test_bad_tool_arguments_fail_at_make(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make(**kwargs)


def test_budgets_merge_over_each_tools_own_and_none_lifts_one() -> None:
    env = make(tools=[Tool.from_function(stock_price, budget=3)], tool_budgets={"open_page": None})
    try:
        assert env.unwrapped.tool_budgets == {"web_search": 20, "stock_price": 3}
    finally:
        env.close()


# -- through the sandbox ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env():
    env = make(
        tools=[
            stock_price,
            convert,
            leaky,
            not_json,
            huge,
            Tool.from_function(slow, timeout=0.5),
            Tool.from_function(lambda: "pong", name="ping", description="Answers pong.", budget=2),
        ]
    )
    yield env
    env.close()


def test_user_tools_are_in_the_prompt_and_work_in_the_kernel(env) -> None:
    obs, _ = env.reset(seed=0)
    system = obs[0]["content"]
    assert "stock_price(ticker)" in system and "Last closing price of a ticker." in system
    assert "convert(value, unit='C', *, digits=None)" in system
    text, info = run(env, "print(stock_price('ACME'))\nprint(convert(100, digits=1))\nhelp(stock_price)")
    assert info["cell_status"] == "ok", text
    assert "12.5" in text and "{'value': 212.0, 'unit': 'F'}" in text
    assert "stock_price(ticker)" in text and "Prices are in USD" in text, "help() shows the whole docstring"
    assert info["tool_calls"][0]["tool"] == "stock_price" and info["tool_calls"][0]["ok"]


def test_wrong_calls_are_python_errors_the_agent_can_read(env) -> None:
    env.reset(seed=0)
    code = (
        "for call in [lambda: stock_price(5), lambda: stock_price(), lambda: stock_price('A', 'B'),\n"
        "             lambda: convert(1, unit='K'), lambda: convert(1, 'C', 2), lambda: stock_price({1, 2}),\n"
        "             lambda: stock_price('NOPE')]:\n"
        "    try:\n"
        "        call()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, '|', exc)\n"
    )
    text, _ = run(env, code)
    lines = text.splitlines()
    assert lines[0] == "TypeError | ticker must be a str, got int"
    assert lines[1].startswith("TypeError | stock_price(ticker): missing a required argument")
    assert lines[2].startswith("TypeError | stock_price(ticker): too many positional arguments")
    assert lines[3] == "TypeError | unit must be 'C' or 'F', got str"
    assert lines[4].startswith("TypeError | convert(value, unit='C', *, digits=None): too many positional")
    assert lines[5].startswith("TypeError | stock_price: arguments must be JSON data")
    assert lines[6] == "LookupError | no ticker 'NOPE'; known: ['ACME', 'INIT']"


def test_a_failing_tool_shows_its_type_never_its_text(env) -> None:
    env.reset(seed=0)
    text, info = run(env, "leaky(1)")
    assert info["cell_status"] == "error" and not info["kernel_restarted"]
    assert "ToolError: leaky failed on the host (RuntimeError); try again" in text
    assert SECRET not in text and SECRET not in str(info["tool_calls"])
    text, _ = run(env, "print(stock_price('INIT'))")
    assert text.strip() == "3.0", "the episode goes on"


def test_results_must_be_json_data_of_bounded_size(env) -> None:
    env.reset(seed=0)
    text, _ = run(
        env, "for f in (not_json, huge):\n    try:\n        f()\n    except ToolError as e:\n        print(e)"
    )
    lines = text.splitlines()
    assert lines[0].startswith("not_json returned set, which is not JSON data")
    assert lines[1].startswith(f"huge returned {MAX_RESULT_BYTES + 12:,} bytes; at most {MAX_RESULT_BYTES:,}")


def test_a_hung_tool_is_abandoned_at_its_timeout(env) -> None:
    env.reset(seed=0)
    started = time.monotonic()
    text, _ = run(env, "try:\n    slow()\nexcept ToolError as e:\n    print(e)")
    assert "slow timed out after 0.5s; try again" in text
    assert time.monotonic() - started < 10, "the step did not wait for the 12 s sleep"


def test_budgets_apply_to_user_tools_per_episode(env) -> None:
    env.reset(seed=0)
    text, _ = run(
        env,
        "for _ in range(3):\n    try:\n        print(ping())\n    except BudgetExhausted as e:\n        print('spent:', e)",
    )
    assert text.splitlines() == [
        "pong",
        "pong",
        "spent: ping budget spent (2 calls this episode); answer with what you have",
    ]
    assert env.unwrapped.tool_counts["ping"] == 2
    env.reset(seed=1)
    text, _ = run(env, "print(ping())")
    assert text.strip() == "pong", "a new episode has a new budget"


def test_check_env_passes_with_tools_configured() -> None:
    env = make(tools=[stock_price, convert])
    try:
        check_l0_env(env)
    finally:
        env.close()


def test_a_shared_pool_must_define_the_envs_tools() -> None:
    pool = KernelPool(KernelConfig(sandbox=SANDBOX), size=0)
    try:
        with pytest.raises(ValueError, match="its kernels define other tools"):
            make(tools=[stock_price], kernel_pool=pool)
    finally:
        pool.close()


def test_the_vector_env_gives_every_env_the_tools() -> None:
    venv = gym.make_vec(l0_env.ENV_ID, num_envs=2, sandbox=SANDBOX, tools=[stock_price], max_steps=3)
    try:
        venv.reset(seed=0)
        actions = ["<think>t</think><code>print(stock_price('ACME'))</code>"] * 2
        _obs, _r, _term, _trunc, infos = venv.step(actions)
        assert [o[0]["text"].strip() for o in infos["cell_outputs"]] == ["12.5", "12.5"]
    finally:
        venv.close()


def test_the_kernel_waits_past_each_tools_own_deadline() -> None:
    """A tool allowed 200 s must not be cut by the kernel's socket wait (120 s by default)."""
    from l0_env.tool_service import ToolService

    service = ToolService(
        [Tool.from_function(slow, timeout=200), Tool.from_function(stock_price)], timeout=20
    )
    waits = {stub.name: stub.to_json()["wait_s"] for stub in service.stubs}
    assert waits == {"slow": 260.0, "stock_price": 120.0}
