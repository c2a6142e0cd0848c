"""The openai backend against a tiny fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from l0_learner.backends.openai import OpenAIBackend


class FakeChat(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        question = body["messages"][-1]["content"]
        reply = {
            "choices": [
                {
                    "message": {"role": "assistant", "content": f"<think>q={question}</think><code>x=1"},
                    "finish_reason": "stop",
                }
            ]
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_chat_completions_round_trip(server) -> None:
    FakeChat.requests.clear()
    backend = OpenAIBackend(
        server, "served-model", api_key="k", max_new_tokens=33, temperature=0.5, concurrency=3
    )
    convs = [[{"role": "user", "content": f"Q{i}"}] for i in range(5)]
    gens = backend.generate(convs)
    backend.close()
    assert [g.text for g in gens] == [f"<think>q=Q{i}</think><code>x=1</code>" for i in range(5)]
    assert all(g.response_ids == [] for g in gens), "text-only backend: no ids to train on"
    assert len(FakeChat.requests) == 5
    req = FakeChat.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert (req["model"], req["max_tokens"], req["temperature"], req["stop"]) == (
        "served-model",
        33,
        0.5,
        ["</code>"],
    )
