"""The QA evaluation suite: named datasets, the pooled corpus, the per-dataset table, LJ, L0's scoring.

The end-to-end test drives ``python -m l0_learner.eval`` (its ``main``) with the openai backend
against a scripted OpenAI-compatible server on 127.0.0.1 that plays the policy (search the gold
paragraph's title, answer when the search shows it) and the judge (SimpleQA grader: A when the
prediction is the gold). Episodes run in the real sandboxed notebook env; search is the real
embedded BM25 over the pooled HotpotQA/MuSiQue paragraphs of real (sampled) data.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import ClassVar

import pytest

from l0_env.tasks.layouts import iter_rows
from l0_learner import eval as eval_cli
from l0_learner.data import (
    QA_DIR_ENV,
    DataSpec,
    load_task_dicts,
    parse_data_spec,
    pooled_corpus_files,
    write_pooled_corpus,
)
from l0_learner.eval import EvalArgs, judge_questions, question_scores, suite_table, summarize
from l0_learner.rollout import Episode, Job, StepSample
from l0_learner.stats import wilson_interval
from tests.llm_servers.scripted_openai import RecordedRequest, Reply, ScriptedOpenAIServer

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "qa"


@pytest.fixture
def qa_dir(tmp_path, monkeypatch):
    """A QA data directory laid out as the official releases name their files, holding the bundled
    samples: HotpotQA's JSON list, MuSiQue's JSONL, Bamboogle's CSV."""
    monkeypatch.delenv(QA_DIR_ENV, raising=False)
    root = tmp_path / "qa"
    for src, dst in (
        ("hotpotqa/hotpot_dev_distractor_sample.json", "hotpotqa/hotpot_dev_distractor_v1.json"),
        ("musique/musique_ans_train_sample.jsonl", "musique/musique_ans_v1.0_train.jsonl"),
        ("bamboogle/bamboogle_sample.csv", "bamboogle/test.csv"),
    ):
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / src, root / dst)
    return root


# -- named sets and the QA directory --------------------------------------------------------------


def test_named_sets_resolve_in_the_qa_dir_with_slices(qa_dir, monkeypatch):
    spec = parse_data_spec("musique-train[1:3]", qa_dir=qa_dir)
    assert spec == DataSpec(str(qa_dir / "musique/musique_ans_v1.0_train.jsonl"), 1, 3)
    assert (spec.name, spec.slug) == ("musique-train[1:3]", "musique-train_1-3")
    tasks = load_task_dicts(spec)
    assert [t["id"] for t in tasks] == [
        r["id"] for r in iter_rows(SAMPLES / "musique/musique_ans_train_sample.jsonl")
    ][1:3]
    assert tasks[0]["answers"] and tasks[0]["supporting_titles"]
    monkeypatch.setenv(QA_DIR_ENV, str(qa_dir))  # the default directory
    assert parse_data_spec("hotpotqa").source == str(qa_dir / "hotpotqa/hotpot_dev_distractor_v1.json")
    hotpot = load_task_dicts("hotpotqa[:2]")
    assert [t["answers"] for t in hotpot] == [["Denise Levertov"], ["yes"]]
    bamboogle = load_task_dicts("bamboogle")
    assert [t["id"] for t in bamboogle][:2] == ["bamboogle_0", "bamboogle_1"]


def test_missing_sets_say_what_was_looked_for(qa_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"'simpleqa' needs a QA data directory: pass --qa-dir .*simple_qa_test_set\.csv"
    ):
        parse_data_spec("simpleqa[:10]")
    with pytest.raises(ValueError, match=r"'nq': none of nq/test_1000\.jsonl, nq/test\.jsonl.* exists under"):
        parse_data_spec("nq", qa_dir=qa_dir)
    with pytest.raises(ValueError, match=r"does not exist"):
        parse_data_spec("nq", qa_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"a named QA set \(hotpotqa, musique"):
        parse_data_spec("hotpot")
    fallback = parse_data_spec("hotpotqa[:5]")  # no directory: the bundled sample stands in
    assert fallback.source == "hotpotqa-dev" and fallback.name == "hotpotqa[:5]"
    assert fallback.note and "bundled HotpotQA dev sample" in fallback.note
    assert len(load_task_dicts(fallback)) == 5


def test_the_pooled_corpus_dedupes_and_is_cached(qa_dir):
    # The same HotpotQA rows twice (the original layout and our JSONL): every paragraph repeats.
    rows = list(iter_rows(qa_dir / "hotpotqa/hotpot_dev_distractor_v1.json"))
    (qa_dir / "hotpotqa/copy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = pooled_corpus_files(qa_dir)
    assert [f.name for f in files] == [
        "copy.jsonl",
        "hotpot_dev_distractor_v1.json",
        "musique_ans_v1.0_train.jsonl",
    ]
    pooled = write_pooled_corpus(files, qa_dir.parent / "cache")
    hotpot = sum(len(r["context"]) for r in rows)
    musique = [r for r in iter_rows(qa_dir / "musique/musique_ans_v1.0_train.jsonl")]
    distinct_musique = len({(p["title"], p["text"]) for r in musique for p in r["context"]})
    assert pooled.paragraphs_per_file[str(files[0])] == hotpot == 50
    assert pooled.passages == hotpot + distinct_musique
    assert pooled.duplicates == hotpot + sum(len(r["context"]) for r in musique) - distinct_musique
    lines = [json.loads(line) for line in Path(pooled.path).read_text().splitlines()]
    assert len(lines) == pooled.passages and set(lines[0]) == {"id", "title", "text"}
    assert len({p["id"] for p in lines}) == len(lines)
    mtime = Path(pooled.path).stat().st_mtime_ns
    assert write_pooled_corpus(files, qa_dir.parent / "cache") == pooled, "unchanged inputs: reused"
    assert Path(pooled.path).stat().st_mtime_ns == mtime
    (qa_dir / "hotpotqa/copy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:1]))
    assert write_pooled_corpus(files, qa_dir.parent / "cache").path != pooled.path, "a changed input: rebuilt"
    with pytest.raises(ValueError, match="no HotpotQA or MuSiQue files"):
        pooled_corpus_files(qa_dir / "bamboogle")


# -- scoring, LJ and the table (pure: hand-built episodes) ----------------------------------------


def episode(
    group: int, task: dict, answer: str | None, formats: list[float], calls: dict, env_em: float
) -> Episode:
    steps = [
        StepSample([], [], [], "", {"format": f, "code": 1.0, "qa": None}, cell_status="ok" if f else None)
        for f in formats
    ]
    steps[-1].components.update(em=env_em, f1=env_em, has_answer=float(bool(answer and answer.strip())))
    return Episode(Job(group, group, group), task, steps, {"tool_calls": calls}, answer=answer)


def test_scores_intervals_and_l0_normalisation():
    china = {"id": "q0", "question": "What is Beijing the capital of?", "answers": ["China", "🇨🇳"]}
    spirit = {"id": "q1", "question": "If Gallu is a demon Lilu is what?", "answers": ["a spirit"]}
    eps = [
        episode(0, china, "", [1.0, 1.0], {"web_search": 1, "submit_final_answer": 1}, 0.0),
        episode(1, spirit, "spirit", [0.0, 1.0, 1.0], {"web_search": 3, "submit_final_answer": 1}, 1.0),
        episode(2, spirit, None, [0.0], {}, 0.0),
    ]
    squad = question_scores(eps)
    assert [r["em"] for r in squad] == [0.0, 1.0, 0.0], "the env's scores"
    l0 = question_scores(eps, normalization="l0")
    assert [r["em"] for r in l0] == [1.0, 0.0, 0.0], "L0: '' matches the flag alias; articles kept"
    assert [r["has_answer"] for r in l0] == [1.0, 1.0, 0.0], "L0: an empty string is an answer"
    assert [r["tool_calls"] for r in squad] == [2.0, 4.0, 0.0] and squad[1]["well_formed"] == pytest.approx(
        2 / 3
    )
    s = summarize(eps, rows=squad)
    assert s["n"] == 3 and s["em"] == pytest.approx(1 / 3)
    assert (s["em_low"], s["em_high"]) == pytest.approx(wilson_interval(1, 3))
    assert s["well_formed_rate"] == pytest.approx(4 / 6), "steps pooled over questions"
    assert s["well_formed_rate_low"] <= s["well_formed_rate"] <= s["well_formed_rate_high"]
    assert s["steps_per_episode"] == pytest.approx(2.0) and s["tool_calls"] == pytest.approx(2.0)
    assert s["tool_calls_low"] < 2.0 < s["tool_calls_high"]
    assert "lj" not in s


class FakeJudge:
    """The LLMJudge shape: grade_many((question, golds, prediction)) -> verdicts with grade/score."""

    class Verdict:
        def __init__(self, grade):
            self.grade, self.score = grade, float(grade == "correct")

    def __init__(self):
        self.items = []

    def grade_many(self, items):
        self.items += list(items)
        out = []
        for _, golds, pred in items:
            if pred is None or not pred.strip():
                out.append(self.Verdict("not_attempted"))
            elif pred == "garbled":
                out.append(self.Verdict(None))  # the judge failed: no grade
            else:
                out.append(
                    self.Verdict("correct" if pred.lower() in (g.lower() for g in golds) else "incorrect")
                )
        return out


def test_lj_from_a_judge_leaves_failed_gradings_out():
    task = {"id": "q", "question": "Q?", "answers": ["Paris"]}
    eps = [
        episode(0, task, "paris", [1.0], {}, 1.0),
        episode(0, task, "garbled", [1.0], {}, 0.0),
        episode(1, {**task, "id": "r"}, "Lyon", [1.0], {}, 0.0),
        episode(2, {**task, "id": "s"}, "garbled", [1.0], {}, 0.0),
    ]
    rows = question_scores(eps)
    judge = FakeJudge()
    counts = judge_questions(rows, judge)
    assert judge.items[0] == ("Q?", ["Paris"], "paris") and len(judge.items) == 4
    assert counts == {"correct": 1, "incorrect": 1, "not_attempted": 0, "failed": 2}
    assert [r["lj"] for r in rows] == [1.0, 0.0, None], "q: one graded sample of two; s: none graded"
    s = summarize(eps, rows=rows)
    assert (
        s["lj_n"] == 2
        and s["lj"] == 0.5
        and (s["lj_low"], s["lj_high"]) == pytest.approx(wilson_interval(1, 2))
    )
    table = suite_table([{"dataset": "toy", **s}])
    assert "| toy | 3 | 16.7 [" in table and "| 50.0 [" in table
    no_lj = suite_table([{"dataset": "toy", **summarize(eps)}])
    assert no_lj.splitlines()[2].split("|")[5].strip() == "–", "no judge: no LJ"


def test_eval_args_refuse_half_a_judge_and_pooled_with_a_server():
    with pytest.raises(ValueError, match="both --judge-url and --judge-model"):
        EvalArgs(judge_url="http://127.0.0.1:1/v1").resolved()
    with pytest.raises(ValueError, match="--corpus pooled is for the embedded BM25"):
        EvalArgs(corpus="pooled", search="http://127.0.0.1:1").resolved()
    judge = eval_cli.make_judge(
        EvalArgs(judge_url="http://127.0.0.1:9/v1", judge_model="j", output_dir="/tmp/x")
    )
    assert type(judge).__name__ == "LLMJudge" and judge.model == "j"
    judge.close()


# -- the suite end to end: the CLI, a scripted server, the real env and search --------------------


class Scripted:
    """Policy (model 'scripted') and judge (model 'judge') answering the requests of one
    :class:`ScriptedOpenAIServer` (its callable behaviour)."""

    tasks: ClassVar[dict[str, dict]] = {}
    judged: ClassVar[list[tuple[str, str]]] = []

    @staticmethod
    def answer(request: RecordedRequest) -> Reply:
        body = request.json
        messages = body["messages"]
        if body["model"] == "judge":
            prompt = messages[-1]["content"]
            gold = re.findall(r"^Gold target: (.*)$", prompt, re.M)[-1]
            pred = re.findall(r"^Predicted answer: (.*)$", prompt, re.M)[-1]
            Scripted.judged.append((gold, pred))
            return Reply("A" if gold.lower() == pred.lower() else "B")
        return Reply(Scripted.policy(messages))

    @staticmethod
    def policy(messages: list[dict]) -> str:
        question = messages[1]["content"].split("\n")[0].removeprefix("Question: ")
        task = Scripted.tasks[question]
        step = sum(m["role"] == "assistant" for m in messages)
        if not task["supporting_titles"]:  # no paragraphs to find: a malformed step, then an empty answer
            return (
                "I am not sure how to answer."
                if step == 0
                else '<think>I cannot find it, so I give up.</think><code>submit_final_answer("")'
            )
        title = task["supporting_titles"][0]
        if step == 0:
            code = f"hits = web_search({title!r}, k=5)\nprint([h['title'] for h in hits])"
            return f"<think>Find the gold paragraph.</think><code>{code}"
        answer = task["answers"][0] if repr(title) in messages[-1]["content"] else "not found"
        return f"<think>The search shows the answer.</think><code>submit_final_answer({answer!r})"


@pytest.fixture
def scripted_server():
    with ScriptedOpenAIServer(default=Scripted.answer) as server:
        yield server.base_url


def test_the_suite_end_to_end_offline(qa_dir, scripted_server, tmp_path):
    from l0_env.tools.search import bundled_corpus_path, iter_passages

    for spec in ("hotpotqa", "musique-train", "bamboogle"):
        for t in load_task_dicts(parse_data_spec(spec, qa_dir=qa_dir)):
            Scripted.tasks[t["question"]] = t
    musique = load_task_dicts(parse_data_spec("musique-train[:3]", qa_dir=qa_dir))
    bundled_titles = {p.title for p in iter_passages(bundled_corpus_path())}
    assert any(t["supporting_titles"][0] not in bundled_titles for t in musique), (
        "the default corpus lacks these MuSiQue paragraphs: only the pooled one can answer them"
    )
    Scripted.judged.clear()
    out = tmp_path / "suite"
    argv = [
        "--backend",
        "openai",
        "--base-url",
        scripted_server,
        "--model",
        "scripted",
        "--qa-dir",
        str(qa_dir),
    ]
    argv += [
        "--data",
        "hotpotqa",
        "musique-train[:3]",
        "bamboogle[:2]",
        "--corpus",
        "pooled",
        "--max-steps",
        "3",
    ]
    argv += [
        "--num-envs",
        "4",
        "--output-dir",
        str(out),
        "--judge-url",
        scripted_server,
        "--judge-model",
        "judge",
    ]
    hotpot, mus, bam = eval_cli.main(argv)

    for row, n in ((hotpot, 5), (mus, 3)):
        assert row["n"] == n and row["em"] == 1.0 and row["f1"] == 1.0 and row["has_answer"] == 1.0, row
        assert row["lj"] == 1.0 and row["lj_n"] == n and row["judge_verdicts"]["correct"] == n
        assert row["well_formed_rate"] == 1.0 and row["steps_per_episode"] == 2.0 and row["tool_calls"] == 2.0
        assert row["gold_in_corpus"] == 1.0
    assert (bam["n"], bam["em"], bam["has_answer"], bam["well_formed_rate"], bam["tool_calls"]) == (
        2,
        0.0,
        0.0,
        0.5,
        1.0,
    )
    assert bam["lj"] == 0.0 and bam["judge_verdicts"]["not_attempted"] == 2, (
        "an empty answer is not attempted"
    )
    assert bam["gold_in_corpus"] is None
    assert len(Scripted.judged) == 8, "the judge server saw the 8 answers; empty ones never reach it"
    assert ("Denise Levertov", "Denise Levertov") in Scripted.judged
    assert len((out / "judge-cache.jsonl").read_text().splitlines()) == 8, "verdicts cached in the output dir"

    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["search"]["kind"] == "pooled" and saved["config"]["search"]["passages"] > 100
    assert saved["config"]["judge"] == {"url": scripted_server, "model": "judge"}
    assert [r["dataset"] for r in saved["results"]] == ["hotpotqa", "musique-train[:3]", "bamboogle[:2]"]
    assert saved["results"][0]["file"] == str(qa_dir / "hotpotqa/hotpot_dev_distractor_v1.json")
    table = (out / "results.md").read_text()
    assert "| hotpotqa | 5 | 100.0 [" in table and "| bamboogle[:2] | 2 | 0.0 [" in table
    assert "bamboogle[:2]: ships no passages" in table
    predictions = [
        json.loads(line) for line in (out / "predictions-musique-train_0-3.jsonl").read_text().splitlines()
    ]
    assert [p["id"] for p in predictions] == [t["id"] for t in musique]
    assert predictions[0]["predictions"] == [musique[0]["answers"][0]] and predictions[0]["verdicts"] == [
        "correct"
    ]
    assert (out / "predictions-hotpotqa.jsonl").is_file() and (
        out / "predictions-bamboogle_0-2.jsonl"
    ).is_file()

    # L0's normalisation: the empty answers now count as answers (EM stays 0).
    (l0,) = eval_cli.main(
        [*argv[:8], "--data", "bamboogle[:2]", "--normalization", "l0", "--output-dir", str(tmp_path / "l0")]
    )
    assert (l0["normalization"], l0["has_answer"], l0["em"]) == ("l0", 1.0, 0.0)
