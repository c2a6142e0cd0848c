"""Config: presets, YAML/JSON files, the command line, --help from attribute docstrings."""

from __future__ import annotations

import json

import pytest

from l0_learner.config import PRESETS, Config, load_config_file, make_config, parse_cli


def test_defaults_follow_l0() -> None:
    cfg = Config()
    assert (cfg.gamma, cfg.kl_coef, cfg.group_size, cfg.drop_prob) == (0.95, 0.001, 4, 0.5)
    assert (cfg.qa_weight, cfg.format_weight, cfg.code_weight) == (0.8, 0.1, 0.1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name: str) -> None:
    cfg = make_config(name)
    assert cfg.preset == name
    for key, value in PRESETS[name].items():
        assert getattr(cfg, key) == value


def test_file_then_flags_override_the_preset(tmp_path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("lr: 3.0e-6\nmax-steps: 5\n")
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"seed": 7, "iterations": 9}))
    cfg = parse_cli(["--preset", "cpu-demo", "--config", str(yaml_file), "--seed", "3"])
    assert (cfg.lr, cfg.max_steps, cfg.seed, cfg.model, cfg.sft_demos) == (3e-6, 5, 3, "smollm2", 112)
    cfg = parse_cli([f"--config={json_file}", "--iterations", "2", "--output-dir", "x", "--resume"])
    assert (cfg.seed, cfg.iterations, cfg.output_dir, cfg.resume, cfg.config) == (
        7,
        2,
        "x",
        True,
        str(json_file),
    )


def test_unknown_keys_and_bad_values_raise(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config_file(bad)
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="gamma"):
        make_config(gamma=1.5)


def test_help_shows_the_docstrings(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_cli(["--help"])
    out = capsys.readouterr().out
    for flag in ("--preset", "--model", "--iterations", "--output-dir", "--resume", "--seed"):
        assert flag in out
    assert "Discount of the step-level returns" in out
