"""LibriSpeech test-clean / test-other in the original release layout, scored by WER.

``<root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` holds one line per utterance,
``<utterance id> <TRANSCRIPT>``, beside ``<utterance id>.flac`` (``root`` may also be the ``LibriSpeech`` folder
itself). WER is corpus-level after Whisper's English normaliser on both sides
(:func:`afnext.evaluation.metrics.asr.wer`), on the final answer of each output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import SOUND, BaseBenchmark, BenchmarkItem
from afnext.evaluation.metrics.asr import wer
from afnext.evaluation.metrics.judged import Judge

__all__ = ["LibriSpeech"]


class LibriSpeech(BaseBenchmark):
    """LibriSpeech adapter.

    Args:
        subset: ``test-clean`` or ``test-other`` (any subset folder of the release).
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "librispeech_test_clean"
    metric = "WER"
    default_prompt: ClassVar[dict[str, Any]] = {
        "user_open": SOUND + "\nTranscribe the input speech."
    }

    def __init__(
        self, root: str | Path | None = None, *, subset: str = "test-clean", **kwargs: Any
    ):
        super().__init__(root, **kwargs)
        self.subset = subset

    def folder(self, root: str | Path | None = None) -> Path:
        """The subset's folder under the root.

        Raises:
            DataError: Neither ``root/LibriSpeech/<subset>`` nor ``root/<subset>`` exists.
        """
        base = self._root(root)
        for candidate in (base / "LibriSpeech" / self.subset, base / self.subset):
            if candidate.is_dir():
                return candidate
        raise DataError(
            f"{base}: no LibriSpeech/{self.subset} folder (nor {self.subset}); set benchmark.root to the "
            f"folder holding the extracted release"
        )

    def read(self, root: str | Path | None = None) -> list[BenchmarkItem]:
        """One item per transcript line, audio ``<utterance id>.flac`` beside the transcript."""
        items = []
        for transcript in sorted(self.folder(root).rglob("*.trans.txt")):
            lines = transcript.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                parts = line.strip().split(" ", 1)
                if len(parts) != 2:
                    raise DataError(
                        f"{transcript}:{number}: expected '<utterance id> <transcript>'"
                    )
                utterance, text = parts
                items.append(
                    BenchmarkItem(
                        id=utterance,
                        audio=[transcript.parent / f"{utterance}.flac"],
                        messages=self.prompt.render("", (), 1),
                        reference=text,
                        meta={"speaker": utterance.split("-")[0]},
                        raw={"id": utterance, "transcript": text, "file": str(transcript)},
                    )
                )
        if not items:
            raise DataError(f"{self.folder(root)}: no *.trans.txt transcripts found")
        return items

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Corpus WER (percent) over the utterances with a prediction."""
        chosen, texts = self.predicted(items, predictions)
        if not chosen:
            raise DataError(f"{self.name}: no prediction matches an utterance id")
        return {
            "benchmark": self.name,
            "metric": "WER (percent, Whisper English normaliser, corpus level)",
            "items": len(items),
            "scored": len(chosen),
            "skipped": len(items) - len(chosen),
            **wer([str(i.reference) for i in chosen], texts),
        }
