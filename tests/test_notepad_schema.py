"""The host's notepad check (pure): known keys only, bounded items and text, clear refusals.

The attacks through the real kernel are in ``tests/security/test_untrusted_kernel_data.py``.
"""

from __future__ import annotations

import time

import pytest

from l0_env.kernel.bridge import ToolCallError
from l0_env.kernel.notepad import MAX_FACTS, MAX_NOTEPAD_CHARS, MAX_PLAN_ITEMS, validate_notepad

GOOD = {
    "plan": [{"text": "search", "status": "done"}, {"text": "read", "status": "doing"}],
    "facts": {"director": "Scott Derrickson"},
    "draft": "American",
}


def refusal(state: object) -> str:
    with pytest.raises(ToolCallError) as info:
        validate_notepad(state)
    assert info.value.kind == "ValueError"
    assert info.value.message.startswith("notepad not saved"), info.value.message
    return info.value.message


def test_what_the_kernel_notepad_pushes_is_kept_as_a_fresh_copy() -> None:
    kept = validate_notepad(GOOD)
    assert kept == GOOD and kept is not GOOD and kept["plan"][0] is not GOOD["plan"][0]
    assert validate_notepad({}) == {"plan": [], "facts": {}, "draft": ""}
    limit = {"plan": [], "facts": {}, "draft": "d" * MAX_NOTEPAD_CHARS}
    assert validate_notepad(limit) == limit


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ("not a dict", "must be an object"),
        ({**GOOD, "hidden": "x" * 1_000_000}, "unknown key 'hidden'"),
        ({"plan": "x"}, "plan must be a list"),
        ({"plan": [{"text": "a", "status": "blocked"}]}, "status must be one of"),
        ({"plan": [{"text": ["a"], "status": "todo"}]}, "text must be a str"),
        ({"plan": [{"text": "a", "status": "todo", "extra": 1}]}, "plan item 0 must be"),
        ({"plan": ["bare string"]}, "plan item 0 must be"),
        ({"facts": ["x"]}, "facts must be an object"),
        ({"facts": {"k": {"nested": "value"}}}, "fact 'k': the value must be a str"),
        ({"draft": {"a": 1}}, "draft must be text"),
        ({"draft": "d" * (MAX_NOTEPAD_CHARS + 1)}, f"at most {MAX_NOTEPAD_CHARS}"),
        ({"facts": {f"k{i}": "v" * 300 for i in range(MAX_FACTS)}}, f"at most {MAX_NOTEPAD_CHARS}"),
        ({"plan": [{"text": "t", "status": "todo"}] * (MAX_PLAN_ITEMS + 1)}, f"at most {MAX_PLAN_ITEMS}"),
        ({"facts": {str(i): "" for i in range(MAX_FACTS + 1)}}, f"at most {MAX_FACTS}"),
    ],
)
def test_bad_shapes_and_sizes_are_refused_with_a_reason(state: object, fragment: str) -> None:
    assert fragment in refusal(state)


def test_a_huge_list_is_refused_without_walking_it() -> None:
    """The 240,000-element plan cost 0.8 s of host CPU per step; its length alone refuses it now."""
    state = {"plan": [{"text": str(i), "status": "todo"} for i in range(240_000)]}
    started = time.process_time()
    for _ in range(100):
        refusal(state)
    assert time.process_time() - started < 1.0  # 100 refusals: each is a len(), not a walk
