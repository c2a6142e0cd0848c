"""Task loading: bundled HotpotQA, files (JSONL, gz, Parquet), in-memory rows, bad input."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l0_env.tasks import Task, load_tasks, task_from_mapping
from l0_env.tools.search import bundled_corpus_path, iter_passages

REPO = Path(__file__).resolve().parents[1]
SHARED_QA = Path("/work/shared/data/qa")
SHARED_FILES = sorted(SHARED_QA.glob("*/*.jsonl")) if SHARED_QA.is_dir() else []


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bundled_dev_and_train() -> None:
    dev = load_tasks()
    train = load_tasks(split="train")
    assert len(dev) == 1245
    assert len(train) == 100
    assert not {t.id for t in dev} & {t.id for t in train}
    titles = {p.title for p in iter_passages(bundled_corpus_path())}
    for task in dev + train:
        assert task.answers and all(a.strip() for a in task.answers)
        assert task.supporting_titles, task.id
        assert set(task.supporting_titles) <= titles, task.id
        assert task.metadata["source_file"].startswith("hotpotqa/")
    assert [t.id for t in dev] == sorted(t.id for t in dev)


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_tasks(split="test")


def test_jsonl_gz_parquet_and_rows_agree(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "question": "Q1?", "answers": ["x", "y"], "supporting_titles": ["T"], "level": "easy"},
        {"question": "Q2?", "answer": "z"},
        {"id": "c", "question": "Q3?", "golden_answers": ["w"]},
    ]
    plain = write_jsonl(tmp_path / "t.jsonl", rows)
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    parquet = tmp_path / "t.parquet"
    keys = sorted({k for r in rows for k in r})
    pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in keys}), parquet)
    expected = [
        Task("a", "Q1?", ("x", "y"), ("T",), {"level": "easy"}),
        Task("task-1", "Q2?", ("z",)),
        Task("c", "Q3?", ("w",)),
    ]
    assert load_tasks(rows) == expected
    assert load_tasks(plain) == expected
    assert load_tasks(str(gz)) == expected
    assert load_tasks(parquet) == expected  # nulls for the keys a row lacks are ignored


def test_task_is_picklable_hashable_and_normalised() -> None:
    task = task_from_mapping({"question": "Q?", "answers": ["a"], "extra": [1]}, default_id="d")
    assert task.id == "d" and task.metadata == {"extra": [1]}
    assert pickle.loads(pickle.dumps(task)) == task
    hash(task)
    assert Task("x", "Q?", "single").answers == ("single",)
    with pytest.raises(ValueError, match="answers"):
        Task("x", "Q?", ())


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answers": ["a"]}, "question"),
        ({"question": "  ", "answers": ["a"]}, "question"),
        ({"question": "Q?"}, "no gold answer"),
        ({"question": "Q?", "answers": []}, "'answers' is empty"),
        ({"question": "Q?", "answers": [""]}, "empty string"),
        ({"question": "Q?", "answers": [{"text": "a"}]}, "holds a dict"),
        ({"question": "Q?", "answers": 3.5j}, "must be a string or a list"),
        (["question", "answers"], "expected a mapping"),
    ],
)
def test_bad_rows_name_the_row(row: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_tasks([{"question": "fine", "answers": ["ok"]}, row])
    assert str(info.value).startswith("row 1: ")


def test_bad_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "Q?", "answers": ["a"]}\n\n{"question": "Q2?", "answers": [\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: invalid JSON"):
        load_tasks(path)
    write_jsonl(path, [{"question": "Q?", "answers": ["a"]}, {"question": "Q?", "answers": []}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: 'answers' is empty"):
        load_tasks(path)
    write_jsonl(
        path, [{"id": 1, "question": "Q?", "answers": ["a"]}, {"id": 1, "question": "R?", "answer": "b"}]
    )
    with pytest.raises(ValueError, match="duplicate task id '1'"):
        load_tasks(path)


def test_truncated_or_corrupt_files_name_the_file(tmp_path: Path) -> None:
    """A cut .gz used to raise a bare EOFError; bad bytes a UnicodeDecodeError: neither named the file."""
    rows = [{"question": f"Q{i}?", "answer": "a"} for i in range(3000)]
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        ValueError, match=r"cut\.jsonl\.gz: the file ends early \(truncated\?\), near line \d+"
    ):
        load_tasks(cut)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_bytes(b'{"question": "Q?", "answer": "a"}\n')
    with pytest.raises(ValueError, match=r"plain\.jsonl\.gz: the file cannot be read"):
        load_tasks(not_gzip)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"question": "Café?", "answer": "a"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl: the file cannot be read"):
        load_tasks(latin1)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"broken\.parquet: not a readable Parquet file"):
        load_tasks(broken)


def test_bad_paths(tmp_path: Path) -> None:
    csv = tmp_path / "tasks.csv"
    csv.write_text("question,answer\nQ?,a\n")
    with pytest.raises(ValueError, match=r"tasks\.csv: unknown task file extension"):
        load_tasks(csv)
    with pytest.raises(FileNotFoundError):
        load_tasks(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="single mapping"):
        load_tasks({"question": "Q?", "answers": ["a"]})  # type: ignore[arg-type]


@pytest.mark.skipif(not SHARED_FILES, reason="shared QA data (/work/shared/data/qa) not present")
@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shared_qa_files_load(path: Path) -> None:
    tasks = load_tasks(path)
    n_lines = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    assert len(tasks) == n_lines
    assert len({t.id for t in tasks}) == len(tasks)


@pytest.mark.skipif(not (SHARED_QA / "hotpotqa").is_dir(), reason="shared HotpotQA data not present")
def test_build_script_reproduces_bundled_bytes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_bundled_data.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("hotpotqa_dev.jsonl.gz", "hotpotqa_train.jsonl.gz", "hotpotqa_passages.jsonl.gz"):
        assert (tmp_path / name).read_bytes() == (REPO / "l0_env" / "data" / name).read_bytes(), (
            f"{name} differs from a fresh build: rerun scripts/build_bundled_data.py and commit the output"
        )
