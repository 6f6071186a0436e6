"""Answer accuracy: is the completion's final answer the reference answer?

The final answer is the text after ``</think>`` (the whole completion without a chain; nothing when a chain is
left open), as AF-Next scores Think outputs. Then, by kind of question:

* multiple choice (the line has ``choices``): the official MMAU / MMAR rule on the final answer, a leading option
  letter replaced by its option's text (:func:`afnext.evaluation.metrics.mcq.final_answer_text`,
  :func:`~afnext.evaluation.metrics.mcq.official_mcq`);
* numbers (counts, seconds) within ``tolerance``, and yes / no by the first yes or no
  (:func:`afnext.reasoning.metrics.answer_correct`);
* other open answers: the LLM judge's score scaled to ``[0, 1]`` when ``judge`` is set
  (:class:`afnext.evaluation.judge.LLMJudge`); otherwise ``open_match``: ``exact`` (the normalised final answer
  equals the normalised reference; the default: a reward that accepts any text containing the reference is
  maximised by listing every candidate) or ``contains`` (the reference's words occur in it, the rule the
  evaluation uses).
"""

from __future__ import annotations

import re
from typing import Any

from afnext.errors import ConfigError, DataError
from afnext.evaluation.metrics.mcq import final_answer_text, official_mcq
from afnext.reasoning.metrics import answer_correct, extract_choice, final_answer
from afnext.training.rewards.base import RewardSample

__all__ = ["OPEN_MATCHES", "AccuracyReward", "normalise_answer"]

OPEN_MATCHES = ("exact", "contains")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """Lower case, letters / digits / dots only, no articles, single spaces (as ``afnext.reasoning.metrics``
    normalises answers before comparing them)."""
    text = re.sub(r"[^a-z0-9. ]+", " ", text.lower())
    return " ".join(_ARTICLES_RE.sub(" ", text).split()).strip(" .")


class AccuracyReward:
    """1.0 for a right final answer, 0.0 otherwise (a judge's score in between for open answers).

    Args:
        open_match: ``exact`` or ``contains`` for open answers without a judge (see the module docstring).
        tolerance: Numeric answers match within this much.
        judge: An :class:`afnext.evaluation.judge.LLMJudge` (or anything with ``score(items)``,
            ``min_score`` and ``max_score``) for open answers; ``None``: ``open_match``.

    Raises:
        ConfigError: An unknown ``open_match``.
    """

    def __init__(
        self, *, open_match: str = "exact", tolerance: float = 0.5, judge: Any = None
    ) -> None:
        if open_match not in OPEN_MATCHES:
            raise ConfigError(
                f"reward.accuracy.open_match={open_match!r}; use one of {list(OPEN_MATCHES)}"
            )
        self.open_match, self.tolerance, self.judge = open_match, float(tolerance), judge

    def __call__(self, sample: RewardSample, completion: str) -> float:
        """Score one completion.

        Raises:
            DataError: The reference picks none of the options, or the judge gave no score (counted as a
                failure of this reward by the caller).
        """
        reference = final_answer(sample.answer)
        prediction = final_answer(completion)
        if sample.choices:
            choices = list(sample.choices)
            index = extract_choice(reference, choices)
            if index is None:
                raise DataError(
                    f"{sample.where}: reference answer {reference!r} picks none of the options {choices}"
                )
            return float(
                official_mcq(choices[index], final_answer_text(completion, choices), choices)
            )
        wanted = normalise_answer(reference)
        if _NUMBER_RE.match(wanted) or wanted in ("yes", "no"):
            return float(answer_correct(prediction, reference, tolerance=self.tolerance))
        if self.judge is not None:
            item = {"question": sample.question, "reference": reference, "prediction": prediction}
            score = self.judge.score([item])[0]
            if score is None:
                raise DataError(
                    f"{sample.where}: the judge gave no score (counted in judge.failures)"
                )
            low, high = float(self.judge.min_score), float(self.judge.max_score)
            return (float(score) - low) / (high - low) if high > low else float(score >= high)
        if self.open_match == "contains":
            return float(answer_correct(prediction, reference, tolerance=self.tolerance))
        return float(bool(wanted) and normalise_answer(prediction) == wanted)
