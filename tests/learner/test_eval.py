"""Evaluation on data that does not ship with the package, several samples, paired comparisons."""

from __future__ import annotations

import json

import pytest

from l0_learner import eval as eval_cli
from l0_learner.backends import Generation
from l0_learner.eval import EvalArgs, compare_predictions, evaluate, read_predictions

# Made-up facts that no bundled passage holds: only the given corpus can answer them.
CORPUS = [
    {
        "id": "d1",
        "contents": '"Zorvath Quill"\nZorvath Quill is the lighthouse keeper of the island of Brennock.',
    },
    {"id": "d2", "contents": '"Miravel Stone"\nMiravel Stone is the oldest bridge over the river Tallow.'},
    {
        "id": "d3",
        "contents": '"Opheric Dunmore"\nOpheric Dunmore composed the anthem of the town of Kelbridge.',
    },
]
TASKS = [
    {"id": "q1", "question": "Who is the lighthouse keeper of Brennock?", "answers": ["Zorvath Quill"]},
    {
        "id": "q2",
        "question": "What is the oldest bridge over the river Tallow?",
        "answers": ["Miravel Stone"],
    },
    {"id": "q3", "question": "Who composed the anthem of Kelbridge?", "answers": ["Opheric Dunmore"]},
    {"id": "q4", "question": "Who keeps the Brennock lighthouse?", "answers": ["Zorvath Quill"]},
]


@pytest.fixture
def qa_files(tmp_path):
    corpus, tasks = tmp_path / "corpus.jsonl", tmp_path / "tasks.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    tasks.write_text("".join(json.dumps(r) + "\n" for r in TASKS))
    return tasks, corpus


class SearchAndAnswer:
    """A scripted backend: search the question, answer with the top hit's title."""

    def generate(self, conversations):
        out = []
        for conv in conversations:
            question = conv[1]["content"].split("\n")[0].removeprefix("Question: ")
            code = f"hits = web_search({question!r}, k=1)\nsubmit_final_answer(hits[0]['title'])"
            out.append(
                Generation(text=f"<think>Search, then answer with the top title.</think><code>{code}</code>")
            )
        return out


def test_a_task_file_and_a_search_r1_corpus_that_do_not_ship_are_scored(qa_files):
    tasks, corpus = qa_files
    rows = eval_cli.load_eval_tasks(str(tasks))
    summary, episodes = evaluate(
        SearchAndAnswer(), rows, max_steps=2, samples=2, num_envs=4, env_kwargs={"corpus": str(corpus)}
    )
    assert summary["n"] == 4 and summary["samples"] == 2 and len(episodes) == 8
    assert summary["em"] == 1.0, "every answer is only in the given corpus: it was searched"
    assert summary["em_low"] > 0.3 and summary["em_high"] == 1.0


def test_eval_cli_with_samples_top_p_and_a_comparison(tiny_path, qa_files, tmp_path, capsys):
    tasks, corpus = qa_files
    out = tmp_path / "eval"
    argv = ["--model", tiny_path, "--data", str(tasks), "--corpus", str(corpus), "--n", "4", "--samples", "3"]
    argv += ["--top-p", "0.9", "--max-steps", "1", "--max-new-tokens", "8", "--output-dir", str(out)]
    argv += ["--device", "cpu", "--num-envs", "4"]
    (row,) = eval_cli.main(argv)
    assert row["n"] == 4 and row["samples"] == 3
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["top_p"] == 0.9 and saved["args"]["temperature"] == 1.0  # sampling implied
    predictions = read_predictions(out / "predictions-tasks.jsonl")
    assert [p["id"] for p in predictions] == ["q1", "q2", "q3", "q4"]
    assert all(len(p["predictions"]) == 3 and p["samples"] == 3 for p in predictions)
    (second,) = eval_cli.main([*argv, "--compare-to", str(out / "predictions-tasks.jsonl")])
    assert second["comparison"]["n"] == 4
    assert "McNemar" in capsys.readouterr().out


def test_protocol_defaults_and_bad_arguments():
    l0 = EvalArgs(protocol="l0").resolved()
    assert (l0.samples, l0.top_p, l0.temperature, l0.max_steps) == (3, 0.9, 1.0, 10)
    greedy = EvalArgs().resolved()
    assert (greedy.samples, greedy.top_p, greedy.temperature, greedy.max_steps) == (1, 1.0, 0.0, 3)
    assert EvalArgs(protocol="l0", samples=5).resolved().samples == 5  # a flag beats the protocol
    with pytest.raises(ValueError, match="greedy"):
        EvalArgs(samples=3, temperature=0.0).resolved()
    with pytest.raises(ValueError, match="top-p"):
        EvalArgs(top_p=0.0).resolved()


def test_compare_predictions_pairs_by_id_and_reads_files_strictly(tmp_path):
    before = [{"id": str(i), "em": 0.0, "f1": 0.1} for i in range(12)]
    after = [{"id": str(i), "em": 1.0 if i < 10 else 0.0, "f1": 0.5} for i in reversed(range(12))]
    r = compare_predictions(before, [*after, {"id": "new", "em": 1.0, "f1": 1.0}])
    assert r.n == 12 and (r.wrong_to_right, r.right_to_wrong) == (10, 0)
    assert r.mcnemar_p == pytest.approx(2 / 2**10)
    with pytest.raises(ValueError, match="share no question"):
        compare_predictions(before, [{"id": "x", "em": 1, "f1": 1}])
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "1", "em": 1, "f1": 1}\n{"id": "2"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: .*'id', 'em' and 'f1'"):
        read_predictions(bad)
