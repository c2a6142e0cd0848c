"""The host side of the tool bridge over a real Unix socket, and from threads in a real kernel."""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel.bridge import MAX_REQUEST_BYTES, ToolBridge, ToolCallError
from l0_env.kernel.sandbox import check_bwrap
from l0_env.kernel.session import KernelConfig, SandboxedKernel


@pytest.fixture
def bridge() -> Iterator[ToolBridge]:
    folder = tempfile.mkdtemp(prefix="l0b-")  # short: Unix socket paths are limited to ~107 bytes
    b = ToolBridge(str(Path(folder) / "b.sock"))
    yield b
    b.close()
    Path(folder).rmdir()


def send(path: str, raw: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(raw)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def call(path: str, op: str, **args) -> dict:
    return send(path, json.dumps({"op": op, "args": args}).encode() + b"\n")


def test_ok_reply(bridge):
    bridge.handler = lambda op, args: {"op": op, "args": args}
    assert call(bridge.path, "echo", x=1) == {"ok": True, "result": {"op": "echo", "args": {"x": 1}}}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b"[1, 2]\n", "expected"),
        (b'{"args": {}}\n', "expected"),
        (b'{"op": 3}\n', "expected"),
        (b'{"op": "x", "args": [1]}\n', "'args' must be an object"),
        (b"\n", "not JSON"),
    ],
)
def test_malformed_requests_get_error_replies(bridge, raw, fragment):
    reply = send(bridge.path, raw)
    assert reply["ok"] is False and reply["error"]["type"] == "ValueError"
    assert fragment in reply["error"]["message"]


def test_lone_surrogates_are_replaced_where_requests_enter_the_host(bridge):
    """JSON's \\ud800 escapes decode to lone surrogates, which no UTF-8 encoder downstream takes."""
    seen = []
    bridge.handler = lambda op, args: seen.append((op, args)) or "ok"
    raw = b'{"op": "t\\ud800", "args": {"k\\udc00": ["a\\ud800", {"n": "\\udfff"}], "emoji": "\\ud83d\\ude00"}}\n'
    assert send(bridge.path, raw) == {"ok": True, "result": "ok"}
    op, args = seen[0]
    assert op == "t\ufffd"
    assert args == {"k\ufffd": ["a\ufffd", {"n": "\ufffd"}], "emoji": "\U0001f600"}, (
        "pairs stay, lone ones go"
    )
    json.dumps(seen, ensure_ascii=False).encode("utf-8")


def test_a_failing_handler_never_echoes_a_huge_op_name(bridge):
    def broken(op, args):
        raise RuntimeError("bug")

    bridge.handler = broken
    reply = call(bridge.path, "x" * 100_000)
    assert reply["ok"] is False and len(reply["error"]["message"]) < 200


def test_huge_request_is_refused(bridge):
    raw = json.dumps({"op": "x", "args": {"q": "a" * (MAX_REQUEST_BYTES + 10)}}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(bridge.path)
        # The bridge may stop reading as soon as the limit is passed.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        reply = json.loads(sock.recv(65536))
    assert reply["ok"] is False and "larger than" in reply["error"]["message"]
    bridge.handler = lambda op, args: "fine"
    assert call(bridge.path, "x")["result"] == "fine"


def test_tool_call_error_is_typed(bridge):
    def handler(op, args):
        raise ToolCallError("BudgetExhausted", "no more searches")

    bridge.handler = handler
    assert call(bridge.path, "web_search")["error"] == {
        "type": "BudgetExhausted",
        "message": "no more searches",
    }


def test_handler_bug_becomes_tool_error_and_bridge_survives(bridge):
    calls = []

    def handler(op, args):
        calls.append(op)
        if op == "bad":
            raise KeyError("oops")
        return "served"

    bridge.handler = handler
    reply = call(bridge.path, "bad")
    assert reply["error"]["type"] == "ToolError"
    assert reply["error"]["message"] == "bad failed on the host (KeyError); try again"
    assert "oops" not in reply["error"]["message"], "exception text may carry secrets: only the type is sent"
    assert call(bridge.path, "good") == {"ok": True, "result": "served"}
    assert calls == ["bad", "good"]


def test_unserialisable_result_is_an_error(bridge):
    bridge.handler = lambda op, args: object()
    reply = call(bridge.path, "x")
    assert reply["ok"] is False and reply["error"]["type"] == "ToolError"


def test_client_that_disconnects_does_not_kill_the_bridge(bridge):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(bridge.path)
        sock.sendall(b'{"op": "x"')  # no newline, then gone
    bridge.handler = lambda op, args: "ok"
    assert call(bridge.path, "x")["result"] == "ok"


def test_close_is_idempotent_and_removes_the_socket(bridge):
    bridge.close()
    bridge.close()
    assert not Path(bridge.path).exists()


@pytest.mark.skipif(check_bwrap() is not None, reason="bubblewrap unavailable")
def test_concurrent_calls_from_kernel_threads_all_get_answers():
    seen: list[str] = []
    active, peak = [0], [0]
    lock = threading.Lock()

    def handler(op, args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
            seen.append(args["query"])
        if args["query"] == "q3":
            raise ToolCallError("ValueError", "bad query q3")
        return [{"id": args["query"], "title": "", "snippet": ""}]

    with SandboxedKernel(KernelConfig(sandbox="bwrap", cell_timeout=20, tools=builtin_stubs())) as kernel:
        kernel.tool_handler = handler
        result = kernel.execute(
            "import threading\nout = {}\n"
            "def work(i):\n"
            "    try:\n        out[i] = web_search(f'q{i}')[0]['id']\n"
            "    except ValueError as e:\n        out[i] = 'ValueError: ' + str(e)\n"
            "threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]\n"
            "print(sorted(out.items()))"
        )
    expected = [(i, f"q{i}") for i in range(12)]
    expected[3] = (3, "ValueError: bad query q3")
    assert result.status == "ok", result.text
    assert result.text == str(sorted(expected))
    assert sorted(seen) == sorted(f"q{i}" for i in range(12))
    assert peak[0] == 1, "the bridge serves one call at a time per kernel"
