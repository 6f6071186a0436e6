"""LongAudioBench (Audio Flamingo 2): open questions on long audio, scored by an LLM judge.

The benchmark is read in the AF3-style manifest form NVIDIA's Audio Flamingo evaluation code reads
(``llava/eval/eval_audio_bench.py``): a JSON list or JSON lines with ``id``, ``sound`` (a path, or a list) and
``conversations`` (a ``human`` turn with ``<sound>`` and the question, a ``gpt`` turn with the reference answer);
records with plain ``question`` / ``answer`` fields are read too. The file name is an assumption (the release
layout could not be checked here): set ``benchmark.file``.

Scoring: the judge sees ``question``, ``reference`` and the final answer (the text after the last ``</think>``)
and returns a score on ``judge_scale`` (1-10 by default, as the Audio Flamingo papers' GPT judge); the reported
``score`` is ``100 * mean / 10``, the 0-100 scale of the LongAudioBench numbers AF2 / AF3 / AF-Next report
(assumed mapping). Items the judge fails on are counted in ``failed`` and left out of the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import SOUND, BaseBenchmark, BenchmarkItem
from afnext.evaluation.metrics.breakdown import group_values
from afnext.evaluation.metrics.judged import Judge, judge_settings, judged_scores

__all__ = ["LongAudioBench"]


class LongAudioBench(BaseBenchmark):
    """LongAudioBench adapter (also any open-answer set in the same form).

    Args:
        judge_scale: The judge's (lowest, highest) score.
        judge_prompt: The judge's prompt template (``{question}``, ``{reference}``, ``{prediction}``; ``None``:
            the generic one for ``judge_scale``).
        judge_verdict: A judge that answers with a word, not a number (``marker``, ``values``, ``otherwise``;
            :func:`~afnext.evaluation.metrics.judged.verdict_rule`).
        judge_prompt_file: Read the judge's prompt from this file instead
            (:func:`~afnext.evaluation.metrics.judged.read_prompt_file`).
        breakdown: Record fields to average the judged score by (e.g. ``[category]`` when the file has it).
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "longaudiobench"
    metric = "LLM judge"
    default_file = "longaudiobench.json"
    default_prompt: ClassVar[dict[str, Any]] = {"user_open": SOUND + "\n{question}"}

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        judge_scale: Sequence[float] = (1, 10),
        judge_prompt: str | None = None,
        judge_verdict: Mapping[str, Any] | None = None,
        judge_prompt_file: str | None = None,
        breakdown: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.judge_scale, self.judge_prompt, self.judge_verdict = judge_settings(
            judge_scale, judge_prompt, judge_verdict, judge_prompt_file
        )
        self.breakdown = list(breakdown)

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        sound = record.get("sound", record.get("audio_path"))
        paths = [sound] if isinstance(sound, str) else list(sound or [])
        if "conversations" in record:
            turns = record["conversations"]
            human = next((t["value"] for t in turns if t.get("from") == "human"), None)
            gpt = next((t["value"] for t in turns if t.get("from") == "gpt"), None)
            if human is None or gpt is None:
                raise DataError(f"{where}: conversations need a human and a gpt turn")
            question, reference = human.replace(SOUND, "").strip(), gpt
        else:
            question, reference = record["question"], record["answer"]
        return BenchmarkItem(
            id=str(record.get("id") or (paths[0] if paths else index)),
            audio=[self.resolve(p, root) for p in paths],
            messages=self.prompt.render(question, (), len(paths)),
            reference=reference,
            meta={name: record.get(name) for name in self.breakdown},
            raw={**record, "question": question},
        )

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """The judge's mean score (and percent of the scale's top), overall and per breakdown field."""
        chosen, texts = self.predicted(items, predictions)
        judged = judged_scores(
            judge,
            [
                {"question": str(i.raw["question"]), "reference": str(i.reference), "prediction": t}
                for i, t in zip(chosen, texts)
            ],
            scale=self.judge_scale,
            prompt=self.judge_prompt,
            verdict=self.judge_verdict,
        )
        per_item = judged.pop("per_item", None)
        breakdown: dict[str, dict[str, Any]] = {}
        if per_item is not None:
            for name in self.breakdown:
                groups: dict[str, list[float]] = {}
                for item, value in zip(chosen, per_item):
                    for group in group_values(item.meta.get(name)) if value is not None else ():
                        groups.setdefault(group, []).append(value)
                breakdown[name] = {
                    g: {"score": 100.0 * sum(v) / len(v) / self.judge_scale[1], "judged": len(v)}
                    for g, v in groups.items()
                }
        return {
            "benchmark": self.name,
            "metric": f"LLM judge: mean score / {self.judge_scale[1]:g} x 100",
            "items": len(items),
            "scored": len(chosen),
            "skipped": len(items) - len(chosen),
            "score": judged.get("score"),
            "judge": {k: v for k, v in judged.items() if k != "score"},
            "breakdown": breakdown,
        }
