"""TRL-compatible reward callables over single completions (pure, picklable, thread-safe).

TRL contract (``GRPOTrainer(reward_funcs=[...])``): a reward function is called as
``f(prompts, completions, **kwargs)`` where ``completions`` holds one string per sample (or, for
conversational data, a list of chat messages) and ``kwargs`` holds the other dataset columns, one
value per sample. It returns ``list[float | None]``; ``None`` means "this reward does not apply to
this sample". :class:`QAReward` and :class:`FormatReward` follow it; they are plain objects with no
state beyond their settings, so they pickle and can be called from any thread. :class:`JudgeReward`
follows it too, but asks an LLM judge over HTTP (:class:`l0_env.judge.LLMJudge`, which pickles and
is thread-safe as well).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .actions import parse_action
from .answers import DEFAULT_TOLERANCE, gold_list
from .rewards import format_reward, qa_reward

if TYPE_CHECKING:
    from .judge import LLMJudge

__all__ = ["FormatReward", "JudgeReward", "QAReward", "completion_text", "extract_final_answer"]

_METRICS = ("em", "f1")


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the content of the last assistant message."""
    try:
        return _completion_text(completion)
    except RecursionError:  # absurdly nested content: no text to score
        return ""


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content", "")
                if isinstance(content, (list, tuple)):  # content parts: [{"type": "text", ...}]
                    return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
                return "" if content is None else str(content)
        return ""
    return "" if completion is None else str(completion)


_SUBMIT = "submit_final_answer"
_SUBMIT_RE = re.compile(r"\bsubmit_final_answer\s*\(")


def _literal_arg(call: ast.Call) -> str | None:
    node: ast.expr | None = call.args[0] if call.args else None
    if node is None:
        node = next((kw.value for kw in call.keywords if kw.arg == "answer"), None)
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
        return str(node.value)
    return None


def _is_submit(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == _SUBMIT) or (
        isinstance(func, ast.Attribute) and func.attr == _SUBMIT
    )


def extract_final_answer(code: str | None) -> str | None:
    """The literal argument of the last ``submit_final_answer(...)`` call in ``code``.

    The code is parsed with :mod:`ast`; string (and number) literals are accepted, positional or
    as ``answer=``. If the code does not parse, each call is parsed on its own. Returns ``None``
    when there is no such call or its argument is not a literal.
    """
    if not code or _SUBMIT not in code:
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None:
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_submit(n)]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        return _literal_arg(calls[-1]) if calls else None
    # Broken code elsewhere: try the last call alone, closing it at each of the next few ")".
    for match in reversed(list(_SUBMIT_RE.finditer(code))):
        rest = code[match.end() :]
        close = -1
        for _ in range(32):
            close = rest.find(")", close + 1)
            if close == -1:
                break
            try:
                expr = ast.parse(f"{_SUBMIT}({rest[: close + 1]}", mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            if isinstance(expr, ast.Call):
                return _literal_arg(expr)
    return None


@dataclass(frozen=True)
class QAReward:
    """TRL reward: the answer reward of the last ``submit_final_answer`` in each completion.

    Gold answers come from the dataset column ``answers_key`` (one list of aliases, or one string,
    per completion). A completion without a literal submitted answer gets ``None``. Where the
    dataset has an ``answer_type`` column, rows with ``"number"`` are scored as numbers (with the
    row's ``tolerance`` column, if any; see :func:`l0_env.answers.numbers_match`).
    """

    metric: str = "em"
    em_weight: float = 0.9
    has_answer_weight: float = 0.1
    f1_weight: float = 0.0
    answers_key: str = "answers"

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {self.metric!r}")

    @property
    def __name__(self) -> str:  # TRL logs each reward under its function's __name__
        return f"qa_{self.metric}"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """Score each completion against its gold answers."""
        if self.answers_key not in kwargs:
            raise KeyError(
                f"QAReward needs the gold answers in the dataset column {self.answers_key!r} "
                f"(got columns {sorted(kwargs)}); pass answers_key= to use another column"
            )
        all_golds = kwargs[self.answers_key]
        if len(all_golds) != len(completions):
            raise ValueError(f"{len(all_golds)} gold entries for {len(completions)} completions")
        kinds = kwargs.get("answer_type") or [None] * len(completions)
        tolerances = kwargs.get("tolerance") or [None] * len(completions)
        scores: list[float | None] = []
        for completion, golds, kind, tol in zip(completions, all_golds, kinds, tolerances, strict=True):
            prediction = extract_final_answer(parse_action(completion_text(completion)).code)
            scores.append(
                None
                if prediction is None
                else qa_reward(
                    prediction,
                    gold_list(golds),
                    metric=self.metric,
                    em_weight=self.em_weight,
                    has_answer_weight=self.has_answer_weight,
                    f1_weight=self.f1_weight,
                    tolerance=(DEFAULT_TOLERANCE if tol is None else float(tol))
                    if kind == "number"
                    else None,
                )
            )
        return scores


@dataclass(frozen=True)
class FormatReward:
    """TRL reward: :func:`format_reward` of each completion."""

    __name__ = "format"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """Score the format of each completion."""
        return [format_reward(completion_text(c)) for c in completions]


@dataclass(frozen=True)
class JudgeReward:
    """TRL reward: an LLM judge's score of the last ``submit_final_answer`` in each completion.

    1.0 when the judge (:class:`l0_env.judge.LLMJudge`, SimpleQA's grader template) grades the
    submitted answer correct, else 0.0; ``None`` for a completion without a literal submitted
    answer, as :class:`QAReward` does. The question comes from the dataset column ``question_key``,
    the gold answers from ``answers_key`` (a list of aliases or one string). One batched, concurrent
    ``grade_many`` call per TRL call; verdicts are cached by the judge.

    Failures never raise mid-training: a row without a question or a non-empty gold answer, a
    judge that cannot be reached, or a reply that cannot be parsed gives ``failure_score`` (0.0)
    and a :class:`RuntimeWarning` naming how many rows failed and why. Missing columns or a length
    mismatch are a setup error and raise on the first call, like :class:`QAReward`.

    An RL policy optimised against a judge can learn to sway it (its answer is untrusted text in
    the judge's prompt): combine this with :class:`QAReward` rather than use it alone.
    """

    judge: LLMJudge
    answers_key: str = "answers"
    question_key: str = "question"
    failure_score: float = 0.0

    @property
    def __name__(self) -> str:  # TRL logs each reward under its function's __name__
        return "judge"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """Grade each completion's submitted answer with the judge."""
        for key in (self.answers_key, self.question_key):
            if key not in kwargs:
                raise KeyError(
                    f"JudgeReward needs the dataset column {key!r} (got columns {sorted(kwargs)}); "
                    f"pass answers_key= / question_key= to use other columns"
                )
        all_golds, questions = kwargs[self.answers_key], kwargs[self.question_key]
        for name, column in ((self.answers_key, all_golds), (self.question_key, questions)):
            if len(column) != len(completions):
                raise ValueError(f"{len(column)} {name!r} entries for {len(completions)} completions")
        scores: list[float | None] = [None] * len(completions)
        rows: list[int] = []
        items: list[tuple[str, list[str], str]] = []
        problems: list[str] = []
        for i, (completion, golds, question) in enumerate(
            zip(completions, all_golds, questions, strict=True)
        ):
            prediction = extract_final_answer(parse_action(completion_text(completion)).code)
            if prediction is None:
                continue
            gold = [g for g in gold_list(golds) if g.strip()]
            if not isinstance(question, str) or not question.strip() or not gold:
                scores[i] = self.failure_score
                problems.append(f"row {i}: no question or no non-empty gold answer")
                continue
            rows.append(i)
            items.append((question, gold, prediction))
        if items:
            reason = ""
            try:
                verdicts = self.judge.grade_many(items)
            except (ValueError, RuntimeError, OSError) as exc:  # never kill a training run
                verdicts = None
                reason = f"grade_many failed: {type(exc).__name__}: {exc}"
            for n, i in enumerate(rows):
                verdict = verdicts[n] if verdicts is not None else None
                if verdict is not None and verdict.grade is not None:
                    scores[i] = verdict.score
                else:
                    scores[i] = self.failure_score
                    problems.append(f"row {i}: {verdict.error if verdict is not None else reason}")
        if problems:
            warnings.warn(
                f"JudgeReward: {len(problems)} row(s) scored {self.failure_score} for lack of a verdict; "
                f"first: {problems[0][:300]}",
                RuntimeWarning,
                stacklevel=2,
            )
        return scores
