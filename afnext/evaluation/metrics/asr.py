"""Word error rate as LibriSpeech numbers are reported: Whisper's English normaliser, then corpus-level WER.

Both sides go through ``whisper_normalizer.english.EnglishTextNormalizer`` (the normaliser of OpenAI's Whisper
paper: lower case, punctuation and fillers removed, spellings and numbers standardised), then jiwer aligns each
pair and the errors are pooled: WER = (substitutions + deletions + insertions) / reference words over the whole
set, not a mean of per-utterance rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from afnext.errors import DataError

__all__ = ["normalize_english", "wer"]


@lru_cache(maxsize=1)
def _normalizer() -> Any:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_english(text: str) -> str:
    """Whisper's English text normaliser (``EnglishTextNormalizer``)."""
    return _normalizer()(text)


def wer(
    references: Sequence[str], hypotheses: Sequence[str], *, normalize: bool = True
) -> dict[str, Any]:
    """Corpus word error rate.

    Args:
        references: Reference transcripts.
        hypotheses: Model transcripts, aligned with ``references``.
        normalize: Apply :func:`normalize_english` to both sides first.

    Returns:
        ``{"wer": percent, "errors", "reference_words", "substitutions", "deletions", "insertions", "hits",
        "utterances"}``.

    Raises:
        DataError: The lists differ in length, or the references hold no word at all.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise DataError(
            f"{len(references)} references but {len(hypotheses)} hypotheses: give one hypothesis per reference"
        )
    if normalize:
        references = [normalize_english(r) for r in references]
        hypotheses = [normalize_english(h) for h in hypotheses]
    words = sum(len(r.split()) for r in references)
    if not words:
        raise DataError("the references hold no word (after normalisation): nothing to score")
    out = jiwer.process_words(list(references), list(hypotheses))
    errors = out.substitutions + out.deletions + out.insertions
    return {
        "wer": 100.0 * out.wer,
        "errors": errors,
        "reference_words": out.hits + out.substitutions + out.deletions,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "hits": out.hits,
        "utterances": len(references),
    }
