"""Multiple-choice benchmarks scored twice: by the official rule on the raw output and on the final answer.

``score`` returns ``official`` (the benchmark's own rule applied to the raw model output, exactly as its script
does) and ``final_answer`` (AF-Next's way for Think outputs: the text after the last ``</think>``, a leading
option letter mapped to that option's text, then the MMAU / MMAR official rule; see
:mod:`afnext.evaluation.metrics.mcq`). Each is accuracy in percent over the items with a prediction, broken down
by the benchmark's metadata fields. Items without a prediction are skipped and counted in ``skipped``.

* :class:`MMAU`: MMAU test-mini v05.15.25 (Sakshi113/MMAU): ``mmau-test-mini.json``, a JSON list with ``id,
  audio_id, question, choices, answer, dataset, task, split, category, sub-category, difficulty``; audio at
  ``audio_id`` (``./test-mini-audios/<uuid>.wav``) under the root; the prediction in ``model_output``.
* :class:`MMAR` (ddlBoJack/MMAR): ``MMAR-meta.jsonl`` with ``id, audio_path, question, choices, answer,
  modality, category, sub-category, language, source, ...``; the prediction in ``answer_prediction``.
* :class:`MMSU` (dingdongwang/MMSU): the Hugging Face release (ddwang2000/MMSU: parquet files with ``id, audio,
  question, choice_a..choice_d, answer_gt, task_name, category, sub-category, sub-sub-category,
  linguistics_sub_discipline``, the audio embedded), or the records its ``mmsu_inference.py`` writes (the same
  fields with ``audio_path`` for ``audio``), the prediction in ``response``; official rule:
  :func:`~afnext.evaluation.metrics.mcq.mmsu_official`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import BaseBenchmark, BenchmarkItem
from afnext.evaluation.metrics.breakdown import accuracy_summary
from afnext.evaluation.metrics.judged import Judge
from afnext.evaluation.metrics.mcq import final_answer_text, mmsu_official, official_mcq

__all__ = ["MMAR", "MMAU", "MMSU", "MultipleChoiceBenchmark"]

FINAL_RULE = (
    "text after the last </think> (empty if a <think> never closes), a leading option letter mapped to that "
    "option's text, then the MMAU/MMAR official rule"
)


class MultipleChoiceBenchmark(BaseBenchmark):
    """Shared reading and scoring of multiple-choice sets (subclasses name their fields)."""

    metric = "accuracy"
    audio_field = "audio_path"
    answer_field = "answer"
    fields: ClassVar[tuple[str, ...]] = ()
    """Metadata fields results are broken down by."""
    order: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Per field, the groups listed first (the official script's order)."""
    official_rule = "MMAU/MMAR official string_match on the raw output"
    notes: ClassVar[tuple[str, ...]] = ()
    default_prompt: ClassVar[dict[str, Any]] = {
        "user": "<sound>\n{question}\nChoose the correct option from the following options:\n{options}"
    }

    def choices_of(self, record: Mapping[str, Any]) -> list[str]:
        """The options of a record, in the order shown."""
        return list(record["choices"])

    def audio_of(self, record: Mapping[str, Any]) -> Any:
        """The record's audio: a path, a list of paths (relative to the root as released)."""
        return record[self.audio_field]

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        choices = self.choices_of(record)
        if any(not isinstance(c, str) for c in choices):
            raise DataError(f"{where}: every choice must be a string, got {choices!r}")
        answer = record[self.answer_field]
        audio = self.audio_of(record)
        paths = [audio] if isinstance(audio, str) else list(audio or [])
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise DataError(
                f"{where}: its audio is {audio!r}; every question needs a path (or a list of paths) to its clip"
            )
        return BenchmarkItem(
            id=str(record["id"]),
            audio=[self.resolve(p, root) for p in paths],
            messages=self.prompt.render(record["question"], choices, len(paths)),
            reference=answer,
            choices=choices,
            answer_index=choices.index(answer) if answer in choices else None,
            meta={name: record.get(name) for name in self.fields},
            raw=record,
        )

    def official_correct(self, item: BenchmarkItem, prediction: str) -> bool | None:
        """The benchmark's official rule on the raw output (``None``: the rule does not count the item)."""
        return official_mcq(item.reference, prediction, item.choices)

    def final_correct(self, item: BenchmarkItem, prediction: str) -> bool:
        """The official MMAU/MMAR rule on the final answer (letters mapped to option text)."""
        return official_mcq(
            item.reference, final_answer_text(prediction, item.choices), item.choices
        )

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Accuracy (percent) by the official rule and on the final answer, with breakdowns.

        Args:
            items: The benchmark's items.
            predictions: ``{item id: model output}``; items without an entry are skipped.
            judge: Unused (accepted so every adapter takes the same arguments).

        Raises:
            DataError: A prediction names no item, or is not a string (names the item).
        """
        self.unknown_predictions(items, predictions)
        scored = [item for item in items if item.id in predictions]
        official, final = [], []
        for item in scored:
            try:
                official.append(self.official_correct(item, predictions[item.id]))
                final.append(self.final_correct(item, predictions[item.id]))
            except DataError as exc:
                raise DataError(f"item {item.id!r}: {exc}") from exc
        meta = [item.meta for item in scored]
        return {
            "benchmark": self.name,
            "metric": "accuracy (percent)",
            "items": len(items),
            "scored": len(scored),
            "skipped": len(items) - len(scored),
            "official": {
                "rule": self.official_rule,
                **accuracy_summary(official, meta, self.fields, self.order),
            },
            "final_answer": {
                "rule": FINAL_RULE,
                **accuracy_summary(final, meta, self.fields, self.order),
            },
            "notes": list(self.notes),
        }


class MMAU(MultipleChoiceBenchmark):
    """MMAU test-mini v05.15.25 (1,000 items; the 9,000-item test set has no public answers)."""

    name = "mmau"
    default_file = "mmau-test-mini.json"
    prediction_field = "model_output"
    audio_field = "audio_id"
    fields = ("task", "category", "sub-category", "difficulty")
    order: ClassVar[dict[str, tuple[str, ...]]] = {
        "task": ("sound", "music", "speech"),
        "difficulty": ("easy", "hard", "medium"),
    }
    notes = (
        "Items without a 'model_output' field are skipped, as the official script does; they are counted in "
        "'skipped' (the script's 'No prediction count' is always 0: its counting branch is unreachable).",
        "The official script breaks down by task, difficulty and sub-category; 'category' is added here "
        "(13 items have it as a one-element list, counted under that element).",
    )


class MMAR(MultipleChoiceBenchmark):
    """MMAR (1,000 items over sound, music, speech and their mixes)."""

    name = "mmar"
    default_file = "MMAR-meta.jsonl"
    prediction_field = "answer_prediction"
    fields = ("modality", "category", "sub-category")
    order: ClassVar[dict[str, tuple[str, ...]]] = {
        "modality": (
            "sound",
            "music",
            "speech",
            "mix-sound-music",
            "mix-sound-speech",
            "mix-music-speech",
            "mix-sound-music-speech",
        ),
        "category": ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"),
    }
    notes = (
        "Items without an 'answer_prediction' field are skipped, as the official script does; they are "
        "counted in 'skipped'.",
    )


class MMSU(MultipleChoiceBenchmark):
    """MMSU (5,000 spoken-language items, options A-D).

    The release is a Hugging Face dataset (ddwang2000/MMSU): parquet files whose ``audio`` column holds each
    clip's encoded bytes (``{"bytes", "path"}``). ``benchmark.root`` is the downloaded dataset folder
    (``huggingface-cli download ddwang2000/MMSU --repo-type dataset --local-dir DIR``); every ``*.parquet`` under
    it is read (``benchmark.file``, a glob) and the clips are written once to ``audio_cache``. A JSON / JSON-lines
    file with the fields the official ``mmsu_inference.py`` writes (``audio_path`` relative to the root instead
    of ``audio``) is read too: ``benchmark.file=mmsu.jsonl``.
    """

    name = "mmsu"
    default_file = "**/*.parquet"
    prediction_field = "response"
    answer_field = "answer_gt"
    fields = ("category", "sub-category", "task_name")
    official_rule = (
        "MMSU official: the letter the stripped response starts with, else its second-to-last character; "
        "unparseable responses are not counted"
    )
    notes = (
        "Official rule: a response that is neither empty/'None' nor parseable is left out of the denominator "
        "(counted in 'not_counted'), as mmsu_evaluation.py does; items without a 'response' field are skipped "
        "here (the script would count them as wrong).",
    )
    default_prompt: ClassVar[dict[str, Any]] = {
        "user": "<sound>\nChoose the most suitable answer from options A, B, C, and D. You must respond with "
        "only A, B, C, or D.\n\nQuestion: {question}\n\n{options}",
        "option": "{letter}. {text}",
    }

    def audio_of(self, record: Mapping[str, Any]) -> Any:
        """``audio`` (the release; written out by :meth:`load`), else ``audio_path`` (the script's records)."""
        return record["audio"] if "audio" in record else record["audio_path"]

    def choices_of(self, record: Mapping[str, Any]) -> list[str]:
        """``choice_a`` .. ``choice_d``, trailing empty ones dropped (letters keep their positions)."""
        choices = [record.get(f"choice_{x}") or "" for x in "abcd"]
        while choices and not choices[-1]:
            choices.pop()
        return choices

    def official_correct(self, item: BenchmarkItem, prediction: str) -> bool | None:
        four = [item.raw.get(f"choice_{x}") or "" for x in "abcd"]
        return mmsu_official(prediction, four, str(item.reference))
