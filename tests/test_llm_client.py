"""The OpenAI-compatible chat client against a real scripted HTTP server on 127.0.0.1.

Each test plays one failure a real server (or the network) produces: 5xx and 429 (retried, with
Retry-After), other 4xx (not retried), hangs and trickling bodies (bounded time), malformed and
oversized bodies, dropped and refused connections; plus order and concurrency of batches,
argument checks, pickling, and that the API key never shows in an error, repr or log line.
"""

from __future__ import annotations

import email.utils
import logging
import pickle
import threading
import time
from typing import Any

import pytest

from l0_env.llm_client import ChatClient, LLMError, extract_reply, parse_retry_after
from tests.llm_servers.scripted_openai import (
    Drop,
    Error,
    Hang,
    Raw,
    RecordedRequest,
    Reply,
    ScriptedOpenAIServer,
    Trickle,
    last_user_content,
)

MSG = [{"role": "user", "content": "Which city is the capital of France?"}]
KEY = "sk-TOPSECRET-0123456789abcdef"


def fast_client(srv: ScriptedOpenAIServer, **kw: Any) -> ChatClient:
    """A client with tiny backoffs, so retry tests take milliseconds, not seconds."""
    opts: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 30.0}
    opts.update(kw)
    return ChatClient(srv.base_url, "judge-model", **opts)


# --------------------------------------------------------------------------- success


def test_round_trip_sends_the_openai_body_and_bearer_key() -> None:
    with ScriptedOpenAIServer([Reply("Paris")]) as srv, fast_client(srv, api_key=KEY) as client:
        assert client.complete(MSG, max_tokens=7, temperature=0.3) == "Paris"
        (req,) = srv.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.json == {"model": "judge-model", "messages": MSG, "max_tokens": 7, "temperature": 0.3}


def test_no_key_sends_no_authorization_header_and_defaults_are_greedy() -> None:
    with ScriptedOpenAIServer([Reply("ok")]) as srv, fast_client(srv) as client:
        assert client.complete(MSG) == "ok"
        (req,) = srv.requests
    assert "authorization" not in req.headers
    assert req.json["temperature"] == 0.0 and req.json["max_tokens"] == 256


def test_content_parts_and_extra_body() -> None:
    body = b'{"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}}]}'
    with ScriptedOpenAIServer([Raw(body)]) as srv, fast_client(srv, extra_body={"seed": 7}) as client:
        assert client.complete(MSG) == "AB"
        assert srv.requests[0].json["seed"] == 7


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_retryable_status_is_retried_then_succeeds(status: int) -> None:
    with ScriptedOpenAIServer([Error(status), Error(status), Reply("A")]) as srv, fast_client(srv) as client:
        assert client.complete(MSG) == "A"
        assert len(srv.requests) == 3


def test_retries_exhausted_names_the_last_failure_and_the_attempts() -> None:
    with ScriptedOpenAIServer(default=Error(503, "engine overloaded")) as srv:
        with fast_client(srv, retries=2) as client, pytest.raises(LLMError) as info:
            client.complete(MSG)
        assert len(srv.requests) == 3
    err = info.value
    assert err.status_code == 503 and err.attempts == 3
    assert "3 attempt(s)" in str(err) and "HTTP 503" in str(err) and "engine overloaded" in str(err)


def test_retry_after_is_respected() -> None:
    # Timing test: the wait asked for (1 s) must be waited; a lower bound only, so load cannot fail it.
    with ScriptedOpenAIServer([Error(429, headers={"Retry-After": "1"}), Reply("A")]) as srv:
        with fast_client(srv) as client:
            assert client.complete(MSG) == "A"
        first, second = srv.requests
    assert second.received_at - first.received_at >= 0.95


def test_retry_after_is_capped() -> None:
    # A server asking for an hour gets max_retry_after (0.2 s); generous upper bound for a loaded box.
    script = [Error(503, headers={"Retry-After": "3600"}), Reply("A")]
    with ScriptedOpenAIServer(script) as srv, fast_client(srv, max_retry_after=0.2) as client:
        start = time.monotonic()
        assert client.complete(MSG) == "A"
        assert time.monotonic() - start < 60


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
    for junk in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2020"):
        assert parse_retry_after(junk) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 307])
def test_other_4xx_is_not_retried_and_quotes_the_server(status: int) -> None:
    with ScriptedOpenAIServer(default=Error(status, "model 'judge-model' does not exist")) as srv:
        with fast_client(srv, retries=3) as client, pytest.raises(LLMError) as info:
            client.complete(MSG)
        assert len(srv.requests) == 1, "a client error must not be retried"
    assert info.value.status_code == status
    assert f"HTTP {status}" in str(info.value) and "does not exist" in str(info.value)


def test_a_huge_error_message_is_bounded() -> None:
    with (
        ScriptedOpenAIServer([Error(400, "x" * 200_000)]) as srv,
        fast_client(srv) as client,
        pytest.raises(LLMError) as info,
    ):
        client.complete(MSG)
    assert len(str(info.value)) < 600


def test_dropped_connection_is_retried() -> None:
    with ScriptedOpenAIServer([Drop(), Reply("A")]) as srv, fast_client(srv) as client:
        assert client.complete(MSG) == "A"
        assert len(srv.requests) == 2


def test_refused_connection_fails_cleanly() -> None:
    with ScriptedOpenAIServer() as srv:
        url = srv.base_url
    client = ChatClient(url, "m", retries=1, backoff_base=0.01)  # the port is closed now
    with pytest.raises(LLMError, match="ConnectError") as info:
        client.complete(MSG)
    assert info.value.attempts == 2 and info.value.status_code is None
    client.close()


# --------------------------------------------------------------------------- bounded time


def test_a_hang_past_the_timeout_fails_in_bounded_time() -> None:
    # Timing test: 2 attempts of 1 s each; the server would hang for an hour.
    with ScriptedOpenAIServer(default=Hang(3600)) as srv:
        with fast_client(srv, timeout=1.0, retries=1) as client:
            start = time.monotonic()
            with pytest.raises(LLMError, match="timed out") as info:
                client.complete(MSG)
            elapsed = time.monotonic() - start
        assert len(srv.requests) == 2
    assert info.value.attempts == 2
    assert 1.9 <= elapsed < 60, elapsed


def test_a_trickling_body_is_cut_at_the_deadline() -> None:
    # Each byte comes well within the read timeout, so only the whole-response deadline stops it:
    # without it this request would take 200 × 0.3 s = 60 s.
    body = b'{"choices": [{"message": {"content": "' + b"x" * 160 + b'"}}]}'
    with (
        ScriptedOpenAIServer([Trickle(body, chunk=1, interval=0.3)]) as srv,
        fast_client(srv, timeout=2.0, retries=0) as client,
    ):
        start = time.monotonic()
        with pytest.raises(LLMError, match="longer than"):
            client.complete(MSG)
        assert time.monotonic() - start < 30


def test_a_slow_but_timely_reply_succeeds() -> None:
    with ScriptedOpenAIServer([Reply("late", delay=0.5)]) as srv, fast_client(srv, timeout=30.0) as client:
        assert client.complete(MSG) == "late"


# --------------------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"object": "chat.completion"}', "no 'choices'"),
        (b'{"choices": []}', "no 'choices'"),
        (b'{"error": {"message": "oops"}}', "server error"),
        (b'{"choices": ["A"]}', "no 'message'"),
        (b'{"choices": [{"text": "A"}]}', "no 'message'"),
        (b'{"choices": [{"message": {"role": "assistant", "content": null}}]}', "NoneType"),
        (b'{"choices": [{"message": {"content": null, "refusal": "I cannot"}}]}', "refusal: I cannot"),
        (b'{"choices": [{"message": {"content": 42}}]}', "int"),
    ],
)
def test_malformed_bodies_are_an_error_not_retried(body: bytes, why: str) -> None:
    with ScriptedOpenAIServer([Raw(body)], default=Reply("should not be asked")) as srv:
        with fast_client(srv) as client, pytest.raises(LLMError, match=why):
            client.complete(MSG)
        assert len(srv.requests) == 1


def test_extract_reply_is_pure() -> None:
    assert extract_reply({"choices": [{"message": {"content": "x"}}]}) == "x"
    with pytest.raises(ValueError, match="choices"):
        extract_reply({})


@pytest.mark.parametrize("content_length", [True, False])
def test_oversized_bodies_are_refused(content_length: bool) -> None:
    big = b'{"choices": [{"message": {"content": "' + b"a" * (9 * 1024 * 1024) + b'"}}]}'
    with (
        ScriptedOpenAIServer([Raw(big, content_length=content_length)]) as srv,
        fast_client(srv) as client,
        pytest.raises(LLMError, match="exceeds the 8388608-byte limit"),
    ):
        client.complete(MSG)


# --------------------------------------------------------------------------- the key never leaks


def echo_key(status: int) -> Any:
    """A server that quotes the Authorization header back, as some real ones do in 401 bodies."""

    def behaviour(req: RecordedRequest) -> Error:
        return Error(status, f"Incorrect API key provided: {req.headers.get('authorization')}")

    return behaviour


@pytest.mark.parametrize("status", [401, 500])
def test_the_api_key_never_appears_in_errors_repr_or_logs(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log at DEBUG too
    with ScriptedOpenAIServer(default=echo_key(status)) as srv:
        client = fast_client(srv, api_key=KEY, retries=1)
        with pytest.raises(LLMError) as info:
            client.complete(MSG)
        batch = client.complete_many([MSG, MSG])
        assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}", "the key must be sent"
    texts = [str(info.value), repr(info.value), repr(client), str(pickle.loads(pickle.dumps(info.value)))]
    texts += [str(e) for e in batch]
    texts += [r.getMessage() for r in caplog.records]
    assert "Incorrect API key" in str(info.value), "the server's message should still be quoted"
    for text in texts:
        assert KEY not in text, f"the API key leaked into: {text[:200]}"
    client.close()


def test_the_api_key_is_not_in_a_non_json_200_body_error() -> None:
    with (
        ScriptedOpenAIServer([Raw(f"debug: key={KEY}".encode())]) as srv,
        fast_client(srv, api_key=KEY) as client,
        pytest.raises(LLMError) as info,
    ):
        client.complete(MSG)
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_a_bad_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="control or non-ASCII") as info:
        ChatClient("http://127.0.0.1:1/v1", "m", api_key=KEY + "\n")
    assert KEY not in str(info.value)


def test_credentials_in_the_url_are_not_shown() -> None:
    client = ChatClient("http://user:hunter2@127.0.0.1:1/v1", "m", retries=0)
    assert "hunter2" not in repr(client)
    with pytest.raises(LLMError) as info:
        client.complete(MSG)
    assert "hunter2" not in str(info.value)


# --------------------------------------------------------------------------- batches


def test_complete_many_keeps_order_and_bounds_concurrency() -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def slow_echo(req: RecordedRequest) -> Reply:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        n = int(last_user_content(req).split()[-1])
        time.sleep(0.05 * (12 - n))  # later items finish first: order must still hold
        with lock:
            state["now"] -= 1
        return Reply(f"reply {n}")

    batch = [[{"role": "user", "content": f"item {i}"}] for i in range(12)]
    with ScriptedOpenAIServer(default=slow_echo) as srv, fast_client(srv, max_concurrency=3) as client:
        assert client.complete_many(batch, max_tokens=5) == [f"reply {i}" for i in range(12)]
        assert len(srv.requests) == 12
    assert 1 <= state["peak"] <= 3, state


def test_complete_many_returns_errors_in_place() -> None:
    def by_item(req: RecordedRequest) -> Reply | Error:
        text = last_user_content(req)
        return Error(400, "bad item") if text == "item 1" else Reply(text.upper())

    batch = [[{"role": "user", "content": f"item {i}"}] for i in range(3)]
    with ScriptedOpenAIServer(default=by_item) as srv, fast_client(srv) as client:
        out = client.complete_many(batch)
        assert client.complete_many([]) == []
    assert out[0] == "ITEM 0" and out[2] == "ITEM 2"
    assert isinstance(out[1], LLMError) and out[1].status_code == 400


# --------------------------------------------------------------------------- arguments, lifecycle


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": ""}, "base_url"),
        ({"base_url": "127.0.0.1:8000/v1"}, "http"),
        ({"base_url": "ftp://127.0.0.1/v1"}, "http"),
        ({"base_url": 8000}, "base_url"),
        ({"model": ""}, "model"),
        ({"model": None}, "model"),
        ({"api_key": 123}, "api_key"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_response_bytes": 0}, "max_response_bytes"),
        ({"extra_body": [1]}, "extra_body"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"base_url": "http://127.0.0.1:8000/v1", "model": "m", **kwargs}
    with pytest.raises(ValueError, match=match):
        ChatClient(args.pop("base_url"), args.pop("model"), **args)


@pytest.mark.parametrize(
    ("messages", "kw", "match"),
    [
        ([], {}, "non-empty list"),
        ("hello", {}, "non-empty list"),
        ([{"role": "user"}], {}, "content"),
        ([{"role": "wizard", "content": "x"}], {}, "role"),
        (["hello"], {}, "dict"),
        ([{"role": "user", "content": None}], {}, "content"),
        (MSG, {"max_tokens": 0}, "max_tokens"),
        (MSG, {"max_tokens": 2.5}, "max_tokens"),
        (MSG, {"temperature": -0.1}, "temperature"),
        (MSG, {"temperature": 3}, "temperature"),
    ],
)
def test_bad_call_arguments(messages: Any, kw: dict[str, Any], match: str) -> None:
    client = ChatClient("http://127.0.0.1:1/v1", "m")  # nothing is sent: the check comes first
    with pytest.raises(ValueError, match=match):
        client.complete(messages, **kw)
    with pytest.raises(ValueError, match=match):
        client.complete_many([MSG, messages], **kw)
    with pytest.raises(ValueError, match="unknown keyword"):
        client.complete_many([MSG], top_k=3)


def test_close_is_idempotent_and_final() -> None:
    with ScriptedOpenAIServer(default=Reply("A")) as srv:
        client = fast_client(srv)
        assert client.complete(MSG) == "A"
        client.close()
        client.close()
        with pytest.raises(RuntimeError, match="closed"):
            client.complete(MSG)
        with pytest.raises(RuntimeError, match="closed"):
            client.complete_many([MSG])


def test_a_pickled_client_works_and_errors_keep_their_fields() -> None:
    with ScriptedOpenAIServer(default=Reply("A")) as srv:
        client = fast_client(srv, api_key=KEY)
        assert client.complete(MSG) == "A"  # a live connection pool must not stop pickling
        clone = pickle.loads(pickle.dumps(client))
        assert clone.complete(MSG) == "A"
        assert srv.requests[-1].headers["authorization"] == f"Bearer {KEY}"
        client.close()
        clone.close()
    err = pickle.loads(pickle.dumps(LLMError("x", status_code=503, attempts=4)))
    assert (str(err), err.status_code, err.attempts) == ("x", 503, 4)


def test_calls_from_many_threads_share_one_client() -> None:
    def echo(req: RecordedRequest) -> Reply:
        return Reply(last_user_content(req))

    with ScriptedOpenAIServer(default=echo) as srv, fast_client(srv, max_concurrency=2) as client:
        out: dict[int, str] = {}

        def work(i: int) -> None:
            out[i] = client.complete([{"role": "user", "content": f"t{i}"}])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert out == {i: f"t{i}" for i in range(8)}
