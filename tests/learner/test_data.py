"""Data specs and the disjoint-stages check (l0_learner.data)."""

from __future__ import annotations

import json

import pytest

from l0_learner.data import DataSpec, check_disjoint, load_task_dicts, parse_data_spec


def test_parse_data_spec_slices_bundled_sets_and_files(tmp_path):
    assert parse_data_spec("hotpotqa-dev") == DataSpec("hotpotqa-dev")
    assert parse_data_spec("hotpotqa-dev[:300]") == DataSpec("hotpotqa-dev", None, 300)
    assert parse_data_spec("hotpotqa-dev[300:]") == DataSpec("hotpotqa-dev", 300, None)
    assert parse_data_spec("hotpotqa-dev[-5:]").start == -5
    f = tmp_path / "q.jsonl"
    f.write_text("")
    assert parse_data_spec(f"{f}[1:3]") == DataSpec(str(f), 1, 3)
    assert parse_data_spec(f"{f}[1:3]").name == "q[1:3]"
    odd = tmp_path / "odd[1:2].jsonl"  # a real file whose name looks like a slice is the file
    odd.write_text("")
    assert parse_data_spec(str(odd)) == DataSpec(str(odd))


@pytest.mark.parametrize("spec", ["", "hotpotqa-test", "missing.jsonl[:3]"])
def test_parse_data_spec_refuses_unknown_sources(spec):
    with pytest.raises(ValueError, match=r"data spec|empty"):
        parse_data_spec(spec)


def test_bundled_slices_partition_the_dev_set():
    head, tail = load_task_dicts("hotpotqa-dev[:300]"), load_task_dicts("hotpotqa-dev[300:]")
    everything = load_task_dicts("hotpotqa-dev")
    assert len(head) == 300 and len(head) + len(tail) == len(everything) == 1245
    assert [t["id"] for t in head + tail] == [t["id"] for t in everything]
    check_disjoint({"eval": head, "rl": tail, "sft": load_task_dicts("hotpotqa-train")})
    assert len(load_task_dicts("hotpotqa-dev[300:]", n=7)) == 7


def test_check_disjoint_finds_shared_ids_and_shared_questions(tmp_path):
    a = [{"id": "1", "question": "Who?"}, {"id": "2", "question": "Where is  Paris?"}]
    with pytest.raises(ValueError, match=r"'a' and 'b' .* 1 question"):
        check_disjoint({"a": a, "b": [{"id": "1", "question": "Other"}]})
    with pytest.raises(ValueError, match="overlap"):  # same question, another id and spacing
        check_disjoint({"a": a, "b": [{"id": "x", "question": "where is paris?"}]})
    check_disjoint({"a": a, "b": [{"id": "3", "question": "When?"}]})
    rows = [{"id": "q1", "question": "Q?", "answers": ["A"]}]
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_task_dicts(str(f))[0]["id"] == "q1"


def test_slug_names_files_without_brackets():
    assert parse_data_spec("hotpotqa-dev[:300]").slug == "hotpotqa-dev_0-300"
    assert parse_data_spec("hotpotqa-dev[300:]").slug == "hotpotqa-dev_300-end"
    assert parse_data_spec("hotpotqa-dev").slug == "hotpotqa-dev"


def test_task_dicts_keep_what_plays_and_scores_a_task() -> None:
    """A numeric task with a file (the bundled file tasks, GAIA's layout) keeps its answer type,
    tolerance and files through the learner's task dicts and back into a task."""
    from l0_env.tasks import FILE_TASKS_DIR, load_tasks, task_from_mapping
    from l0_learner.data import load_task_dicts

    dicts = {d["id"]: d for d in load_task_dicts(str(FILE_TASKS_DIR))}
    tasks = {t.id: t for t in load_tasks(FILE_TASKS_DIR)}
    assert dicts.keys() == tasks.keys()
    for task_id, task in tasks.items():
        again = task_from_mapping(dicts[task_id], default_id="x")
        assert again.files == task.files and again.numeric_tolerance == task.numeric_tolerance
    assert any(d.get("files") for d in dicts.values())
    assert any(d.get("answer_type") == "number" for d in dicts.values())
    assert "context" not in dicts[next(iter(dicts))]
