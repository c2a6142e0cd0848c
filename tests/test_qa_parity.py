"""EM/F1 parity with the official scripts, and L0's training normalisation, on real gold answers.

Nothing is vendored. The official behaviour is encoded as expected values, read from:

- HotpotQA ``hotpot_evaluate_v1.py`` (``hotpotqa/hotpot``, commit ``4c0fa5e``; unchanged in its
  metrics at ``fa3a363``): normalise (lower-case, drop ``string.punctuation``, drop the words
  a/an/the, collapse whitespace); EM is equality; F1 is token F1, 0 when no token is shared, and 0
  when either side is "yes"/"no"/"noanswer" and they differ. One gold per question.
- SQuAD v1.1 ``evaluate-v1.1.py`` (``allenai/bi-att-flow``, ``squad/evaluate-v1.1.py``, commit
  ``a315bc8``): the same normalisation and EM, F1 without the yes/no rule, the maximum over the gold
  answers.

Two documented differences, each an explicit case below: (1) when prediction and gold both
normalise to the empty string both official scripts give EM 1; we give 0 on purpose (an empty
or all-punctuation submission is no answer); (2) F1 follows HotpotQA's yes/no/noanswer rule,
where SQuAD would give partial credit.

L0's training reward (``cmriat/l0`` at ``3ad5028``, ``src/l0/verl_adapter/reward/nb_agent_reward.py``)
is ``normalization="l0"``: articles kept, everything but ASCII letters/digits/whitespace deleted,
both-empty EM = F1 = 1, has-answer for any submitted string.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from l0_env.answers import (
    exact_match,
    f1_score,
    has_answer,
    normalize_answer,
    normalize_answer_l0,
)

ROOT = Path(__file__).resolve().parents[1]
PARITY = {r["id"]: r for r in map(json.loads, (Path(__file__).parent / "data/qa/parity_golds.jsonl").open())}


def _bundled(split: str) -> list[dict]:
    with gzip.open(ROOT / "l0_env" / "data" / f"hotpotqa_{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def real_golds() -> list[str]:
    """Every gold answer and alias: the bundled HotpotQA sample always, the shared QA data if here."""
    golds = [a for split in ("dev", "train") for r in _bundled(split) for a in r["answers"]]
    for candidate in (os.environ.get("L0_QA_DIR"), ROOT.parent / "shared/data/qa"):
        if candidate and Path(candidate).is_dir():
            for path in sorted(Path(candidate).glob("*/*.jsonl")):
                golds += [a for line in path.open(encoding="utf-8") for a in json.loads(line)["answers"]]
            break
    return golds


GOLDS = real_golds()


def test_every_real_gold_matches_itself_and_its_decorated_forms():
    """Official behaviour, all golds: a gold scores EM 1 and F1 1 against itself, also upper-cased,
    with "The " in front and a full stop after (case, articles and punctuation are normalised away)."""
    assert len(GOLDS) >= 1345
    checked = 0
    for gold in GOLDS:
        if not normalize_answer(gold):
            continue  # the both-empty case: see test_both_empty_is_no_answer_on_purpose
        # Upper-casing is not always undone by lower(): "Preußen".upper() is "PREUSSEN" (official: 0 too).
        upper = gold.upper() if gold.upper().lower() == gold.lower() else gold
        for pred in (gold, upper, f"The {gold}.", f"  {gold}!! "):
            assert exact_match(pred, [gold]) == 1.0, (pred, gold)
            assert f1_score(pred, [gold]) == 1.0, (pred, gold)
        checked += 1
    assert checked >= len(GOLDS) - 3


def test_token_f1_is_the_official_formula_on_real_golds():
    """A prediction holding the first k of a gold's n distinct tokens: precision 1, recall k/n, so the
    official F1 is 2k/(n+k); with one foreign token added precision is k/(k+1)."""
    cases = 0
    for gold in GOLDS:
        tokens = normalize_answer(gold).split()
        if len(tokens) < 2 or len(set(tokens)) != len(tokens) or {"yes", "no", "noanswer"} & {tokens[0]}:
            continue
        n, k = len(tokens), len(tokens) // 2
        assert f1_score(" ".join(tokens[:k]), [gold]) == pytest.approx(2 * k / (n + k)), gold
        assert exact_match(" ".join(tokens[:k]), [gold]) == 0.0
        extra = " ".join([*tokens[:k], "zzzqqq"])
        p, r = k / (k + 1), k / n
        assert f1_score(extra, [gold]) == pytest.approx(2 * p * r / (p + r)), gold
        cases += 1
    assert cases > 500


def test_best_over_aliases_as_squad():
    """SQuAD takes the maximum over the gold answers (HotpotQA has one gold: the same there)."""
    aliases = PARITY["test_1986"]["answers"]  # NQ: ['a rotationally symmetric saltire', 'the symbol ×', '*']
    assert exact_match("Symbol ×", aliases) == 1.0
    assert f1_score("symbol", aliases) == pytest.approx(
        2 * 1 * 0.5 / 1.5
    )  # vs 'symbol ×' (× is no ASCII punctuation)
    assert f1_score("rotationally symmetric", aliases) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


def test_both_empty_is_no_answer_on_purpose():
    """Difference 1. NQ-open golds '---' and ')' normalise to nothing. The official scripts give an
    empty (or all-punctuation) prediction EM 1 against them; we give 0. F1 is 0 in all three
    (no shared token)."""
    for qid in ("test_1420", "test_664"):
        (gold,) = PARITY[qid]["answers"]
        assert normalize_answer(gold) == ""
        for pred in ("", "?", "--"):
            official_em = float(normalize_answer(pred) == normalize_answer(gold))
            assert official_em == 1.0
            assert exact_match(pred, [gold]) == 0.0, "we: an empty answer is no answer"
            assert f1_score(pred, [gold]) == 0.0
    # The same through an alias: SQuAD's maximum would find '*' and give EM 1 to an empty answer.
    assert exact_match("", PARITY["test_1986"]["answers"]) == 0.0
    assert exact_match(None, ["---"]) == 0.0


def test_yes_no_f1_follows_hotpotqa():
    """Difference 2. HotpotQA: F1 is 0 when either side is yes/no/noanswer and they differ; SQuAD
    would give 'yes it is' against 'yes' a partial 0.5. We follow HotpotQA. Real yes/no golds."""
    yes_no = [r for r in _bundled("dev") if normalize_answer(r["answers"][0]) in ("yes", "no")]
    assert len(yes_no) > 50
    for row in [*yes_no, PARITY["simpleqa_3954"]]:
        gold = row["answers"][0]
        other = "no" if normalize_answer(gold) == "yes" else "yes"
        assert exact_match(f"{gold.capitalize()}.", [gold]) == 1.0 and f1_score(gold, [gold]) == 1.0
        assert f1_score(other, [gold]) == 0.0
        assert f1_score(f"{gold} it is", [gold]) == 0.0, "HotpotQA's rule (SQuAD: 0.5)"
        assert f1_score(f"{gold} it is", [gold], normalization="l0") == pytest.approx(0.5), "L0: no rule"
    assert f1_score("noanswer", ["Paris"]) == 0.0 and f1_score("Paris noanswer", ["noanswer"]) == 0.0


def test_default_scoring_is_unchanged_by_the_option():
    for gold in GOLDS[:3000]:
        for pred in (gold, f"the {gold}", gold[: len(gold) // 2], "", None):
            assert exact_match(pred, [gold]) == exact_match(pred, [gold], normalization="squad")
            assert f1_score(pred, [gold]) == f1_score(pred, [gold], normalization="squad")
    with pytest.raises(ValueError, match="normalization must be one of"):
        exact_match("a", ["a"], normalization="official")  # type: ignore[arg-type]


# -- L0's training normalisation ------------------------------------------------------------------


def test_l0_keeps_articles_and_drops_non_ascii():
    spirit = next(r for r in _bundled("train") if r["answers"] == ["a spirit"])  # HotpotQA train gold
    gold = spirit["answers"][0]
    assert normalize_answer_l0(gold) == "a spirit" and normalize_answer(gold) == "spirit"
    assert exact_match("spirit", [gold]) == 1.0 and exact_match("spirit", [gold], normalization="l0") == 0.0
    assert exact_match("A spirit!", [gold], normalization="l0") == 1.0
    assert f1_score("spirit", [gold], normalization="l0") == pytest.approx(2 * 1 * 0.5 / 1.5)
    braunek = "Małgorzata Braunek"  # 2WikiMultihopQA dev_0's gold (tests/data/qa FlashRAG sample)
    assert normalize_answer_l0(braunek) == "magorzata braunek"
    assert exact_match("Magorzata Braunek", [braunek], normalization="l0") == 1.0
    assert exact_match("Magorzata Braunek", [braunek]) == 0.0
    assert exact_match("Malgorzata Braunek", [braunek], normalization="l0") == 0.0
    assert exact_match(braunek, [braunek], normalization="l0") == 1.0
    assert normalize_answer_l0("U.S.  Route\u00a066 — “Main St.”") == "us route 66 main st"


def test_l0_counts_both_empty_as_a_match_and_any_string_as_an_answer():
    """PopQA test_7930 lists the flag emoji 🇨🇳 and 🇹🇼 as aliases; under L0 they normalise to "",
    so an empty submission scores EM 1 and F1 1 (and has-answer 1). test_14135's Cyrillic alias
    'Буцуреșти' normalises to nothing too."""
    china = PARITY["test_7930"]["answers"]
    assert "🇨🇳" in china and normalize_answer_l0("🇨🇳") == ""
    assert exact_match("", china, normalization="l0") == 1.0
    assert f1_score("", china, normalization="l0") == 1.0
    assert has_answer("", normalization="l0") == 1.0
    assert (exact_match("", china), f1_score("", china), has_answer("")) == (0.0, 0.0, 0.0)
    assert exact_match("北京", PARITY["test_14135"]["answers"], normalization="l0") == 1.0
    assert exact_match("Bucuresti", PARITY["test_14135"]["answers"], normalization="l0") == 1.0
    for fn in (exact_match, f1_score):
        assert fn(None, china, normalization="l0") == 0.0, "nothing submitted scores 0"
    assert has_answer(None, normalization="l0") == 0.0 and has_answer("   ", normalization="l0") == 1.0
    assert f1_score("", ["Paris"], normalization="l0") == 0.0, "one side empty: 0"


def test_l0_normalisation_is_idempotent_and_every_gold_matches_itself():
    for gold in GOLDS:
        once = normalize_answer_l0(gold)
        assert normalize_answer_l0(once) == once
        assert exact_match(gold, [gold], normalization="l0") == 1.0
        assert f1_score(gold, [gold], normalization="l0") == 1.0
