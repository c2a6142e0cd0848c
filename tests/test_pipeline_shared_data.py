"""End to end over the real shared QA files: train-like sources in, the evaluation sets (HotpotQA
dev, MuSiQue dev, Bamboogle, SimpleQA) excluded, plus rows that repeat evaluation questions
verbatim or with one word changed, which must all be dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l0_env.pipeline import build, parse_input, question_key
from l0_env.tasks import load_tasks

SHARED_QA = Path("/work/shared/data/qa")
TRAIN = {
    "nq": "nq/test_1000.jsonl",
    "triviaqa": "triviaqa/test_1000.jsonl",
    "popqa": "popqa/test_1000.jsonl",
    "2wiki": "2wikimultihopqa/dev_first1000.jsonl",
    "hotpotqa_train": "hotpotqa/train_distractor_100.jsonl",
    "musique_train": "musique/train_with_context_100.jsonl",
}
EVAL = {
    "hotpotqa_dev500": "hotpotqa/dev_distractor_500.jsonl",
    "hotpotqa_dev300": "hotpotqa/dev_distractor_extra_300.jsonl",
    "hotpotqa_ircot": "hotpotqa/dev_distractor_ircot_500.jsonl",
    "musique_dev": "musique/dev_answers_1000.jsonl",
    "bamboogle": "bamboogle/test.jsonl",
    "simpleqa": "simpleqa/test.jsonl",
}

pytestmark = pytest.mark.skipif(
    not all((SHARED_QA / p).is_file() for p in [*TRAIN.values(), *EVAL.values()]),
    reason=f"the shared QA files are not at {SHARED_QA} (see its SOURCES.md)",
)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_shared_files_build_into_a_decontaminated_training_file(tmp_path: Path) -> None:
    evals = {name: read(SHARED_QA / p) for name, p in EVAL.items()}
    # Contamination to catch: eval questions verbatim (shouted), and with one word changed.
    long_ones = [(n, r["question"]) for n in ("hotpotqa_dev500", "simpleqa") for r in evals[n][:200]]
    long_ones = [(n, q) for n, q in long_ones if len(q.split()) >= 12][:6]
    assert len(long_ones) == 6
    leaked = []
    for i, (name, q) in enumerate(long_ones):
        if i % 2 == 0:
            leaked.append(
                {"id": f"exact{i}", "question": q.upper(), "answers": ["x"], "want": ("eval_exact", name)}
            )
        else:
            words = q.split()
            words[len(words) // 2] = "zzyzx"
            leaked.append(
                {"id": f"near{i}", "question": " ".join(words), "answers": ["x"], "want": ("eval_near", name)}
            )
    leak_file = tmp_path / "leaked.jsonl"
    leak_file.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "want"}) + "\n" for r in leaked)
    )

    out = tmp_path / "train.parquet"
    result = build(
        [parse_input(f"{SHARED_QA / p}:{name}") for name, p in TRAIN.items()]
        + [parse_input(f"{leak_file}:leaked")],
        out,
        excludes=[parse_input(f"{SHARED_QA / p}:{name}") for name, p in EVAL.items()],
    )
    report = result.report.to_dict()
    stages = {s["stage"]: s for s in report["stages"]}

    # Every row of every input was read; the leaked rows all went, each for the right reason.
    for name, p in TRAIN.items():
        assert stages["read"]["per_source"][name]["in"] == len(read(SHARED_QA / p))
    assert stages["decontaminate"]["per_source"]["leaked"] == {
        "in": 6,
        "kept": 0,
        "dropped": {"eval_exact": 3, "eval_near": 3},
    }
    found = {
        e["question"]: (reason, e["eval_source"])
        for reason, ex in stages["decontaminate"]["examples"].items()
        for e in ex
    }
    for r in leaked:
        assert found[r["question"]] == r["want"], r["question"]

    # The output: loadable by the env, unique ids, no question that repeats an evaluation one.
    tasks = load_tasks(out)
    assert len(tasks) == result.rows == stages["decontaminate"]["kept"]
    eval_keys = {question_key(r["question"]) for rows in evals.values() for r in rows}
    train_keys = [question_key(t.question) for t in tasks]
    assert not eval_keys & set(train_keys)
    assert len(set(train_keys)) == len(train_keys)  # de-duplicated
    assert {t.metadata["source"] for t in tasks} == set(TRAIN)
    assert report["excludes"][-1] == {
        "name": "simpleqa",
        "origin": str(SHARED_QA / EVAL["simpleqa"]),
        "layout": "ours",
        "questions": 4326,
    }
    # The bookkeeping adds up.
    previous = None
    for s in report["stages"]:
        assert s["in"] == s["kept"] + sum(s["dropped"].values())
        assert previous is None or s["in"] == previous["kept"]
        previous = s
    assert sum(report["output"]["per_source"].values()) == len(tasks)
