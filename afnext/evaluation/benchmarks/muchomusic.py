"""MuchoMusic (mulab-mir/muchomusic, ISMIR 2024): 1,187 multiple-choice questions on 644 music clips.

Released as ``muchomusic.csv`` (Zenodo 10.5281/zenodo.12709974) with ``question, dataset, genre,
music_reasoning, music_knowledge, dataset_identifier, correct_answer, distractor_1_answer,
distractor_2_answer, distractor_3_answer``. The audio is not in the release: Song Describer clips and MusicCaps
clips are found the way the official ``muchomusic_eval/utils.py`` finds them, under the root:

* ``sdd/song_describer.csv`` (``track_id -> path``) and ``sdd/audio/<path with .mp3 -> .2min.mp3>``;
* ``musiccaps/musiccaps-public.csv`` (``ytid -> start_s, end_s``) and ``musiccaps/audio/[<ytid>]-[<start>-<end>].wav``.

The official script shuffles the options with an unseeded RNG; here each item's order is a function of
``seed`` and the item id, so prompts are reproducible. An item's id is its row number in the CSV (the CSV has
no question id; ``dataset_identifier`` names the clip, shared by several questions). The official
``prepare_prompts.py`` output (JSON with ``answers``, ``answer_orders``, ``model_output``, in CSV order) is
read too, with its own option order: that is the file ``afnext eval score benchmark=muchomusic`` takes.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from afnext.errors import ConfigError, DataError
from afnext.evaluation.benchmarks.base import BenchmarkItem, read_records
from afnext.evaluation.benchmarks.multiple_choice import MultipleChoiceBenchmark
from afnext.evaluation.metrics.mcq import muchomusic_official

__all__ = ["MuchoMusic"]

_DISTRACTORS = {
    "incorrect_but_related": "distractor_1_answer",
    "correct_but_unrelated": "distractor_2_answer",
    "incorrect_and_unrelated": "distractor_3_answer",
}


_QUESTION = re.compile(r"Question: (.*?)\n Options:", re.DOTALL)


def _question(record: dict[str, Any]) -> str:
    """The question: its CSV column, or the official prompt's ``Question: ...`` line (prompts file)."""
    if "question" in record:
        return str(record["question"])
    match = _QUESTION.search(str(record["prompt"]))
    return match.group(1) if match else str(record["prompt"])


def _labels(value: Any) -> list[str]:
    """``music_reasoning`` / ``music_knowledge``: a Python-literal list in the CSV, a list in the JSON."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if not value:
        return []
    parsed = ast.literal_eval(value)  # literals only: never executes code
    return [str(v) for v in parsed] if isinstance(parsed, (list, tuple)) else [str(parsed)]


class MuchoMusic(MultipleChoiceBenchmark):
    """MuchoMusic adapter.

    Args:
        seed: Seeds each item's option order.
        distractors: Which distractors to show (the official config's names).
        prefix: The answer lead-in the official rule strips from outputs.
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "muchomusic"
    default_file = "muchomusic.csv"
    prediction_field = "model_output"
    fields = ("dataset", "genre", "reasoning", "knowledge")
    official_rule = (
        "MuchoMusic official: exactly one of the letters A-D anywhere in the output picks it, else the first "
        "option whose text it contains"
    )
    notes = (
        "Options are shuffled with a seeded RNG per item (the official script's RNG is unseeded).",
        "'reasoning' / 'knowledge' groups are multi-label: an item counts in each of its labels.",
    )
    default_prompt: ClassVar[dict[str, Any]] = {
        "user": "<sound>\nQuestion: {question}\n Options: {options}\n The correct answer is: ",
        "option_separator": " ",
    }

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        seed: int = 0,
        distractors: Sequence[str] = tuple(_DISTRACTORS),
        prefix: str = "The correct answer is:",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        unknown = [d for d in distractors if d not in _DISTRACTORS]
        if unknown:
            raise ConfigError(
                f"benchmark {self.name}.distractors: unknown {unknown}; known: {list(_DISTRACTORS)}"
            )
        self.seed = seed
        self.distractors = list(distractors)
        self.prefix = prefix
        self._lookups: dict[Path, dict[str, dict[str, str]]] = {}

    def _lookup(self, root: Path, table: str, key: str) -> dict[str, dict[str, str]]:
        path = root / table
        if path not in self._lookups:
            if not path.is_file():
                raise DataError(
                    f"{path}: needed to find MuchoMusic audio (as the official code does); put the "
                    f"source dataset's metadata CSV there"
                )
            self._lookups[path] = {str(r[key]): r for r in read_records(path)}
        return self._lookups[path]

    def _audio(self, record: dict[str, Any], root: Path | None, where: str) -> Path | None:
        if "audio_path" in record:  # the official prompts file
            return self.resolve(str(record["audio_path"]), root)
        if root is None:  # scoring a CSV of outputs: the audio is not needed (nor findable)
            return None
        ident = str(record["dataset_identifier"]).removesuffix(".json")
        if record["dataset"] == "sdd":
            row = self._lookup(root, "sdd/song_describer.csv", "track_id").get(str(int(ident)))
            if row is None:
                raise DataError(f"{where}: track {ident} is not in sdd/song_describer.csv")
            return root / "sdd" / "audio" / row["path"].replace(".mp3", ".2min.mp3")
        ytid = "_".join(ident.split("_")[:-1])
        row = self._lookup(root, "musiccaps/musiccaps-public.csv", "ytid").get(ytid)
        if row is None:
            raise DataError(f"{where}: clip {ytid} is not in musiccaps/musiccaps-public.csv")
        start, end = int(float(row["start_s"])), int(float(row["end_s"]))
        return root / "musiccaps" / "audio" / f"[{ytid}]-[{start}-{end}].wav"

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        if "answers" in record:  # prepare_prompts.py output: options already shuffled
            options = [str(a) for a in record["answers"]]
            correct = list(record["answer_orders"]).index(0)
            reasoning, knowledge = record.get("reasoning"), record.get("knowledge")
        else:
            original = [record["correct_answer"]] + [
                record[_DISTRACTORS[d]] for d in self.distractors
            ]
            order = list(range(len(original)))
            random.Random(f"{self.seed}:{index}").shuffle(order)
            options = [str(original[i]) for i in order]
            correct = order.index(0)
            reasoning, knowledge = record.get("music_reasoning"), record.get("music_knowledge")
        audio = self._audio(record, root, where)
        return BenchmarkItem(
            id=str(index),
            audio=[audio] if audio is not None else [],
            messages=self.prompt.render(_question(record), options, 1),
            reference=options[correct],
            choices=options,
            answer_index=correct,
            meta={
                "dataset": record.get("dataset"),
                "genre": record.get("genre") or None,
                "reasoning": _labels(reasoning),
                "knowledge": _labels(knowledge),
            },
            raw=record,
        )

    def official_correct(self, item: BenchmarkItem, prediction: str) -> bool | None:
        assert item.answer_index is not None
        return muchomusic_official(prediction, item.choices, item.answer_index, prefix=self.prefix)
