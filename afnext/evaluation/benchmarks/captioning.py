"""Audio captioning sets scored by CIDEr-D, BLEU-1..4 and ROUGE-L (:mod:`afnext.evaluation.metrics.captions`).

* :class:`AudioCaps`: the release's CSV (``test.csv``: ``audiocap_id, youtube_id, start_time, caption``, one row
  per caption, five per test clip). The clips are not in the release (YouTube); where they lie is the
  ``audio`` pattern, formatted with the row's fields (default ``audio/{youtube_id}.wav``).
* :class:`Clotho`: ``clotho_captions_evaluation.csv`` (``file_name, caption_1 .. caption_5``) and the audio in
  ``evaluation/<file_name>``.

METEOR, SPICE, SPIDEr and FENSE are reported under ``unavailable`` with the reason, never as a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from afnext.errors import ConfigError, DataError
from afnext.evaluation.benchmarks.base import SOUND, BaseBenchmark, BenchmarkItem
from afnext.evaluation.metrics.captions import caption_scores
from afnext.evaluation.metrics.judged import Judge

__all__ = ["AudioCaps", "CaptioningBenchmark", "Clotho"]


class CaptioningBenchmark(BaseBenchmark):
    """Shared scoring of captioning sets."""

    metric = "CIDEr-D"
    default_prompt: ClassVar[dict[str, Any]] = {
        "user_open": SOUND + "\nGenerate a caption for the input audio."
    }

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Caption metrics over the items with a prediction (their final answers)."""
        chosen, texts = self.predicted(items, predictions)
        if not chosen:
            raise DataError(f"{self.name}: no prediction matches an item id")
        return {
            "benchmark": self.name,
            "metric": "CIDEr-D, BLEU-1..4, ROUGE-L (pycocoevalcap scales)",
            "items": len(items),
            "scored": len(chosen),
            "skipped": len(items) - len(chosen),
            **caption_scores([list(i.reference) for i in chosen], texts),
        }


class AudioCaps(CaptioningBenchmark):
    """AudioCaps adapter (one item per clip, its captions as references).

    Args:
        audio: Where a clip's audio lies under the root, formatted with the CSV row's fields.
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "audiocaps"
    default_file = "test.csv"

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        audio: str = "audio/{youtube_id}.wav",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.audio = audio

    def items(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        root: str | Path | None = None,
        source: str = "records",
    ) -> list[BenchmarkItem]:
        """Rows grouped by ``youtube_id`` (in order of first appearance), captions pooled.

        Raises:
            DataError: A row lacks a field, or one clip id appears with two start times.
        """
        base = Path(root) if root is not None else None
        clips: dict[str, BenchmarkItem] = {}
        for number, row in enumerate(records, 1):
            where = f"{source} row {number}"
            try:
                clip, start, caption = (
                    str(row["youtube_id"]),
                    str(row["start_time"]),
                    row["caption"],
                )
                path = self.audio.format(**row)
            except KeyError as exc:
                raise DataError(f"{where}: no field {exc} (fields: {sorted(row)})") from exc
            item = clips.get(clip)
            if item is None:
                clips[clip] = BenchmarkItem(
                    id=clip,
                    audio=[self.resolve(path, base)],
                    messages=self.prompt.render("", (), 1),
                    reference=[caption],
                    meta={"start_time": start},
                    raw={"youtube_id": clip, "start_time": start, "rows": [dict(row)]},
                )
            elif item.meta["start_time"] != start:
                raise DataError(
                    f"{where}: clip {clip} appears with start times {item.meta['start_time']} "
                    f"and {start}"
                )
            else:
                assert isinstance(item.reference, list)
                item.reference.append(caption)
                item.raw["rows"].append(dict(row))
        return list(clips.values())


class Clotho(CaptioningBenchmark):
    """Clotho adapter (evaluation split by default).

    Args:
        audio_dir: Folder of the split's audio under the root.
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "clotho"
    default_file = "clotho_captions_evaluation.csv"

    def __init__(
        self, root: str | Path | None = None, *, audio_dir: str = "evaluation", **kwargs: Any
    ) -> None:
        super().__init__(root, **kwargs)
        if not audio_dir:
            raise ConfigError(f"benchmark {self.name}.audio_dir must name the audio folder")
        self.audio_dir = audio_dir

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        name = record["file_name"]
        captions = [record[k] for k in sorted(record) if k.startswith("caption_") and record[k]]
        if not captions:
            raise DataError(f"{where}: {name} has no caption_N field")
        return BenchmarkItem(
            id=name,
            audio=[self.resolve(str(Path(self.audio_dir) / name), root)],
            messages=self.prompt.render("", (), 1),
            reference=captions,
            raw=record,
        )
