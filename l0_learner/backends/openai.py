"""``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, SGLang, …).

Text only: servers do not hand back the token ids in a portable way, so this backend is for
evaluation, not training. The stop string is removed by the server; it is put back so the action
reads as the model wrote it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from . import STOP, Generation


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: The served model name.
        api_key: Bearer token (default ``$OPENAI_API_KEY``, may be empty for local servers).
        max_new_tokens, temperature, top_p: Sampling settings.
        concurrency: Requests in flight at once.
        timeout: Seconds per request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_new_tokens: int = 192,
        temperature: float = 1.0,
        top_p: float = 1.0,
        concurrency: int = 8,
        timeout: float = 120.0,
        stop: Sequence[str] = STOP,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.concurrency, self.stop = concurrency, list(stop)
        self.client = httpx.Client(timeout=timeout)

    def _one(self, messages: list[dict[str, str]]) -> Generation:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
        }
        resp = self.client.post(self.url, json=body, headers=self.headers)
        resp.raise_for_status()
        choice = resp.json()["choices"][0]
        text = choice["message"].get("content") or ""
        reason = choice.get("finish_reason") or "stop"
        # The server cut at the stop string and dropped it; an open <code> block is what it closed.
        if reason == "stop" and "</code>" in self.stop and "<code>" in text and not text.endswith("</code>"):
            text += "</code>"
        return Generation(text=text, finish_reason="length" if reason == "length" else "stop")

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, conversations))

    def close(self) -> None:
        self.client.close()
