"""The data pipeline's LLM quality filter against a real OpenAI-compatible server on 127.0.0.1
(the scripted server): parsing, keep/drop/error paths, the cache, bounded concurrency, and builds
that stop rating once a --limit/--sample target is reached."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from l0_env.llm_client import ChatClient
from l0_env.pipeline import (
    BuildConfig,
    QualityCache,
    QualityFilter,
    QualityThresholds,
    build,
    parse_ratings,
    rows_input,
)
from l0_env.pipeline.quality import PROMPT_VERSION, SYSTEM_PROMPT
from tests.llm_servers.scripted_openai import (
    Error,
    RecordedRequest,
    Reply,
    ScriptedOpenAIServer,
    last_user_content,
)

GOOD = '{"temporal_stability": 1, "objectivity": 1, "well_formed": 1}'


def rater(request: RecordedRequest) -> Any:
    """Rate by keywords in the question, as a model would by meaning."""
    text = last_user_content(request)
    if "BROKEN" in text:
        return Error(400, "the model refuses this")  # not retried: a clean, fast failure
    if "GARBAGE" in text:
        return Reply("I think this pair is fine.")
    ratings = {"temporal_stability": 1, "objectivity": 1, "well_formed": 1}
    if "current" in text:
        ratings["temporal_stability"] = -1
    if "best" in text:
        ratings["objectivity"] = -1
    if "vague" in text:
        ratings["well_formed"] = 0
    return Reply("```json\n" + json.dumps(ratings) + "\n```")


@pytest.fixture
def server() -> Any:
    with ScriptedOpenAIServer(default=rater) as srv:
        yield srv


def make_filter(srv: ScriptedOpenAIServer, tmp_path: Path | None = None, **kw: Any) -> QualityFilter:
    client = ChatClient(srv.base_url, "judge-model", retries=0, max_concurrency=2, timeout=30)
    cache = QualityCache(tmp_path / "cache.jsonl") if tmp_path is not None else None
    return QualityFilter(client, cache=cache, **kw)


def row(question: str, *answers: str) -> dict[str, Any]:
    return {"question": question, "answers": list(answers) or ["A"]}


# -- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "Sure.\n```json\n" + GOOD + "\n```\nDone.",
        'Here: {"temporal_stability": "1", "objectivity": 1.0, "well_formed": [1]} ok',
        # L0's own layout: each criterion an object with a rating and a rationale.
        '{"temporal_stability": {"rating": 1, "rationale": ["fixed"]}, "objectivity": {"rating": 1},'
        ' "well_formed": {"rating": 1}}',
        '{"note": "x"} then ' + GOOD,  # the first object lacks the criteria: the next one is used
    ],
)
def test_parse_ratings_accepts(text: str) -> None:
    assert parse_ratings(text) == {"temporal_stability": 1, "objectivity": 1, "well_formed": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no json here", "no JSON object"),
        ('{"temporal_stability": 1, "objectivity": 1}', "lacks \\['well_formed'\\]"),
        ('{"temporal_stability": 2, "objectivity": 1, "well_formed": 1}', "not -1, 0 or 1"),
        ('{"temporal_stability": true, "objectivity": 1, "well_formed": 1}', "not -1, 0 or 1"),
        ('{"temporal_stability": "high", "objectivity": 1, "well_formed": 1}', "not -1, 0 or 1"),
    ],
)
def test_parse_ratings_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ratings(text)


def test_thresholds() -> None:
    t = QualityThresholds()
    assert t.passes({"temporal_stability": 1, "objectivity": 1, "well_formed": 1})
    assert not t.passes({"temporal_stability": 0, "objectivity": 1, "well_formed": 1})
    lenient = QualityThresholds(temporal_stability=0, well_formed=0)
    assert lenient.passes({"temporal_stability": 0, "objectivity": 1, "well_formed": 0})
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        QualityThresholds(objectivity=2)


# -- the filter against the server -------------------------------------------------------------


def test_keep_drop_and_what_the_server_sees(server: ScriptedOpenAIServer) -> None:
    qf = make_filter(server)
    rows = [
        row("Who wrote the Odyssey?", "Homer", "Homeros"),
        row("Who is the current president of France?"),
        row("What is the best pizza?"),
        row("Who is vague?"),
    ]
    verdicts = qf.assess(rows)
    assert [qf.keeps(v) for v in verdicts] == [True, False, False, False]
    assert verdicts[1].ratings == {"temporal_stability": -1, "objectivity": 1, "well_formed": 1}
    assert not any(v.cached or v.error for v in verdicts)
    bodies = [r.json for r in server.chat_requests]
    assert len(bodies) == 4
    first = next(b for b in bodies if "Odyssey" in b["messages"][1]["content"])
    assert first["model"] == "judge-model" and first["temperature"] == 0.0
    assert first["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert (
        first["messages"][1]["content"]
        == "Question: Who wrote the Odyssey?\nAnswer: Homer\nAlso accepted: Homeros"
    )
    assert qf.stats.requests == 4 and qf.stats.rows == 4
    # Lower thresholds keep what the defaults drop.
    lenient = make_filter(server, thresholds=QualityThresholds(temporal_stability=-1, well_formed=0))
    assert [lenient.keeps(v) for v in lenient.assess(rows)] == [True, True, False, True]


def test_failures_are_counted_not_fatal(server: ScriptedOpenAIServer) -> None:
    rows = [row("BROKEN question?"), row("GARBAGE question?"), row("Fine question?")]
    drop = make_filter(server)
    verdicts = drop.assess(rows)
    assert verdicts[0].ratings is None and "HTTP 400" in (verdicts[0].error or "")
    assert verdicts[1].ratings is None and "unparseable reply" in (verdicts[1].error or "")
    assert verdicts[2].ratings is not None
    assert [drop.keeps(v) for v in verdicts] == [False, False, True]
    assert (drop.stats.request_errors, drop.stats.parse_errors) == (1, 1)
    assert len(drop.stats.error_examples) == 2
    keep = make_filter(server, on_error="keep")
    assert [keep.keeps(v) for v in keep.assess(rows)] == [True, True, True]
    with pytest.raises(ValueError, match="on_error"):
        make_filter(server, on_error="retry")


def test_cache_makes_a_rerun_free_and_retries_errors(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    rows = [row("Who wrote the Odyssey?"), row("What is the best pizza?"), row("BROKEN one?")]
    qf = make_filter(server, tmp_path)
    first = qf.assess([*rows, rows[0]])  # a repeat within the batch is asked once
    assert len(server.chat_requests) == 3
    qf.cache.close()  # type: ignore[union-attr]
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 2  # errors are not cached

    again = make_filter(server, tmp_path)
    second = again.assess(rows)
    assert len(server.chat_requests) == 4  # only the failed row was asked again
    assert [v.cached for v in second] == [True, True, False]
    assert [v.ratings for v in second[:2]] == [v.ratings for v in first[:2]]
    assert again.stats.cache_hits == 2 and again.stats.requests == 1

    other_model = QualityFilter(
        ChatClient(server.base_url, "another-model", retries=0), cache=QualityCache(tmp_path / "cache.jsonl")
    )
    other_model.assess(rows[:1])
    assert len(server.chat_requests) == 5  # the key includes the model (and PROMPT_VERSION)
    assert other_model.cache_key("q", ["a"]) != again.cache_key("q", ["a"])
    assert PROMPT_VERSION


def test_cache_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "k1", "ratings": json.loads(GOOD)}) + "\n" + '{"key": "k2", "rat')
    cache = QualityCache(path)
    assert len(cache) == 1 and cache.skipped == 1 and cache.get("k1") == json.loads(GOOD)


def test_requests_in_flight_never_exceed_the_bound() -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    second_arrived = threading.Event()

    def slow(request: RecordedRequest) -> Any:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            if state["now"] >= 2:
                second_arrived.set()
        second_arrived.wait(timeout=1.0)  # hold the first request until a second one is in flight
        with lock:
            state["now"] -= 1
        return Reply(GOOD)

    with ScriptedOpenAIServer(default=slow) as srv:
        qf = make_filter(srv)  # max_concurrency=2
        verdicts = qf.assess([row(f"Question {i}?") for i in range(12)])
    assert all(v.ratings is not None for v in verdicts)
    assert state["max"] == 2


# -- builds with the filter --------------------------------------------------------------------------


def questions(n: int) -> list[dict[str, Any]]:
    # Every fourth question is about "the current" holder of something: rated unstable, dropped.
    return [
        row(
            f"Who is the current holder of office {i}?" if i % 4 == 3 else f"Who founded company {i}?",
            f"P{i}",
        )
        for i in range(n)
    ]


def stage(result: Any, name: str) -> dict[str, Any]:
    return next(s for s in result.report.to_dict()["stages"] if s["stage"] == name)


def test_build_with_limit_stops_rating_at_the_target(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    qf = make_filter(server, tmp_path)  # rates in chunks of 16 (8 x max_concurrency, at least 16)
    out = tmp_path / "o.jsonl"
    res = build([rows_input("syn", questions(40))], out, config=BuildConfig(limit=10), quality=qf)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source_row"] for r in rows] == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12]
    assert all(r["llm_temporal_stability"] == r["llm_objectivity"] == r["llm_well_formed"] == 1 for r in rows)
    assert len(server.chat_requests) == 16  # one chunk was enough: 24 rows never cost a request
    assert stage(res, "quality") | {"examples": None, "per_source": None} == {
        "stage": "quality",
        "title": "LLM quality filter",
        "in": 40,
        "kept": 12,
        "dropped": {"llm_rejected": 4, "not_assessed": 24},
        "examples": None,
        "per_source": None,
    }
    assert stage(res, "select")["in"] == 12 and stage(res, "select")["dropped"] == {"not_selected": 2}
    rejected = stage(res, "quality")["examples"]["llm_rejected"][0]
    assert rejected["temporal_stability"] == -1 and "current" in rejected["question"]
    info = res.report.to_dict()["quality"]
    assert (
        info["model"] == "judge-model"
        and info["requests"] == 16
        and info["cache"] == str(tmp_path / "cache.jsonl")
    )


def test_build_with_sample_and_failures(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    data = [*questions(30), row("BROKEN question?"), row("GARBAGE question?")]

    def run(name: str, seed: int) -> list[dict[str, Any]]:
        qf = make_filter(server)
        res = build(
            [rows_input("syn", lambda: data)],
            tmp_path / name,
            config=BuildConfig(sample=8, seed=seed),
            quality=qf,
        )
        assert stage(res, "select")["kept"] == 8
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]

    a, b, c = run("a.jsonl", 0), run("b.jsonl", 0), run("c.jsonl", 5)
    assert a == b and a != c
    for rows in (a, c):
        assert len(rows) == 8
        assert all(r["llm_temporal_stability"] == 1 and "current" not in r["question"] for r in rows)
        assert not any("BROKEN" in r["question"] or "GARBAGE" in r["question"] for r in rows)

    # Without a target every row is rated; failures are dropped and counted (on_error="drop").
    qf = make_filter(server)
    res = build([rows_input("syn", data)], tmp_path / "all.jsonl", quality=qf)
    assert stage(res, "quality")["dropped"] == {"llm_error": 2, "llm_rejected": 7}
    assert res.rows == 23
    errors = stage(res, "quality")["examples"]["llm_error"]
    assert {"HTTP 400" in e["error"] or "unparseable" in e["error"] for e in errors} == {True}


def test_cli_with_the_llm_filter(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in questions(12)))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "l0_env.data",
                "build",
                "-i",
                f"{data}:syn",
                "--out",
                "t.parquet",
                "--llm-url",
                server.base_url,
                "--llm-model",
                "judge-model",
                "--llm-concurrency",
                "3",
                "--overwrite",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )

    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert "wrote 9 rows" in proc.stdout and "llm_rejected 3" in proc.stdout
    assert len(server.chat_requests) == 12
    assert len((tmp_path / "t.llm-cache.jsonl").read_text().splitlines()) == 12
    proc = run()  # the rerun reads every rating from the cache
    assert proc.returncode == 0, proc.stderr
    assert len(server.chat_requests) == 12
    report = json.loads((tmp_path / "t.report.json").read_text())
    assert report["quality"]["cache_hits"] == 12 and report["quality"]["requests"] == 0
