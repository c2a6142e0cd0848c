"""QA layouts (l0_env.tasks.layouts): every public layout read into our schema, and clear errors.

Real data throughout: the bundled samples under tests/data/qa (re-laid out from the shared QA data,
see its NOTICE.md) always; the project's shared QA directory when it is there.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

import pytest

from l0_env.tasks import load_tasks
from l0_env.tasks.layouts import (
    LAYOUTS,
    LayoutError,
    detect_format,
    detect_layout,
    iter_rows,
    normalize_row,
    normalize_rows,
)

SAMPLES = Path(__file__).parent / "data" / "qa"
BUNDLED = Path(__file__).resolve().parents[1] / "l0_env" / "data"


def shared_qa_dir() -> Path | None:
    """The project's shared QA data: $L0_QA_DIR, else ../shared/data/qa next to the repository."""
    for candidate in (os.environ.get("L0_QA_DIR"), Path(__file__).resolve().parents[2] / "shared/data/qa"):
        if candidate and (Path(candidate) / "SOURCES.md").is_file():
            return Path(candidate)
    return None


SHARED = shared_qa_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="the shared QA data (../shared/data/qa) is not here")

# Rows per shared file, as SOURCES.md lists them.
SHARED_FILES = {
    "hotpotqa/dev_distractor_500.jsonl": (500, True),
    "hotpotqa/dev_distractor_extra_300.jsonl": (300, True),
    "hotpotqa/dev_distractor_ircot_500.jsonl": (500, True),
    "hotpotqa/train_distractor_100.jsonl": (100, True),
    "bamboogle/test.jsonl": (125, False),
    "nq/test_1000.jsonl": (1000, False),
    "triviaqa/test_1000.jsonl": (1000, False),
    "popqa/test_1000.jsonl": (1000, False),
    "2wikimultihopqa/dev_first1000.jsonl": (1000, False),
    "musique/dev_answers_1000.jsonl": (1000, False),
    "musique/train_with_context_100.jsonl": (100, True),
    "simpleqa/test.jsonl": (4326, False),
}


def bundled_passages() -> dict[str, str]:
    """The bundled corpus: HotpotQA's official paragraph text by title."""
    with gzip.open(BUNDLED / "hotpotqa_passages.jsonl.gz", "rt", encoding="utf-8") as f:
        return {p["title"]: p["text"] for p in map(json.loads, f)}


# -- the shared data (skipped where it is absent) -------------------------------------------------


@needs_shared
@pytest.mark.parametrize("rel", sorted(SHARED_FILES))
def test_every_shared_file_reads_whole_with_provenance(rel):
    assert SHARED is not None
    path = SHARED / rel
    rows, has_context = list(iter_rows(path)), SHARED_FILES[rel][1]
    assert detect_layout(path) == "ours" and len(rows) == SHARED_FILES[rel][0]
    assert len({r["id"] for r in rows}) == len(rows), "ids are unique within a file"
    for i, r in enumerate(rows):
        assert r["question"].strip() and r["answers"] and all(a.strip() for a in r["answers"])
        assert (r["source"], r["source_row"], r["layout"]) == (str(path), i, "ours")
        assert ("context" in r) == has_context
        if has_context:
            titles = {p["title"] for p in r["context"]}
            assert set(r["context"][0]) == {"title", "text"}, "paragraphs are {title, text} only"
            assert set(r["supporting_titles"]) <= titles, (rel, r["id"])


@needs_shared
def test_shared_hotpotqa_paragraphs_are_the_official_text():
    assert SHARED is not None
    official = bundled_passages()
    rows = list(iter_rows(SHARED / "hotpotqa/dev_distractor_500.jsonl"))
    paragraphs = [p for r in rows for p in r["context"]]
    assert len(paragraphs) == 4992
    assert all(official[p["title"]] == p["text"] for p in paragraphs)


@needs_shared
def test_the_re_laid_out_samples_hold_the_shared_rows():
    """The samples differ from the shared rows only in layout: same ids, questions and answers."""
    assert SHARED is not None
    pairs = [
        ("hotpotqa/hotpot_dev_distractor_sample.json", "hotpotqa/dev_distractor_500.jsonl"),
        ("musique/musique_ans_train_sample.jsonl", "musique/train_with_context_100.jsonl"),
        ("simpleqa/simple_qa_test_sample.csv", "simpleqa/test.jsonl"),
        ("triviaqa/triviaqa_sample.json", "triviaqa/test_1000.jsonl"),
        ("2wikimultihopqa/flashrag_dev_sample.jsonl", "2wikimultihopqa/dev_first1000.jsonl"),
    ]
    for sample, shared in pairs:
        mine = list(iter_rows(SAMPLES / sample))
        theirs = list(iter_rows(SHARED / shared))[: len(mine)]
        keys = ("id", "question", "answers", "supporting_titles", "context", "metadata")
        for a, b in zip(mine, theirs, strict=True):
            assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}, sample


# -- each layout, on the bundled real samples ------------------------------------------------------


def test_hotpotqa_original_json_list():
    path = SAMPLES / "hotpotqa/hotpot_dev_distractor_sample.json"
    assert (detect_format(path), detect_layout(path)) == ("json", "hotpotqa")
    rows = list(iter_rows(path))
    first = rows[0]
    assert first["id"] == "5a7d5c175542991319bc93b1" and first["answers"] == ["Denise Levertov"]
    assert first["supporting_titles"] == ["Harvey Pekar", "Denise Levertov"]
    assert first["supporting_facts"] == [["Harvey Pekar", 0], ["Denise Levertov", 0]]
    assert (first["type"], first["level"]) == ("comparison", "hard")
    assert rows[1]["answers"] == ["yes"]
    # Sentences joined with nothing between them give back HotpotQA's official paragraph text.
    official = bundled_passages()
    assert all(official[p["title"]] == p["text"] for r in rows for p in r["context"])
    assert sum(len(r["context"]) for r in rows) == 50


def test_musique_original_jsonl():
    path = SAMPLES / "musique/musique_ans_train_sample.jsonl"
    assert detect_layout(path) == "musique"
    rows = list(iter_rows(path))
    first = rows[0]
    assert first["answers"] == ["G. Stanley Hall", "Stanley Hall"], "the answer, then its aliases"
    assert first["supporting_titles"] == ["Journal of Psychotherapy Integration", "Adolescence"]
    assert len(first["context"]) == 20 and first["answerable"] is True
    assert first["question_decomposition"][0]["answer"] == "American Psychological Association"
    raw = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert [p["text"] for p in first["context"]] == [p["paragraph_text"] for p in raw["paragraphs"]]


def test_triviaqa_original_object_is_expanded():
    path = SAMPLES / "triviaqa/triviaqa_sample.json"
    assert (detect_format(path), detect_layout(path)) == ("json", "triviaqa")
    rows = list(iter_rows(path))
    assert len(rows) == 5 and rows[0]["id"] == "test_6233"
    assert rows[0]["answers"][0] == "Mark Twain", "the value first"
    assert len(rows[0]["answers"]) == len(set(rows[0]["answers"])) == 22, "value and aliases de-duplicated"
    assert rows[1]["source_row"] == 1


def test_nq_open_popqa_simpleqa_bamboogle_flashrag_and_ours():
    nq = list(iter_rows(SAMPLES / "nq/nq_open_sample.jsonl"))
    assert nq[0] == {
        "id": "nq_open_0",
        "question": "who told the story of the prodigal son",
        "answers": ["Jesus Christ"],
        "source": str(SAMPLES / "nq/nq_open_sample.jsonl"),
        "source_row": 0,
        "layout": "nq_open",
    }
    popqa = list(iter_rows(SAMPLES / "popqa/popqa_sample.tsv"))
    assert detect_layout(SAMPLES / "popqa/popqa_sample.tsv") == "popqa"
    assert popqa[0]["id"] == "10207" and popqa[0]["answers"] == ["Ralph Rainger", "Ralph Reichenthal"]
    assert popqa[0]["metadata"]["s_wiki_title"] == "Easy Living (1937 film)"
    assert popqa[1]["question"] == "Who is the father of Æthelburh of Wilton?"
    simpleqa = list(iter_rows(SAMPLES / "simpleqa/simple_qa_test_sample.csv"))
    assert simpleqa[0]["id"] == "simpleqa_0" and simpleqa[0]["answers"] == ["Michio Sugeno"]
    assert simpleqa[0]["question"] == "Who received the IEEE Frank Rosenblatt Award in 2010?"
    assert simpleqa[0]["metadata"]["answer_type"] == "Person", "the Python-literal dict is parsed"
    assert isinstance(simpleqa[0]["metadata"]["urls"], list)
    bamboogle = list(iter_rows(SAMPLES / "bamboogle/bamboogle_sample.csv"))
    assert [r["id"] for r in bamboogle] == [f"bamboogle_{i}" for i in range(5)]
    assert bamboogle[0]["answers"] == ["james madison"]
    flashrag = list(iter_rows(SAMPLES / "2wikimultihopqa/flashrag_dev_sample.jsonl"))
    assert flashrag[0]["layout"] == "flashrag" and flashrag[0]["answers"] == ["Małgorzata Braunek"]
    ours = list(iter_rows(SAMPLES / "hotpotqa/ours_dev_extra_sample.jsonl"))
    assert ours[0]["layout"] == "ours" and "sentences" not in ours[0]["context"][0]
    assert ours[0]["supporting_facts"] == [["Tinted Windows (album)", 0], ["Tinted Windows (band)", 3]]


def test_every_layout_becomes_tasks_the_env_loads():
    paths = [p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".tsv")]
    paths = [p for p in paths if p.name != "parity_golds.jsonl"]
    seen = set()
    for path in paths:
        rows = list(iter_rows(path))
        tasks = load_tasks(rows)
        assert [t.id for t in tasks] == [r["id"] for r in rows] and tasks[0].answers == tuple(
            rows[0]["answers"]
        )
        seen.add(rows[0]["layout"])
    assert seen == {
        "ours",
        "flashrag",
        "hotpotqa",
        "musique",
        "triviaqa",
        "nq_open",
        "popqa",
        "simpleqa",
        "bamboogle",
    }


def test_2wikimultihopqa_and_hugging_face_rows():
    """2Wiki shares HotpotQA's layout (plus evidences; sentences joined by a space); HF's
    hotpot_qa and trivia_qa rows use parallel lists and lower-case keys. The paragraphs are
    HotpotQA's (no 2Wiki paragraphs are bundled); the layouts are the releases'."""
    sample = json.loads((SAMPLES / "hotpotqa/hotpot_dev_distractor_sample.json").read_text(encoding="utf-8"))[
        0
    ]
    context = [[title, [s.strip() for s in sentences]] for title, sentences in sample["context"]]
    two_wiki = {
        "_id": "2wiki-0",
        "type": "compositional",
        "question": sample["question"],
        "answer": sample["answer"],
        "context": context,
        "supporting_facts": sample["supporting_facts"],
        "evidences": [["Harvey Pekar", "date of birth", "1939"]],
    }
    row = normalize_row(two_wiki, detect_row_layout_or_fail(two_wiki), index=7, source="2wiki.json")
    assert row["layout"] == "2wikimultihopqa" and row["source_row"] == 7
    assert row["context"][0]["text"] == " ".join(context[0][1])
    assert row["supporting_titles"] == ["Harvey Pekar", "Denise Levertov"]
    hf_hotpot = {
        "id": sample["_id"],
        "question": sample["question"],
        "answer": sample["answer"],
        "type": "comparison",
        "level": "hard",
        "supporting_facts": {"title": ["Harvey Pekar", "Denise Levertov"], "sent_id": [0, 0]},
        "context": {
            "title": [c[0] for c in sample["context"]],
            "sentences": [c[1] for c in sample["context"]],
        },
    }
    hf_trivia = {
        "question": "Who wrote Hamlet?",
        "question_id": "tc_1",
        "answer": {"value": "Shakespeare", "aliases": ["William Shakespeare", "Shakespeare"]},
    }
    got = list(normalize_rows([hf_hotpot], source="hf:hotpot_qa/distractor:validation"))
    assert got[0]["layout"] == "hotpotqa" and got[0]["source"] == "hf:hotpot_qa/distractor:validation"
    assert (
        got[0]["context"]
        == next(iter(iter_rows(SAMPLES / "hotpotqa/hotpot_dev_distractor_sample.json")))["context"]
    )
    assert got[0]["supporting_facts"] == [["Harvey Pekar", 0], ["Denise Levertov", 0]]
    trivia = next(normalize_rows([hf_trivia]))
    assert trivia["answers"] == ["Shakespeare", "William Shakespeare"] and trivia["id"] == "tc_1"


def detect_row_layout_or_fail(row):
    from l0_env.tasks.layouts import detect_row_layout

    layout = detect_row_layout(row)
    assert layout is not None
    return layout


def test_gzip_parquet_and_json_named_jsonl(tmp_path):
    sample = SAMPLES / "hotpotqa/ours_dev_extra_sample.jsonl"
    expected = [{k: v for k, v in r.items() if k != "source"} for r in iter_rows(sample)]
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(sample.read_bytes()))
    named_json = tmp_path / "x.json"
    named_json.write_bytes(sample.read_bytes())
    assert detect_format(named_json) == "jsonl", "a .json file of JSON lines is JSON Lines"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    for path in (gz, named_json):
        got = [{k: v for k, v in r.items() if k != "source"} for r in iter_rows(path)]
        assert got == expected, path
    # Arrow holds no [title, int] pairs: the Parquet copy leaves supporting_facts out.
    parquet = tmp_path / "x.parquet"
    records = [json.loads(line) for line in sample.read_text().splitlines()]
    pq.write_table(
        pa.Table.from_pylist([{k: v for k, v in r.items() if k != "supporting_facts"} for r in records]),
        parquet,
    )
    got = [{k: v for k, v in r.items() if k != "source"} for r in iter_rows(parquet)]
    assert got == [{k: v for k, v in r.items() if k != "supporting_facts"} for r in expected]
    bamboogle_gz = tmp_path / "b.csv.gz"
    bamboogle_gz.write_bytes(gzip.compress((SAMPLES / "bamboogle/bamboogle_sample.csv").read_bytes()))
    assert next(r["answers"] for r in iter_rows(bamboogle_gz)) == ["james madison"]


def test_rows_stream(tmp_path):
    """JSON Lines are read as they are consumed: a bad line far down is not reached by the first row."""
    path = tmp_path / "big.jsonl"
    good = json.dumps({"id": "1", "question": "Q?", "answers": ["A"]})
    path.write_text(good + "\n" + good.replace('"1"', '"2"') + "\n{broken\n")
    rows = iter_rows(path)
    assert next(rows)["id"] == "1" and next(rows)["id"] == "2"
    with pytest.raises(LayoutError, match=r"big.jsonl:3: invalid JSON"):
        next(rows)


# -- malformed files: each error names the file, the row and what was expected --------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="QA file not found"):
        list(iter_rows(tmp_path / "missing.jsonl"))
    with pytest.raises(LayoutError, match=r"unknown QA file extension"):
        detect_layout(write(tmp_path / "x.txt", "hello"))
    with pytest.raises(LayoutError, match=r"empty\.jsonl: no records"):
        detect_layout(write(tmp_path / "empty.jsonl", "\n\n"))
    with pytest.raises(
        LayoutError, match=r"keys\.jsonl:1: cannot tell the layout .*its keys: foo, q.*hotpotqa"
    ):
        detect_layout(write(tmp_path / "keys.jsonl", '{"q": "x", "foo": 1}\n'))
    with pytest.raises(LayoutError, match=r"list\.jsonl:1: expected a JSON object"):
        list(iter_rows(write(tmp_path / "list.jsonl", "[1, 2]\n"), layout="ours"))
    with pytest.raises(LayoutError, match=r"doc\.json: a JSON document must be a list"):
        list(iter_rows(write(tmp_path / "doc.json", '"just a string"')))
    with pytest.raises(LayoutError, match=r"bad\.json: invalid JSON"):
        list(iter_rows(write(tmp_path / "bad.json", '[{"question": "x",')))
    with pytest.raises(ValueError, match="unknown layout 'hotpot'"):
        list(iter_rows(SAMPLES / "nq/nq_open_sample.jsonl", layout="hotpot"))
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress((SAMPLES / "nq/nq_open_sample.jsonl").read_bytes())[:-12])
    with pytest.raises(LayoutError, match=r"t\.jsonl\.gz: the file ends early"):
        list(iter_rows(truncated))
    with pytest.raises(LayoutError, match=r"is a directory"):
        list(iter_rows(tmp_path))


def test_a_record_that_does_not_fit_the_files_layout(tmp_path):
    sample = json.loads((SAMPLES / "hotpotqa/hotpot_dev_distractor_sample.json").read_text(encoding="utf-8"))
    test_split = [sample[0], {k: v for k, v in sample[1].items() if k != "answer"}]
    path = write(tmp_path / "hotpot_test.json", json.dumps(test_split))
    with pytest.raises(LayoutError, match=r"hotpot_test\.json: record 1: not a hotpotqa record .*test split"):
        list(iter_rows(path))
    musique = (SAMPLES / "musique/musique_ans_train_sample.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(musique[1])
    bad["paragraphs"] = "not a list"
    path = write(tmp_path / "m.jsonl", musique[0] + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(LayoutError, match=r"m\.jsonl:2: not a musique record .*'paragraphs' must be a list"):
        list(iter_rows(path))
    bad = json.loads(musique[0])
    bad["answer"], bad["answer_aliases"] = "  ", []
    with pytest.raises(LayoutError, match=r"no non-empty gold answer"):
        list(iter_rows(write(tmp_path / "m2.jsonl", json.dumps(bad) + "\n")))
    bad["answer"] = {"text": "x"}
    with pytest.raises(LayoutError, match=r"an answer is a dict"):
        list(iter_rows(write(tmp_path / "m3.jsonl", json.dumps(bad) + "\n")))
    trivia = json.loads((SAMPLES / "triviaqa/triviaqa_sample.json").read_text(encoding="utf-8"))
    del trivia["Data"][2]["Answer"]
    with pytest.raises(LayoutError, match=r"Data\[2\]: not a triviaqa record .*test split"):
        list(iter_rows(write(tmp_path / "tq.json", json.dumps(trivia))))


def test_malformed_csv_rows(tmp_path):
    lines = (SAMPLES / "simpleqa/simple_qa_test_sample.csv").read_text(encoding="utf-8").splitlines()
    with pytest.raises(LayoutError, match=r"extra\.csv:3: the row has more fields than the header"):
        list(iter_rows(write(tmp_path / "extra.csv", "\n".join([*lines[:2], lines[2] + ",surplus"]))))
    with pytest.raises(LayoutError, match=r"short\.csv:2: the row has fewer fields"):
        list(iter_rows(write(tmp_path / "short.csv", "metadata,problem,answer\n{},What?\n")))
    rows = list(csv.reader(lines))
    rows[1][0] = "{'topic': "
    text = "\n".join(",".join(f'"{c}"' for c in r) for r in rows[:2])
    with pytest.raises(LayoutError, match=r"meta\.csv:2: not a simpleqa record .*Python-literal dict"):
        list(iter_rows(write(tmp_path / "meta.csv", text)))
    popqa = (SAMPLES / "popqa/popqa_sample.tsv").read_text(encoding="utf-8").splitlines()
    broken = popqa[1].rsplit("\t", 1)[0] + '\t"not json, not a list"'
    with pytest.raises(LayoutError, match=r"p\.tsv:2: not a popqa record .*possible_answers"):
        list(iter_rows(write(tmp_path / "p.tsv", popqa[0] + "\n" + broken + "\n")))


def test_layout_names_are_documented():
    assert set(LAYOUTS) == {
        "ours",
        "flashrag",
        "hotpotqa",
        "2wikimultihopqa",
        "musique",
        "triviaqa",
        "nq_open",
        "popqa",
        "simpleqa",
        "bamboogle",
        "gaia",
    }
