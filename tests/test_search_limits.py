"""The search server's request validation and its fair thread pool, without sockets (pure + threads)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from l0_env.tools.fair_pool import Cancelled, DeadlineExceeded, FairPool, PoolBusy
from l0_env.tools.retrieve_request import (
    RequestRejected,
    ServerLimits,
    parse_retrieve_body,
    plan_chunks,
)

LIMITS = ServerLimits(max_body_bytes=10_000, max_queries=10, max_query_chars=20, max_results=30)


def parse(body: bytes | str | dict) -> object:
    raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    return parse_retrieve_body(raw, LIMITS, default_topk=3)


def rejected(body: bytes | str | dict) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parse(body)
    return info.value


def test_a_valid_request_and_its_defaults() -> None:
    req = parse({"queries": ["a", "b"], "topk": 5, "return_scores": True, "extra": "ignored"})
    assert (req.queries, req.topk, req.return_scores) == (["a", "b"], 5, True)
    req = parse({"queries": ["a"], "topk": None, "return_scores": None})
    assert (req.topk, req.return_scores) == (3, False)
    assert parse({"queries": []}).queries == []
    assert parse({"queries": ["x" * 20], "topk": 3}).queries == ["x" * 20]  # exactly at the limit


@pytest.mark.parametrize(
    ("body", "status", "error", "says"),
    [
        ('{"queries": ["a"], "topk": NaN}', 400, "invalid_json", "NaN"),
        ('{"queries": ["a"], "topk": Infinity}', 400, "invalid_json", "Infinity"),
        ('{"queries": ["a"], "topk": -Infinity}', 400, "invalid_json", "Infinity"),
        ('{"queries": ["a"], "topk": 1e400}', 422, "invalid_request", "integer"),
        ({"queries": ["a"], "topk": -1}, 422, "invalid_request", "from 1 to 50, got -1"),
        ({"queries": ["a"], "topk": 0}, 422, "invalid_request", "from 1 to 50, got 0"),
        ({"queries": ["a"], "topk": 51}, 422, "invalid_request", "from 1 to 50, got 51"),
        ({"queries": ["a"], "topk": 3.0}, 422, "invalid_request", "integer, got the number 3.0"),
        ({"queries": ["a"], "topk": "3"}, 422, "invalid_request", "integer, got a string"),
        ({"queries": ["a"], "topk": True}, 422, "invalid_request", "integer, got a boolean"),
        ({"queries": ["a"], "topk": [3]}, 422, "invalid_request", "integer, got a list"),
        ({"queries": ["a"], "return_scores": "yes"}, 422, "invalid_request", "true or false"),
        ({"queries": ["a"], "return_scores": 1}, 422, "invalid_request", "true or false"),
        ({"queries": "not a list"}, 422, "invalid_request", "'queries' must be a list"),
        ({"topk": 3}, 422, "invalid_request", "'queries' must be a list of strings, got null"),
        ({"queries": ["a", 7]}, 422, "invalid_request", "queries[1] must be a string, got the number 7"),
        ({"queries": [None]}, 422, "invalid_request", "queries[0] must be a string, got null"),
        ([1, 2], 422, "invalid_request", "must be a JSON object, got a list"),
        ("3", 422, "invalid_request", "JSON object, got the number 3"),
        ({"queries": ["x" * 21]}, 413, "query_too_long", "queries[0] has 21 characters; at most 20"),
        ({"queries": ["q"] * 11}, 413, "too_many_queries", "11 queries in one request; at most 10"),
        (
            {"queries": ["q"] * 7, "topk": 5},
            413,
            "too_many_results",
            "7 queries × topk 5 = 35 results; at most 30",
        ),
        (b'{"queries": ["\xff"]}', 400, "invalid_json", "not UTF-8"),
        (b"{'queries': []}", 400, "invalid_json", "not valid JSON"),
        (b"", 400, "invalid_json", "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_json", "nests too deeply"),
        (b" " * 10_001, 413, "body_too_large", "10001 bytes; at most 10000"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(
    body: bytes | str | dict, status: int, error: str, says: str
) -> None:
    exc = rejected(body)
    assert (exc.status, exc.error) == (status, error), exc.detail
    assert says in exc.detail
    assert exc.body() == {"error": error, "detail": exc.detail}


def test_limits_are_validated() -> None:
    for bad in (
        {"max_queries": 0},
        {"max_queries": -1},
        {"max_queries": 1.5},
        {"max_queries": True},
        {"max_topk": 51},
        {"request_timeout": float("nan")},
        {"request_timeout": float("inf")},
        {"request_timeout": 0},
        {"threads": -1},
        {"max_body_bytes": 100, "max_buffered_bytes": 99},
    ):
        with pytest.raises(ValueError):
            ServerLimits(**bad)  # type: ignore[arg-type]
    assert ServerLimits(threads=3).search_threads == 3
    assert ServerLimits().search_threads >= 1


def test_plan_chunks_bounds_each_unit_of_work() -> None:
    assert plan_chunks([], 8, 100) == []
    assert plan_chunks(["a"] * 20, 8, 1000) == [(0, 8), (8, 16), (16, 20)]
    # By characters: a long query is a unit of its own, short ones are grouped.
    queries = ["x" * 60, "y" * 60, "z", "w", "v" * 300, "u"]
    chunks = plan_chunks(queries, 8, 100)
    assert chunks == [(0, 1), (1, 4), (4, 5), (5, 6)]
    assert [i for s, e in chunks for i in range(s, e)] == list(range(len(queries)))


# -- FairPool, with real threads -------------------------------------------------------------


def test_units_of_jobs_are_served_round_robin() -> None:
    """With one thread, a one-unit job submitted behind a 20-unit job runs after one unit of it."""
    pool = FairPool(threads=1, max_jobs=10)
    order: list[str] = []
    gate = threading.Event()

    def unit(name: str) -> str:
        if name == "A0":
            gate.wait(10)  # hold the thread until B has been submitted
        order.append(name)
        return name

    far = time.monotonic() + 60
    a = pool.submit([lambda i=i: unit(f"A{i}") for i in range(20)], deadline=far)
    b = pool.submit([lambda: unit("B0")], deadline=far)
    gate.set()
    assert b.done.wait(10) and a.done.wait(10)
    assert order.index("B0") == 1, order  # FIFO would have run it 21st
    assert a.results == [f"A{i}" for i in range(20)] and b.results == ["B0"]
    assert a.error is None and b.error is None
    assert pool.stats() == {"jobs": 0, "units_run": 21}
    pool.close()


def test_cancel_and_deadline_drop_the_units_not_started() -> None:
    pool = FairPool(threads=1, max_jobs=10)
    started = threading.Event()
    release = threading.Event()
    ran: list[int] = []

    def unit(i: int) -> int:
        ran.append(i)
        started.set()
        release.wait(10)
        return i

    job = pool.submit([lambda i=i: unit(i) for i in range(50)], deadline=time.monotonic() + 60)
    assert started.wait(10)
    pool.cancel(job)
    assert not job.done.is_set()  # its running unit still runs
    release.set()
    assert job.done.wait(10)
    assert isinstance(job.error, Cancelled) and ran == [0]

    late = pool.submit([lambda: 1, lambda: 2], deadline=time.monotonic() - 1)
    assert late.done.wait(10) and isinstance(late.error, DeadlineExceeded)
    assert pool.stats()["jobs"] == 0
    pool.close()


def test_a_full_pool_refuses_and_a_failing_unit_fails_its_job() -> None:
    pool = FairPool(threads=1, max_jobs=1)
    release = threading.Event()
    first = pool.submit([lambda: release.wait(10)], deadline=time.monotonic() + 60)
    with pytest.raises(PoolBusy):
        pool.submit([lambda: 1], deadline=time.monotonic() + 60)
    release.set()
    assert first.done.wait(10)

    def boom() -> None:
        raise RuntimeError("backend broke")

    done_calls: list[object] = []
    failing = pool.submit([boom, lambda: 2], deadline=time.monotonic() + 60, on_done=done_calls.append)
    assert failing.done.wait(10)
    assert isinstance(failing.error, RuntimeError) and done_calls == [failing]
    empty = pool.submit([], deadline=time.monotonic() + 60)
    assert empty.done.is_set() and empty.results == []
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit([lambda: 1], deadline=time.monotonic() + 60)
