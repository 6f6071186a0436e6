"""Corpus BLEU for speech translation (CoVoST 2), computed by sacrebleu.

The tokenizer is sacrebleu's: ``13a`` (its default, what CoVoST 2 reports for most targets), ``zh`` for
Chinese targets, ``intl``, ``char`` and ``none``. ``ja-mecab`` (Japanese targets) and ``ko-mecab`` need
``pip install "sacrebleu[ja]"`` / ``"sacrebleu[ko]"``, which afnext does not depend on; asking for them without
those extras is a :class:`~afnext.errors.ConfigError` that says so. ``spm`` / ``flores*`` download a
sentencepiece model on first use and are not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from afnext.errors import ConfigError, DataError

__all__ = ["BLEU_TOKENIZERS", "bleu_metric", "corpus_bleu"]

BLEU_TOKENIZERS = ("13a", "zh", "intl", "char", "none", "ja-mecab", "ko-mecab")
"""Tokenizers accepted (``ja-mecab`` / ``ko-mecab`` only with sacrebleu's ``ja`` / ``ko`` extras installed)."""


def bleu_metric(tokenize: str = "13a", *, lowercase: bool = False) -> Any:
    """A ``sacrebleu.metrics.BLEU`` with this tokenizer, or a ConfigError saying what is missing.

    Raises:
        ConfigError: The tokenizer is unknown or offered-but-not-installed (the message names the extra).
    """
    from sacrebleu.metrics import BLEU

    if tokenize not in BLEU_TOKENIZERS:
        raise ConfigError(
            f"BLEU tokenize={tokenize!r} is not offered; use one of {list(BLEU_TOKENIZERS)}"
        )
    try:
        return BLEU(tokenize=tokenize, lowercase=lowercase)
    except (RuntimeError, ImportError) as exc:  # sacrebleu's message names the pip extra
        raise ConfigError(
            f"BLEU tokenize={tokenize!r} needs an extra dependency: {exc}".strip()
        ) from exc


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> dict[str, Any]:
    """sacrebleu's corpus BLEU.

    Args:
        hypotheses: One translation per item.
        references: One reference per item, or a list of references per item (every item with the same count).
        tokenize: sacrebleu tokenizer (see the module docstring).
        lowercase: Case-insensitive BLEU.

    Returns:
        ``{"bleu", "precisions", "bp", "hyp_len", "ref_len", "signature", "items"}``; ``bleu`` on sacrebleu's
        0-100 scale.

    Raises:
        DataError: Lengths disagree, or items have different numbers of references.
    """
    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference entries: give one per item"
        )
    per_item = [[r] if isinstance(r, str) else list(r) for r in references]
    counts = {len(r) for r in per_item}
    if len(counts) > 1 or 0 in counts:
        raise DataError(
            f"items have {sorted(counts)} references; sacrebleu needs the same number (>= 1) for every item"
        )
    streams = [list(column) for column in zip(*per_item)] if per_item else [[]]
    metric = bleu_metric(tokenize, lowercase=lowercase)
    score = metric.corpus_score(list(hypotheses), streams)
    return {
        "bleu": score.score,
        "precisions": list(score.precisions),
        "bp": score.bp,
        "hyp_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": str(metric.get_signature()),
        "items": len(hypotheses),
    }
