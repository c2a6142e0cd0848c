"""The learner's config refuses every non-finite or out-of-range number, naming the field.

``nan`` compares false with every bound, so range checks alone let it through (``cell_timeout=nan``
disabled the cell timeout in the env); a string from a YAML file (``lr: 3e-6`` is a str in YAML
1.1) failed deep inside training.
"""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from l0_learner.config import PRESETS, Config, make_config

NAN, INF = math.nan, math.inf


def numeric_fields(kind: str) -> list[str]:
    return [f.name for f in fields(Config) if f.type == kind]


@pytest.mark.parametrize("name", numeric_fields("float"))
@pytest.mark.parametrize("value", [NAN, INF, -INF, "1e-6", True])
def test_float_fields_must_be_finite_numbers(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        make_config(**{name: value})


@pytest.mark.parametrize("name", numeric_fields("int"))
@pytest.mark.parametrize("value", [1.5, NAN, "4", True])
def test_int_fields_must_be_ints(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        make_config(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cell_timeout", 0.0),
        ("cell_timeout", -1.0),
        ("max_context_tokens", -5),
        ("max_new_tokens", 0),
        ("lr", 0.0),
        ("sft_lr", -1e-5),
        ("max_grad_norm", 0.0),
        ("weight_decay", -0.1),
        ("seed", -1),
        ("save_every", 0),
        ("keep_checkpoints", 0),
        ("eval_max_steps", 0),
        ("sft_batch_size", 0),
        ("qa_weight", -0.8),
        ("lora_r", -1),
    ],
)
def test_out_of_range_values_name_the_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        make_config(**{name: value})


@pytest.mark.parametrize("preset", [None, *sorted(PRESETS)])
def test_defaults_and_presets_pass(preset: str | None) -> None:
    make_config(preset)


def test_ints_are_accepted_for_float_fields() -> None:
    assert make_config(lr=1, temperature=2).lr == 1
