"""Tasks with attached files: the checks at load time, GAIA's layout, and copying for a sandbox.

The sandbox side (read-only files in the kernel, view_file) is in ``test_task_files_env.py``; the
attacks on these surfaces in ``security/test_file_attacks.py``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from l0_env.tasks import Task, load_tasks, task_from_mapping
from l0_env.tasks.files import (
    MAX_FILE_BYTES,
    MAX_FILES_PER_TASK,
    MAX_TASK_FILES_BYTES,
    check_file_name,
    resolve_task_files,
    stage_files,
)


def write(path: Path, text: str = "a,b\n1,2\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def gaia_dir(tmp_path: Path, rows: list[dict]) -> Path:
    root = tmp_path / "gaia"
    root.mkdir(exist_ok=True)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_in_memory_rows_attach_any_readable_file_as_absolute_paths(tmp_path, monkeypatch) -> None:
    data = write(tmp_path / "elsewhere" / "invoices.csv")
    monkeypatch.chdir(tmp_path)
    task = task_from_mapping(
        {"question": "Total?", "answers": ["3"], "files": ["elsewhere/invoices.csv"]}, default_id="t"
    )
    assert task.files == (str(data),)
    assert "files" not in task.metadata
    # One path, a numpy array (Parquet), and the task dict round trip (the learner passes dicts).
    assert task_from_mapping({"question": "Q?", "answer": "a", "files": str(data)}, default_id="t").files
    arr = np.array([str(data)])
    assert task_from_mapping({"question": "Q?", "answer": "a", "files": arr}, default_id="t").files
    again = task_from_mapping(
        {"question": "Q?", "answers": ["a"], "files": list(task.files)}, default_id="t", base_dir="/nowhere"
    )
    assert again.files == task.files


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["missing.csv"], "not found"),
        ([""], "non-empty paths"),
        ([3], "non-empty paths"),
        ({"a": 1}, "a path or a list"),
        (["sub"], "not a regular file"),
        (["a/x.csv", "b/x.csv"], "unique"),
        (["a/.hidden"], "hidden"),
        (["bad\nname.csv"], "control"),
        (["x\x00y"], "NUL"),
    ],
)
def test_bad_files_are_refused_at_load_with_the_reason(tmp_path, files, message) -> None:
    write(tmp_path / "a" / "x.csv")
    write(tmp_path / "b" / "x.csv")
    write(tmp_path / "a" / ".hidden")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match=message):
        resolve_task_files(files, base_dir=tmp_path)


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x", "a/b", "a\\b", ".env", "tab\there", "\u202ertl", "x" * 256]
)
def test_file_names_the_agent_would_see_must_be_plain(name) -> None:
    with pytest.raises(ValueError):
        check_file_name(name)


def test_plain_names_pass() -> None:
    for name in ("invoices.csv", "Q3 report (final).pdf", "données.xlsx", "32102e3e-d12a.xlsx"):
        assert check_file_name(name) == name


def test_size_and_count_caps(tmp_path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ValueError, match="MiB"):
        resolve_task_files([big])
    halves = []
    for i in range(3):
        p = tmp_path / f"part{i}.bin"
        with open(p, "wb") as f:
            f.truncate(MAX_TASK_FILES_BYTES // 3 + 1)
        halves.append(p)
    with pytest.raises(ValueError, match="per task"):
        resolve_task_files(halves)
    many = [write(tmp_path / f"f{i}.txt", "x") for i in range(MAX_FILES_PER_TASK + 1)]
    with pytest.raises(ValueError, match="at most"):
        resolve_task_files(many)


def test_a_task_file_attaches_only_files_inside_its_directory(tmp_path) -> None:
    outside = write(tmp_path / "secret.txt", "s3cret")
    data = tmp_path / "data"
    write(data / "ok.csv")
    (data / "link.txt").symlink_to(outside)
    rows = [
        {"id": "ok", "question": "Q?", "answer": "a", "files": ["ok.csv"]},
    ]
    (data / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [task] = load_tasks(data / "tasks.jsonl")
    assert task.files == (str(data / "ok.csv"),)
    for bad in ("../secret.txt", str(outside), "link.txt", "/etc/passwd"):
        (data / "bad.jsonl").write_text(json.dumps({"question": "Q?", "answer": "a", "files": [bad]}) + "\n")
        with pytest.raises(ValueError, match="outside the task file's directory") as err:
            load_tasks(data / "bad.jsonl")
        assert "bad.jsonl:1" in str(err.value)


def test_gaia_layout_from_the_directory_or_its_metadata(tmp_path) -> None:
    root = gaia_dir(
        tmp_path,
        [
            {"task_id": "t1", "Question": "Sum?", "Level": 1, "Final answer": "1,234", "file_name": "x.csv"},
            {"task_id": "t2", "Question": "Who?", "Level": 2, "Final answer": "Ada", "file_name": ""},
            {
                "task_id": "t3",
                "Question": "How many?",
                "Level": 1,
                "Final answer": 7,
                "file_name": "y.txt",
                "Annotator Metadata": {"Steps": "count"},
            },
        ],
    )
    write(root / "x.csv")
    write(root / "y.txt", "x")
    tasks = load_tasks(root)
    assert [t.id for t in tasks] == ["t1", "t2", "t3"]
    t1, t2, t3 = tasks
    assert t1.question == "Sum?" and t1.answers == ("1,234",) and t1.files == (str(root / "x.csv"),)
    assert t1.metadata["answer_type"] == "number" and t1.metadata["Level"] == 1
    assert t1.numeric_tolerance is not None
    assert t2.files == () and "answer_type" not in t2.metadata and t2.numeric_tolerance is None
    assert t3.answers == ("7",) and t3.metadata["Annotator Metadata"] == {"Steps": "count"}
    assert load_tasks(root / "metadata.jsonl") == tasks


def test_gaia_refusals_say_why(tmp_path) -> None:
    root = gaia_dir(tmp_path, [{"task_id": "t", "Question": "Q?", "Final answer": "?", "file_name": ""}])
    with pytest.raises(ValueError, match="test split hides its answers"):
        load_tasks(root)
    root = gaia_dir(
        tmp_path, [{"task_id": "t", "Question": "Q?", "Final answer": "x", "file_name": "../../etc/passwd"}]
    )
    with pytest.raises(ValueError, match="outside the task file's directory"):
        load_tasks(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"metadata\.jsonl"):
        load_tasks(tmp_path / "empty")


def test_task_files_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Task("t", "Q?", ("a",), files=("rel.csv",))


def test_stage_copies_read_only_under_the_file_names(tmp_path) -> None:
    src = write(tmp_path / "src" / "invoices.csv", "amount\n1\n2\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    [staged] = stage_files([str(src)], dest)
    assert (staged.name, staged.size) == ("invoices.csv", src.stat().st_size)
    copy = dest / "invoices.csv"
    assert copy.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o444
    with pytest.raises(FileExistsError):  # never over an existing name
        stage_files([str(src)], dest)


def test_stage_refuses_what_changed_since_load(tmp_path) -> None:
    src = write(tmp_path / "grow.bin", "x")
    [path] = resolve_task_files([src])
    with open(src, "r+b") as f:  # sparse growth past the cap after the check
        f.truncate(MAX_FILE_BYTES + 1)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match="grew past the cap"):
        stage_files([path], dest)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        stage_files([str(fifo)], dest)
    gone = write(tmp_path / "gone.csv")
    [gone_path] = resolve_task_files([gone])
    gone.unlink()
    with pytest.raises(ValueError, match="cannot be opened"):
        stage_files([gone_path], dest)
