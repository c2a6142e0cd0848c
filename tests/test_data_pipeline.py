"""The data pipeline (``python -m l0_env.data build``): each stage on constructed inputs with known
answers, provenance, outputs the env's loader reads, the report's bookkeeping, errors, the CLI."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l0_env.answers import normalize_answer
from l0_env.pipeline import (
    AnswerFilter,
    BuildConfig,
    Deduper,
    EvalIndex,
    Report,
    build,
    classify_answer,
    normalise_row,
    parse_input,
    question_key,
    rows_input,
    shingles,
)
from l0_env.pipeline.questions import key_hash
from l0_env.pipeline.schema import FIELDS, MalformedRow, UnanswerableRow
from l0_env.tasks import load_tasks
from l0_env.tasks.layouts import LayoutError

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stage(result: Any, name: str) -> dict[str, Any]:
    return next(s for s in result.report.to_dict()["stages"] if s["stage"] == name)


# -- question keys and shingles ------------------------------------------------------------------


def test_question_key_ignores_case_punctuation_articles_and_unicode_forms() -> None:
    base = question_key("Which magazine was started first, Arthur's Magazine or First for Women?")
    assert base == "which magazine was started first arthurs magazine or first for women"
    for variant in (
        "which magazine was started first arthur's magazine or first for women",
        "Which magazine was started first — Arthur’s Magazine or “First for Women”?",  # curly, dash
        "  WHICH magazine was started first,  Arthur's Magazine or First for Women ??",
        "Ｗhich magazine was started first, Arthur's Magazine or First for Women？",  # full-width
    ):
        assert question_key(variant) == base, variant
    assert question_key("Who wrote the Odyssey?") == question_key("who wrote odyssey")
    assert question_key("Who wrote the Iliad?") != question_key("Who wrote the Odyssey?")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_question_key_is_idempotent_and_agrees_with_the_answer_normaliser(text: str) -> None:
    key = question_key(text)
    assert question_key(key) == key
    # The key is the project's answer normalisation of a punctuation-free text.
    assert normalize_answer(key) == key


def test_shingles() -> None:
    assert shingles("who wrote odyssey") == {"who wrote", "wrote odyssey"}
    assert shingles("hello") == {"hello"}
    assert shingles("") == frozenset()
    assert shingles("a b c", n=1) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="n must be"):
        shingles("a b", n=0)


# -- answer kinds and the filters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("yes", "yes_no"),
        ("No.", "yes_no"),
        ("June 5, 1990", "date"),
        ("1 Jan 2001", "date"),
        ("1990", "date"),
        ("1990s", "date"),
        ("44 BC", "date"),
        ("2020-01-02", "date"),
        ("March 3", "date"),
        ("1,234", "number"),
        ("$12", "number"),
        ("12%", "number"),
        ("5 million", "number"),
        ("12 km", "number"),
        ("seven", "number"),
        ("500", "number"),
        ("3 Idiots", "entity"),
        ("Michio Sugeno", "entity"),
        ("the Eiffel Tower", "entity"),
        ("May", "entity"),
        ("he was the first president of the united states", "other"),
    ],
)
def test_classify_answer(answer: str, kind: str) -> None:
    assert classify_answer(answer) == kind


def test_answer_filter_bounds_are_inclusive() -> None:
    f = AnswerFilter(min_chars=3, max_chars=5, max_words=1)
    assert f.reason("abc", "entity") is None
    assert f.reason("abcde", "entity") is None
    assert f.reason("ab", "entity") == "answer_too_short"
    assert f.reason("abcdef", "entity") == "answer_too_long"
    assert f.reason("ab cd", "entity") == "answer_too_long"  # 5 chars but 2 words
    assert f.reason("  abc  ", "entity") is None  # surrounding space does not count
    assert AnswerFilter(min_words=2).reason("Paris", "entity") == "answer_too_short"


def test_answer_filter_kinds() -> None:
    keep = AnswerFilter(keep_kinds=frozenset({"entity", "number"}))
    assert keep.reason("x", "entity") is None
    assert keep.reason("yes", "yes_no") == "answer_kind:yes_no"
    drop = AnswerFilter(drop_kinds=frozenset({"yes_no"}))
    assert drop.reason("yes", "yes_no") == "answer_kind:yes_no"
    assert drop.reason("1990", "date") is None
    assert not AnswerFilter().active and drop.active


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_chars": 5, "max_chars": 4}, "greater than max_chars"),
        ({"min_words": -1}, "non-negative integer"),
        ({"keep_kinds": frozenset({"city"})}, "unknown answer kind"),
        ({"keep_kinds": frozenset({"entity"}), "drop_kinds": frozenset({"yes_no"})}, "not both"),
    ],
)
def test_answer_filter_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnswerFilter(**kwargs)


# -- de-duplication --------------------------------------------------------------------------------


def test_deduper_keeps_the_first_and_flags_conflicting_answers() -> None:
    d = Deduper()
    k = key_hash(question_key("Who wrote the Odyssey?"))
    assert d.check(k, ["Homer"]) is None
    assert d.check(k, ["homer."]) == "duplicate"  # same answer after normalisation
    assert d.check(k, ["Virgil"]) == "duplicate_conflicting"
    assert d.check(key_hash(question_key("Who wrote the Iliad?")), ["Homer"]) is None
    assert len(d) == 2


# -- decontamination -------------------------------------------------------------------------------

EVAL_Q = "Which magazine was started first, Arthur's Magazine or First for Women?"


def make_index(*questions: str, threshold: float | None = 0.6) -> EvalIndex:
    index = EvalIndex(threshold=threshold)
    index.add_all((q, "dev") for q in questions)
    return index


def test_exact_match_ignores_case_and_punctuation() -> None:
    index = make_index(EVAL_Q)
    match = index.match("which magazine was started first arthurs magazine or first for women")
    assert match is not None and match.kind == "exact" and match.similarity == 1.0
    assert match.question == EVAL_Q and match.source == "dev"


def test_near_match_a_word_changed_or_added() -> None:
    index = make_index(EVAL_Q)
    changed = index.match("Which magazine was launched first, Arthur's Magazine or First for Women?")
    assert changed is not None and changed.kind == "near"
    assert changed.similarity == pytest.approx(8 / 12, abs=1e-4)  # 10 bigrams each, 8 shared
    reworded = index.match("Which magazine started first, Arthur's Magazine or First for Women?")
    assert reworded is not None and reworded.kind == "near"
    assert index.match("In 2001, which magazine was started first, Arthur's Magazine or First for Women?")


def test_near_match_leaves_different_questions_alone() -> None:
    index = make_index(EVAL_Q, "Who is the father of Barack Obama?")
    assert index.match("Who is the father of Donald Trump?") is None  # same template, 3/7
    assert index.match("Which magazine was started first, Vogue or Elle?") is None
    assert index.match("What is the capital of France?") is None
    assert (
        make_index(EVAL_Q, threshold=None).match(
            "Which magazine was launched first, Arthur's Magazine or First for Women?"
        )
        is None
    )  # near check off: exact only


def test_near_threshold_boundary_is_inclusive() -> None:
    index = make_index("a1 b1 c1 d1 e1 f1", threshold=2 / 3)
    assert index.match("a1 b1 c1 d1 e1 g1") is not None  # shares 4 of 6 bigrams: exactly 2/3
    assert make_index("a1 b1 c1 d1 e1 f1", threshold=0.6).match("a1 b1 c1 x1 e1 f1") is None  # 2/8
    # J = 14/25 = 0.56 exactly, and in floating point 0.56 * 25 = 14.000000000000002: without
    # care the prefix is one shingle short (and the length filter one short), and this is missed.
    words = [f"w{i}" for i in range(1, 27)]
    match = make_index(" ".join(words[:15]), threshold=0.56).match(" ".join(words))
    assert match is not None and match.similarity == 0.56


@settings(max_examples=60, deadline=None)
@given(
    evals=st.lists(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=7), min_size=1, max_size=25),
    queries=st.lists(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=7), min_size=1, max_size=25),
    threshold=st.sampled_from([0.3, 0.5, 0.6, 2 / 3, 0.75, 1.0]),
    ngram=st.sampled_from([1, 2, 3]),
)
def test_prefix_filter_finds_exactly_what_brute_force_finds(
    evals: list[list[str]], queries: list[list[str]], threshold: float, ngram: int
) -> None:
    """The near check is exact: it reports a match iff some evaluation question has Jaccard >= t."""
    index = EvalIndex(threshold=threshold, ngram=ngram)
    eval_texts = [" ".join(w + "x" for w in words) for words in evals]
    index.add_all((q, "dev") for q in eval_texts)
    eval_sets = [shingles(question_key(q), ngram) for q in eval_texts]
    for words in queries:
        text = " ".join(w + "x" for w in words)
        x = shingles(question_key(text), ngram)
        best = max(len(x & y) / len(x | y) for y in eval_sets)
        match = index.match(text)
        if question_key(text) in {question_key(q) for q in eval_texts}:
            assert match is not None and match.kind == "exact"
        elif best >= threshold - 1e-9:
            assert match is not None and match.similarity == pytest.approx(best, abs=1e-4), (text, best)
        else:
            assert match is None, (text, best, match)


def test_index_rejects_bad_settings_and_late_adds() -> None:
    with pytest.raises(ValueError, match="threshold"):
        EvalIndex(threshold=1.5)
    with pytest.raises(ValueError, match="ngram"):
        EvalIndex(ngram=0)
    index = make_index(EVAL_Q)
    index.match("x")
    with pytest.raises(RuntimeError, match="after the first lookup"):
        index.add("another", "dev")


# -- schema ------------------------------------------------------------------------------------------


def test_normalise_row_maps_fields_and_keeps_the_rest_as_extra() -> None:
    row = {
        "id": 7,
        "question": "  Who? ",
        "answers": ["A", "", "A", "B"],
        "supporting_titles": ["T", "T"],
        "context": [{"title": "T", "text": "x", "is_supporting": True}],
        "type": "bridge",
        "metadata": {"k": [1, 2]},
        "source": "/path/from/layouts",
        "layout": "ours",
    }
    out = normalise_row(row, source="hq", source_file="f.jsonl", source_row=3)
    assert out["question"] == "Who?"
    assert out["answers"] == ["A", "B"]  # empty alias dropped, repeats removed
    assert out["supporting_titles"] == ["T"]
    assert out["context"] == [{"title": "T", "text": "x"}]  # layouts keeps title and text
    assert (out["source"], out["source_file"], out["source_id"], out["source_row"]) == (
        "hq",
        "f.jsonl",
        "7",
        3,
    )
    assert json.loads(out["extra"]) == {"metadata": {"k": [1, 2]}, "type": "bridge"}


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ({"answers": ["a"]}, MalformedRow, "question"),
        ({"question": "  ", "answers": ["a"]}, MalformedRow, "question"),
        ({"question": "q"}, MalformedRow, "no gold answer"),
        ({"question": "q", "answers": ["", " "]}, MalformedRow, "no non-empty answer"),
        ({"question": "q", "answers": [{"x": 1}]}, MalformedRow, "expected strings"),
        ({"question": "q", "answers": ["a"], "context": "text"}, MalformedRow, "context"),
        ({"question": "q", "answers": ["a"], "answerable": False}, UnanswerableRow, "answerable"),
        (["q", "a"], MalformedRow, "JSON object"),
    ],
)
def test_normalise_row_errors(row: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        normalise_row(row, source="s", source_file="f", source_row=0)


# -- input specs -------------------------------------------------------------------------------------


def test_parse_input(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "test_1000.jsonl", [{"question": "q", "answers": ["a"]}])
    spec = parse_input(str(f))
    assert (spec.name, spec.origin, spec.path) == ("test_1000", str(f), f)
    assert parse_input(f"{f}:nq").name == "nq"
    hf = parse_input("hf:hotpot_qa:distractor:train")
    assert (hf.name, hf.hf, hf.origin) == (
        "hotpot_qa-train",
        ("hotpot_qa", "distractor", "train"),
        "hf:hotpot_qa:distractor:train",
    )
    assert parse_input("hf:org/nq_open").hf == ("org/nq_open", None, "train")
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        parse_input(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="source name"):
        parse_input(f"{f}:bad name")
    with pytest.raises(ValueError, match="directory"):
        parse_input(str(tmp_path))
    with pytest.raises(ValueError, match="hf:<dataset>"):
        parse_input("hf:a:b:c:d")


# -- report ------------------------------------------------------------------------------------------


def test_report_counts_examples_and_check() -> None:
    r = Report(["read", "filter"], max_examples=2)
    for i in range(5):
        r.keep("read", "nq")
        r.drop("read", "nq", "malformed", {"at": f"line {i}"})
    r.keep("filter", "nq", 3)
    r.drop("filter", "nq", "answer_too_long", n=2)
    data = r.to_dict()
    read = data["stages"][0]
    assert (read["in"], read["kept"], read["dropped"]) == (10, 5, {"malformed": 5})
    assert [e["at"] for e in read["examples"]["malformed"]] == ["line 0", "line 1"]  # bounded
    r.check()
    r.keep("filter", "nq")
    with pytest.raises(RuntimeError, match="'filter' saw 6 rows of 'nq' but 'read' kept 5"):
        r.check()
    assert "| nq | 10 | 5 | 5 | malformed: 5 |" in r.to_markdown()


# -- builds ------------------------------------------------------------------------------------------

TRAIN_A = [
    {"id": "a0", "question": "Who wrote the Odyssey?", "answers": ["Homer"]},
    {"id": "a1", "question": "Is Paris in France?", "answers": ["yes"]},
    {"id": "a2", "question": EVAL_Q.lower(), "answers": ["Arthur's Magazine"]},  # exact eval repeat
    {
        "id": "a3",
        "question": "Which magazine was launched first, Arthur's Magazine or First for Women?",
        "answers": ["Arthur's Magazine"],
    },  # a word changed: near
    {
        "id": "a4",
        "question": "What is the longest river in Africa?",
        "answers": ["The Nile River in Egypt and Sudan"],
    },
    {
        "id": "a5",
        "question": "In what year did the Berlin Wall fall?",
        "answers": ["1989"],
        "supporting_titles": ["Berlin Wall"],
        "context": [{"title": "Berlin Wall", "text": "It fell in 1989."}],
    },
]
TRAIN_B = [
    {"id": "b0", "question": "who wrote the odyssey", "answers": ["homer"]},  # duplicate of a0
    {"id": "b1", "question": "Who wrote the Odyssey ?", "answers": ["Virgil"]},  # conflicting duplicate
    {"id": "b2", "question": "What is the capital of Peru?", "answers": ["Lima"]},
    {"question": "How many legs does a spider have?", "answers": ["8", "eight"]},  # no id
]
EVAL = [{"id": "e0", "question": EVAL_Q, "answers": ["Arthur's Magazine"]}]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": write_jsonl(tmp_path / "a.jsonl", TRAIN_A),
        "b": write_jsonl(tmp_path / "b.jsonl", TRAIN_B),
        "eval": write_jsonl(tmp_path / "dev.jsonl", EVAL),
    }


def test_build_end_to_end_stages_provenance_and_report(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    result = build(
        [parse_input(f"{files['a']}:a"), parse_input(f"{files['b']}:b")],
        out,
        excludes=[parse_input(str(files["eval"]))],
        config=BuildConfig(answer_filter=AnswerFilter(max_words=5)),
    )
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a:a0", "a:a1", "a:a5", "b:b2", "b:ours_3"]
    assert result.rows == 5
    berlin = rows[2]
    assert berlin["source"] == "a" and berlin["source_file"] == str(files["a"])
    assert berlin["source_id"] == "a5" and berlin["source_row"] == 5
    assert berlin["supporting_titles"] == ["Berlin Wall"]
    assert berlin["context"] == [{"title": "Berlin Wall", "text": "It fell in 1989."}]
    assert berlin["answer_kind"] == "date"
    assert rows[1]["answer_kind"] == "yes_no" and rows[4]["answer_kind"] == "number"
    assert rows[4]["answers"] == ["8", "eight"] and "source_id" in rows[4]  # layouts' fallback id

    assert stage(result, "read")["per_source"] == {
        "a": {"in": 6, "kept": 6, "dropped": {}},
        "b": {"in": 4, "kept": 4, "dropped": {}},
    }
    assert stage(result, "filter")["dropped"] == {"answer_too_long": 1}
    assert stage(result, "dedupe")["per_source"]["b"]["dropped"] == {
        "duplicate": 1,
        "duplicate_conflicting": 1,
    }
    decon = stage(result, "decontaminate")
    assert decon["dropped"] == {"eval_exact": 1, "eval_near": 1}
    near = decon["examples"]["eval_near"][0]
    assert (
        near["at"] == f"{files['a']}:4" and near["eval_question"] == EVAL_Q and near["eval_source"] == "dev"
    )
    data = result.report.to_dict()
    assert data["output"]["per_source"] == {"a": 3, "b": 2}
    assert data["excludes"] == [
        {"name": "dev", "origin": str(files["eval"]), "layout": "ours", "questions": 1}
    ]
    # The bookkeeping adds up: each stage's in = previous kept, the last kept = rows written.
    previous = None
    for s in data["stages"]:
        assert s["in"] == s["kept"] + sum(s["dropped"].values())
        if previous is not None:
            assert s["in"] == previous["kept"]
        previous = s
    assert previous is not None and previous["kept"] == len(rows)
    md, js = result.report_paths
    assert md == tmp_path / "train.report.md" and js == tmp_path / "train.report.json"
    assert json.loads(js.read_text()) == json.loads(result.report.to_json())
    assert "eval_near: 1" in md.read_text()


def test_parquet_and_jsonl_outputs_agree_and_load_as_tasks(files: dict[str, Path], tmp_path: Path) -> None:
    inputs = [parse_input(f"{files['a']}:a"), parse_input(f"{files['b']}:b")]
    excludes = [parse_input(str(files["eval"]))]
    outputs = [tmp_path / "tp.parquet", tmp_path / "tj.jsonl", tmp_path / "tg.jsonl.gz"]
    for out in outputs:
        build(inputs, out, excludes=excludes)
    assert pq.read_schema(outputs[0]).names == list(FIELDS)
    loaded = [load_tasks(outputs[0]), load_tasks(outputs[1])]
    with gzip.open(outputs[2], "rt", encoding="utf-8") as f:
        gz_rows = [json.loads(line) for line in f]
    assert gz_rows == read_jsonl(outputs[1])
    parquet, jsonl = loaded
    assert (
        [t.id for t in parquet]
        == [t.id for t in jsonl]
        == ["a:a0", "a:a1", "a:a4", "a:a5", "b:b2", "b:ours_3"]
    )
    for p, j in zip(parquet, jsonl, strict=True):
        assert (p.question, p.answers, p.supporting_titles) == (j.question, j.answers, j.supporting_titles)
        assert p.metadata["source"] == j.metadata["source"]
        assert p.metadata["source_row"] == j.metadata["source_row"]
        assert "answer_type" not in p.metadata  # the env would read it as "score numerically"
    assert parquet[3].metadata["context"] == [{"title": "Berlin Wall", "text": "It fell in 1989."}]


def test_other_layouts_are_read_through_layouts(tmp_path: Path) -> None:
    flashrag = write_jsonl(
        tmp_path / "fr.jsonl", [{"id": "t0", "question": "Who?", "golden_answers": ["A", "B"]}]
    )
    csv = tmp_path / "simple_qa_test_set.csv"
    csv.write_text(
        "metadata,problem,answer\n\"{'topic': 'Art'}\",Who painted the Mona Lisa?,Leonardo da Vinci\n"
    )
    out = tmp_path / "t.jsonl"
    result = build([parse_input(f"{flashrag}:fr"), parse_input(f"{csv}:sqa")], out)
    rows = read_jsonl(out)
    assert [(r["id"], r["answers"]) for r in rows] == [
        ("fr:t0", ["A", "B"]),
        ("sqa:simpleqa_0", ["Leonardo da Vinci"]),
    ]
    assert json.loads(rows[1]["extra"]) == {"metadata": {"topic": "Art"}}
    assert [i["layout"] for i in result.report.to_dict()["inputs"]] == ["flashrag", "simpleqa"]


def test_duplicate_ids_within_a_source_stay_unique(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "a.jsonl", [{"id": "x", "question": f"Question {i}?", "answers": ["a"]} for i in range(3)]
    )
    build([parse_input(str(f))], tmp_path / "o.jsonl")
    assert [r["id"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["a:x", "a:x#1", "a:x#2"]
    load_tasks(tmp_path / "o.jsonl")  # the loader refuses duplicate ids


def synthetic(n: int) -> list[dict[str, Any]]:
    return [
        {"id": str(i), "question": f"Synthetic question number {i}?", "answers": [f"a{i}"]} for i in range(n)
    ]


def test_limit_and_sample(tmp_path: Path) -> None:
    inp = [rows_input("syn", lambda: synthetic(100))]
    limited = build(inp, tmp_path / "l.jsonl", config=BuildConfig(limit=10))
    assert [r["source_row"] for r in read_jsonl(tmp_path / "l.jsonl")] == list(range(10))
    assert stage(limited, "select")["dropped"] == {"over_limit": 90}

    def sample(seed: int, name: str) -> list[int]:
        res = build(inp, tmp_path / name, config=BuildConfig(sample=20, seed=seed))
        assert stage(res, "select")["kept"] == 20 and stage(res, "select")["dropped"] == {"not_sampled": 80}
        return [r["source_row"] for r in read_jsonl(tmp_path / name)]

    first, again, other = sample(1, "s1.jsonl"), sample(1, "s1b.jsonl"), sample(2, "s2.jsonl")
    assert first == again  # the seed fixes the sample
    assert first != other
    assert first == sorted(first) and len(set(first)) == 20  # source order, no repeats
    # A sample larger than what survives keeps everything.
    build(inp, tmp_path / "all.jsonl", config=BuildConfig(sample=1000))
    assert len(read_jsonl(tmp_path / "all.jsonl")) == 100


def test_a_generator_input_and_exclude(tmp_path: Path) -> None:
    def gen() -> Any:
        yield from synthetic(50)

    evals = rows_input("dev", [{"question": "Synthetic question number 7?", "answers": ["x"]}])
    res = build([rows_input("syn", gen())], tmp_path / "o.parquet", excludes=[evals])
    assert res.rows == 49 and stage(res, "decontaminate")["dropped"] == {"eval_exact": 1}


# -- errors ------------------------------------------------------------------------------------------


def listing(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def test_malformed_rows_name_file_and_line_and_leave_nothing(tmp_path: Path) -> None:
    good = {"question": "q?", "answers": ["a"]}
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(good) + "\n\n{not json\n")
    before = listing(tmp_path)
    with pytest.raises(LayoutError, match=r"bad\.jsonl:3: invalid JSON"):
        build([parse_input(str(bad_json))], tmp_path / "o.parquet")
    assert listing(tmp_path) == before  # no output, no temporary file, no report

    no_question = write_jsonl(tmp_path / "nq.jsonl", [good, {"answers": ["a"]}])
    with pytest.raises(ValueError, match=r"nq\.jsonl:2: .*question"):
        build([parse_input(str(no_question))], tmp_path / "o.parquet")

    no_answer = write_jsonl(tmp_path / "na.jsonl", [good, {"question": "x?", "answers": []}])
    with pytest.raises(ValueError, match=r"na\.jsonl:2: .*answer"):
        build([parse_input(str(no_answer))], tmp_path / "o.parquet")

    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress(((json.dumps(good) + "\n") * 200).encode())[:-30])
    with pytest.raises(ValueError, match=r"t\.jsonl\.gz"):
        build([parse_input(str(truncated))], tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"question": "q1?", "answers": ["a"]}),
                "{broken",
                json.dumps({"question": "", "answers": ["a"]}),
                json.dumps({"question": "q2?", "answers": ["b"], "answerable": False}),
                json.dumps({"question": "q3?", "answers": ["c"]}),
            ]
        )
        + "\n"
    )
    res = build([parse_input(str(f))], tmp_path / "o.jsonl", config=BuildConfig(on_bad_row="skip"))
    assert res.rows == 2
    read = stage(res, "read")
    assert read["dropped"] == {"malformed": 2, "unanswerable": 1}
    assert [e["at"] for e in read["examples"]["malformed"]] == [f"{f}:2", f"{f}:3"]


def test_existing_output_needs_overwrite_and_survives_a_failed_build(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "train.parquet"
    inputs = [parse_input(str(files["a"]))]
    build(inputs, out)
    original = out.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        build(inputs, out)
    (tmp_path / "broken.jsonl").write_text('{"question": "q?", "answers": ["a"]}\n{oops\n')
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        build([parse_input(str(tmp_path / "broken.jsonl"))], out, overwrite=True)
    assert out.read_bytes() == original and listing(tmp_path) == before
    build(inputs, out, overwrite=True, config=BuildConfig(limit=1))
    assert pq.read_metadata(out).num_rows == 1


def test_bad_build_arguments(files: dict[str, Path], tmp_path: Path) -> None:
    a = parse_input(str(files["a"]))
    with pytest.raises(ValueError, match="share the source name"):
        build([a, a], tmp_path / "o.jsonl")
    with pytest.raises(ValueError, match=r"\.parquet, \.jsonl or \.jsonl\.gz"):
        build([a], tmp_path / "o.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build([a], tmp_path / "no" / "o.jsonl")
    with pytest.raises(ValueError, match="not both"):
        BuildConfig(limit=1, sample=1)
    with pytest.raises(ValueError, match="on_bad_row"):
        BuildConfig(on_bad_row="ignore")


# -- the command line ------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l0_env.data", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_cli_build(files: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli(
        "build",
        "-i",
        f"{files['a']}:a",
        "-i",
        f"{files['b']}:b",
        "-x",
        str(files["eval"]),
        "--drop-kinds",
        "yes_no",
        "--max-answer-words",
        "5",
        "--out",
        "train.parquet",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 rows to train.parquet" in proc.stdout
    assert "decontaminate" in proc.stdout and "eval_near 1" in proc.stdout
    tasks = load_tasks(tmp_path / "train.parquet")
    assert [t.id for t in tasks] == ["a:a0", "a:a5", "b:b2", "b:ours_3"]
    report = json.loads((tmp_path / "train.report.json").read_text())
    assert report["command"].startswith("python -m l0_env.data build -i ")
    assert report["config"]["answer_filter"]["drop_kinds"] == ["yes_no"]
    # The report can go elsewhere.
    proc = run_cli("build", "-i", str(files["a"]), "--out", "t2.jsonl", "--report", "reports/r", cwd=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr  # its directory must exist
    (tmp_path / "reports").mkdir()
    proc = run_cli("build", "-i", str(files["a"]), "--out", "t2.jsonl", "--report", "reports/r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "reports" / "r.md").is_file() and (tmp_path / "reports" / "r.json").is_file()
    # Again without --overwrite: refused, the file untouched.
    proc = run_cli("build", "-i", str(files["a"]), "--out", "train.parquet", cwd=tmp_path)
    assert proc.returncode == 1 and "--overwrite" in proc.stderr
    assert len(load_tasks(tmp_path / "train.parquet")) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--near-threshold", "1.5"], "expected a number in (0, 1]"),
        (["--keep-kinds", "city"], "unknown answer kind"),
        (["--keep-kinds", "entity", "--drop-kinds", "yes_no"], "not allowed with argument"),
        (["--limit", "5", "--sample", "5"], "not allowed with argument"),
        (["--limit", "0"], "expected an integer >= 1"),
        (["--min-answer-chars", "9", "--max-answer-chars", "3"], "is greater than"),
        (["--llm-url", "http://127.0.0.1:1/v1"], "--llm-url and --llm-model go together"),
        (["--llm-min-objectivity", "2"], "expected -1, 0 or 1"),
        (["-i", "missing.jsonl"], "input file not found: missing.jsonl"),
        (["--out", "o.csv"], "the output must end in .parquet, .jsonl or .jsonl.gz"),
    ],
)
def test_cli_bad_options(files: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli("build", "-i", str(files["a"]), "--out", "o.jsonl", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr
    assert "usage:" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_help_and_missing_command(tmp_path: Path) -> None:
    proc = run_cli("build", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--exclude" in proc.stdout and "--llm-url" in proc.stdout
    proc = run_cli(cwd=tmp_path)
    assert proc.returncode == 2 and "required" in proc.stderr


def test_data_package_still_holds_its_files() -> None:
    import l0_env.data

    assert (Path(l0_env.data.__file__).parent / "hotpotqa_dev.jsonl.gz").is_file()
    assert len(load_tasks()) == 1245


@pytest.mark.parametrize("n", [3])
def test_random_inputs_roundtrip(tmp_path: Path, n: int) -> None:
    """Random rows (unicode, aliases, ids or none) survive the build and load back unchanged."""
    rng = random.Random(n)
    alphabet = "abcdéß中 ?,'\""
    rows = []
    for i in range(300):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 20))).strip() or "q"
        answers = [
            "".join(rng.choice("xyz ") for _ in range(rng.randint(1, 5))).strip() or "x" for _ in range(2)
        ]
        row: dict[str, Any] = {"question": q + f" {i}", "answers": answers}
        if i % 2:
            row["id"] = f"id{i}"
        rows.append(row)
    build([rows_input("r", rows)], tmp_path / "o.parquet")
    tasks = load_tasks(tmp_path / "o.parquet")
    assert len(tasks) == len({question_key(r["question"]) for r in rows})
    by_row = {t.metadata["source_row"]: t for t in tasks}
    for pos, t in itertools.islice(by_row.items(), 50):
        assert t.question == rows[pos]["question"].strip()
        assert list(t.answers) == list(dict.fromkeys(a for a in rows[pos]["answers"]))


def test_hugging_face_input_without_datasets_is_a_clear_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed: this test would reach for the network")
    with pytest.raises(
        ValueError, match=r"hf:nq_open::train: Hugging Face inputs need the 'datasets' package"
    ):
        build([parse_input("hf:nq_open")], tmp_path / "o.jsonl")
    assert listing(tmp_path) == set()


def test_evaluation_sets_need_only_questions(tmp_path: Path) -> None:
    """A test split without answers still decontaminates; as training data it is refused."""
    hidden = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"_id": "h1", "question": "Who wrote the Odyssey?", "context": [["Homer", ["Homer wrote it."]]]},
            {"id": "h2", "question": "What is the capital of Peru?"},
            {"id": "h3", "question": "Is Paris in France?", "answers": []},
        ],
    )
    res = build(
        [rows_input("train", TRAIN_A + TRAIN_B)], tmp_path / "o.jsonl", excludes=[parse_input(str(hidden))]
    )
    assert stage(res, "decontaminate")["dropped"] == {"eval_exact": 3}
    assert res.report.to_dict()["excludes"][0]["questions"] == 3
    with pytest.raises(LayoutError, match=r"test\.jsonl:1: .*answer"):
        build([parse_input(str(hidden))], tmp_path / "o2.jsonl")
