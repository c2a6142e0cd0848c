"""Fixtures for the learner tests: offline, CPU, a tiny model built by the test session."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the tiny model gains nothing from threads; 2 shared cores spin-wait under load
pytest.importorskip("transformers")


@pytest.fixture(scope="session", autouse=True)
def l0_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private model cache: the tiny model is built there, nothing is downloaded."""
    path = str(tmp_path_factory.mktemp("l0_cache"))
    os.environ["L0_GYM_CACHE"] = path
    return path


@pytest.fixture(scope="session")
def tiny_path(l0_cache: str) -> str:
    from l0_learner.tiny import build_tiny_model

    return str(build_tiny_model(os.path.join(l0_cache, "tiny-qwen2")))


@pytest.fixture
def tiny_policy(tiny_path: str):
    """A fresh (model, tokenizer) of the tiny model, seeded."""
    from l0_learner.models import load_policy

    torch.manual_seed(0)
    return load_policy(tiny_path, device="cpu")
