"""``check_l0_env``: gymnasium's ``check_env`` plus the checks an LLM text environment needs."""

from __future__ import annotations
