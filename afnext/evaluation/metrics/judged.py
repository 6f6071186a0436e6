"""Scores from an LLM judge: the interface a judge offers and how its numbers are averaged.

A judge is any object with ``score(items) -> list[float | None]``: each item a mapping of the judge's template
fields (``question``, ``reference``, ``prediction``), one number per item back, ``None`` where the judge failed
on it (no parseable score). ``afnext.evaluation.judge.LLMJudge`` is one; tests use a fake. A judge that also has
``for_benchmark(prompt, scale)`` is given the benchmark's own prompt and scale first (an LLM judge asks for the
scale the benchmark averages on). Failures and scores outside the benchmark's scale are counted and reported
(with the judge's reasons when it gives them), never averaged in.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from afnext.errors import ConfigError, DataError, UsageError

__all__ = [
    "Judge",
    "Verdict",
    "judge_settings",
    "judged_scores",
    "read_prompt_file",
    "scale_prompt",
    "verdict_rule",
]

Verdict = tuple[str, list[tuple[str, float]], "float | None"]
"""A parsed verdict rule: ``(marker, [(word, score), ...], otherwise)``."""


def scale_prompt(low: float, high: float) -> str:
    """The generic judge prompt asking for a score from ``low`` to ``high`` (fields ``{question}``,
    ``{reference}``, ``{prediction}``; the reply ends with ``Score: N``)."""
    return (
        "You grade answers to questions about an audio recording. You do not hear the audio; judge the "
        "candidate answer against the reference answer only.\n\n"
        "Question: {question}\nReference answer: {reference}\nCandidate answer: {prediction}\n\n"
        f"Rate how well the candidate answer agrees with the reference from {low:g} (wrong or unrelated) to "
        f"{high:g} (fully correct and complete). Explain briefly, then end with a line of the form 'Score: N'."
    )


def read_prompt_file(path: str | Path) -> str:
    """A judge prompt kept in a file: a YAML prompt config's ``user`` entry (NeMo-Skills' layout,
    ``nemo_skills/prompt/config/judge/*.yaml``), or the whole text of any other file.

    Raises:
        ConfigError: The file is missing, or a YAML file has no ``user`` string (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"judge_prompt_file={path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() not in (".yaml", ".yml"):
        return text
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"judge_prompt_file={path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("user"), str):
        raise ConfigError(
            f"judge_prompt_file={path}: a YAML prompt file needs a `user` string (the prompt template)"
        )
    return data["user"]


def verdict_rule(rule: Mapping[str, Any]) -> Verdict:
    """``(marker, [(word, score), ...], otherwise)`` from a benchmark's ``judge_verdict`` mapping.

    Raises:
        ConfigError: A key is unknown, ``marker`` or ``values`` is missing, or a score is not a number.
    """
    unknown = sorted(set(rule) - {"marker", "values", "otherwise"})
    marker, values = rule.get("marker"), rule.get("values")
    if (
        unknown
        or not isinstance(marker, str)
        or not marker
        or not isinstance(values, Mapping)
        or not values
    ):
        raise ConfigError(
            f"judge_verdict={dict(rule)!r}: give marker (text before the verdict, e.g. 'Judgement:'), values "
            "(verdict word -> score, e.g. {yes: 1, no: 0}) and optionally otherwise (score of a reply "
            "without a verdict; null leaves it out)"
        )
    otherwise = rule.get("otherwise")
    try:
        words = [(str(word).lower(), float(score)) for word, score in values.items()]
        return marker, words, None if otherwise is None else float(otherwise)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"judge_verdict: scores must be numbers ({exc})") from exc


def judge_settings(
    scale: Sequence[float],
    prompt: str | None = None,
    verdict: Mapping[str, Any] | None = None,
    prompt_file: str | Path | None = None,
) -> tuple[tuple[float, float], str, dict[str, Any] | None]:
    """A judged benchmark's ``(judge_scale, judge_prompt, judge_verdict)`` from its config, checked when the
    benchmark is built (not after its answers are generated).

    Args:
        scale: The judge's (lowest, highest) score.
        prompt: The prompt template; ``None``: :func:`scale_prompt` for ``scale``.
        verdict: A verdict rule (:func:`verdict_rule`), or ``None``.
        prompt_file: Read the prompt from this file instead (:func:`read_prompt_file`).

    Raises:
        ConfigError: The scale is not (low, high), the prompt file cannot be read, or the verdict rule is bad.
    """
    if len(scale) != 2 or not float(scale[0]) <= float(scale[1]):
        raise ConfigError(f"judge_scale={list(scale)!r}: give [lowest, highest], lowest <= highest")
    low_high = (float(scale[0]), float(scale[1]))
    if prompt_file:
        prompt = read_prompt_file(prompt_file)
    if verdict:
        verdict_rule(verdict)
    return low_high, prompt or scale_prompt(*low_high), dict(verdict) if verdict else None


@runtime_checkable
class Judge(Protocol):
    """What the benchmarks need from an LLM judge."""

    def score(self, items: Sequence[Mapping[str, str]]) -> list[float | None]:
        """One score per item (``None``: the judge failed on that item)."""
        ...


def judged_scores(
    judge: Judge | None,
    items: Sequence[Mapping[str, str]],
    *,
    scale: tuple[float, float],
    prompt: str | None = None,
    verdict: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Have ``judge`` score ``items`` and average the scores.

    Args:
        judge: The judge; ``None`` reports the items as not scored (no number).
        items: ``{"question", "reference", "prediction"}`` per item.
        scale: The judge's (lowest, highest) score; the percent is ``100 * mean / highest`` (MMAU-Pro divides
            its 1-5 judge mean by 5; AF-Next reports LongAudioBench's 1-10 mean as x10).
        prompt: The benchmark's judge prompt (``None``: the judge's own), for judges with ``for_benchmark``.
        verdict: The benchmark's verdict rule (a judge that answers Yes / No; see
            :meth:`afnext.evaluation.judge.LLMJudge.for_benchmark`), passed to ``for_benchmark``.

    Returns:
        ``{"score": percent or None, "mean", "scale", "judged", "failed", "out_of_scale", "items",
        "per_item"}``; ``reason`` when nothing was scored.

    Raises:
        UsageError: ``judge`` has no ``score`` method, or a verdict rule is given and its ``for_benchmark``
            does not take one.
        DataError: The judge returned a different number of scores than items.
    """
    low, high = float(scale[0]), float(scale[1])
    base = {"scale": [low, high], "items": len(items)}
    if judge is None:
        return {
            **base,
            "score": None,
            "reason": "no judge given: pass judge= (an object with score(items), e.g. "
            "afnext.evaluation.judge.LLMJudge)",
        }
    if not callable(getattr(judge, "score", None)):
        raise UsageError(f"judge {judge!r} has no score(items) method")
    if not items:
        return {**base, "score": None, "reason": "no item to judge"}
    if callable(getattr(judge, "for_benchmark", None)):
        if verdict is None:
            judge = judge.for_benchmark(prompt, (low, high))
        elif "verdict" in inspect.signature(judge.for_benchmark).parameters:
            judge = judge.for_benchmark(prompt, (low, high), verdict=verdict)
        else:
            raise UsageError(
                f"judge {judge!r}: this benchmark's judge answers with a verdict word (judge_verdict), and "
                "its for_benchmark(prompt, scale) takes no verdict= rule; accept one, or give the benchmark a "
                "numeric judge_prompt instead"
            )
    raw = list(judge.score(list(items)))
    if len(raw) != len(items):
        raise DataError(f"the judge returned {len(raw)} scores for {len(items)} items")
    valid: list[float] = []
    per_item: list[float | None] = []
    failed = out_of_scale = 0
    for value in raw:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            failed += 1
            per_item.append(None)
        elif not low <= float(value) <= high:
            out_of_scale += 1
            per_item.append(None)
        else:
            valid.append(float(value))
            per_item.append(float(value))
    mean = sum(valid) / len(valid) if valid else None
    result = {
        **base,
        "score": 100.0 * mean / high if mean is not None else None,
        "mean": mean,
        "judged": len(valid),
        "failed": failed,
        "out_of_scale": out_of_scale,
        "per_item": per_item,
    }
    # e.g. {"out_of_range": 2, "timeout": 1}; "no_verdict" replies may be counted, not failed
    reasons = getattr(judge, "failure_reasons", None)
    if reasons:
        result["failure_reasons"] = dict(reasons)
    if not valid:
        result["reason"] = f"the judge scored none of the {len(items)} items (see failed)"
    return result
