"""CoVoST 2 speech translation, scored by sacrebleu corpus BLEU.

The release's per-pair TSV (``covost_v2.<src>_<tgt>.<split>.tsv``, as written by its ``get_covost_splits.py``)
has ``path, sentence, translation, client_id``; ``path`` names a Common Voice clip in the Common Voice
release's ``clips/`` folder. The TSV is read as the CoVoST scripts write and read it (pandas with
``quoting=csv.QUOTE_NONE, escapechar="\\"``: a ``"`` in a sentence is stored as ``\\"``, a backslash as
``\\\\``). BLEU uses sacrebleu's tokenizer ``tokenize`` (``13a`` by default; ``zh`` for Chinese targets;
``ja-mecab`` needs ``pip install "sacrebleu[ja]"``), on the final answer of each output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import SOUND, BaseBenchmark, BenchmarkItem, read_records
from afnext.evaluation.metrics.judged import Judge
from afnext.evaluation.metrics.translation import bleu_metric, corpus_bleu

__all__ = ["CoVoST2"]


class CoVoST2(BaseBenchmark):
    """CoVoST 2 adapter.

    Args:
        clips: Folder of the Common Voice clips under the root.
        source_language: Source language name, for the prompt.
        target_language: Target language name, for the prompt.
        tokenize: sacrebleu tokenizer (checked when the adapter is built).
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "covost2_en_de"
    metric = "BLEU"
    default_file = "covost_v2.en_de.test.tsv"
    default_prompt: ClassVar[dict[str, Any]] = {
        "user_open": SOUND + "\nTranslate the {source_language} speech into {target_language}."
    }

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        clips: str = "clips",
        source_language: str = "English",
        target_language: str = "German",
        tokenize: str = "13a",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        bleu_metric(tokenize)  # a ConfigError now rather than after generation
        self.clips = clips
        self.source_language = source_language
        self.target_language = target_language
        self.tokenize = tokenize

    def load(self, path: str | Path) -> list[dict[str, Any]]:
        """Records of the release's TSV (backslash escapes undone; other suffixes by :func:`read_records`)."""
        return read_records(path, escapechar="\\")

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        clip = record["path"]
        return BenchmarkItem(
            id=clip,
            audio=[self.resolve(str(Path(self.clips) / clip), root)],
            messages=self.prompt.render(
                "",
                (),
                1,
                source_language=self.source_language,
                target_language=self.target_language,
            ),
            reference=record["translation"],
            meta={"client_id": record.get("client_id")},
            raw=record,
        )

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Corpus BLEU over the clips with a prediction."""
        chosen, texts = self.predicted(items, predictions)
        if not chosen:
            raise DataError(f"{self.name}: no prediction matches a clip path")
        return {
            "benchmark": self.name,
            "metric": f"BLEU (sacrebleu, tokenize={self.tokenize})",
            "items": len(items),
            "scored": len(chosen),
            "skipped": len(items) - len(chosen),
            **corpus_bleu(texts, [str(i.reference) for i in chosen], tokenize=self.tokenize),
        }
