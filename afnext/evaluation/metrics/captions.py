"""Caption metrics in pure Python: CIDEr-D, BLEU-1..4 and ROUGE-L, several references per item.

Each metric reproduces the COCO caption evaluation code (pycocoevalcap 1.2: ``cider/cider_scorer.py``,
``bleu/bleu_scorer.py``, ``rouge/rouge.py``) on the same tokenised strings, quirks included:

* **CIDEr-D** (Vedantam et al. 2015; pycocoevalcap's ``Cider`` *is* CIDEr-D): TF-IDF vectors of 1..4-grams with
  document frequencies over the references of the evaluated set, idf = log(#items) - log(max(1, df)), clipped
  hypothesis weights (``min(hyp, ref) * ref``), a Gaussian length penalty with sigma 6, the mean over n, the
  mean over references, times 10. As in pycocoevalcap the "length" in the penalty counts *bigrams* (the
  ``if n == 1`` of ``counts2vec``), and scores are on its scale (0-10, not x100).
* **BLEU-n** (Papineni et al. 2002): corpus BLEU with clipped counts against the per-n-gram maximum over
  references, the "closest" reference length, and pycocoevalcap's smoothing constants (1e-15 / 1e-9).
* **ROUGE-L** (Lin 2004): LCS precision and recall, each maximised over references, F-measure with beta 1.2,
  averaged over items; tokens split on single spaces.

Tokenization (both sides, one documented rule; pycocoevalcap's PTBTokenizer needs Java and is not used): lower
case, apostrophes removed (``dog's`` -> ``dogs``), every other character that is neither a word character nor
whitespace replaced by a space, then split on whitespace. METEOR, SPICE (and so SPIDEr) and FENSE are not
computed; :func:`caption_scores` lists them under ``unavailable`` with the reason, never as a number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from afnext.errors import DataError

__all__ = ["UNAVAILABLE", "bleu_n", "caption_scores", "caption_tokenize", "cider_d", "rouge_l"]

UNAVAILABLE = {
    "METEOR": "not computed: METEOR 1.5 is a Java program with paraphrase tables (pycocoevalcap's Meteor); "
    "afnext computes caption metrics in pure Python",
    "SPICE": "not computed: SPICE needs Java and Stanford CoreNLP models downloaded on first use",
    "SPIDEr": "not computed: SPIDEr is the mean of CIDEr-D and SPICE, and SPICE is not computed",
    "FENSE": "not computed: FENSE needs a Sentence-BERT model and a fluency-error classifier checkpoint "
    "(downloads)",
}
"""Caption metrics left out, each with the reason (what :func:`caption_scores` reports)."""

_APOSTROPHES = re.compile(r"['\u2019]")
_NON_WORD = re.compile(r"[^\w\s]")


def caption_tokenize(text: str) -> str:
    """Lower case, apostrophes removed, other punctuation to spaces, whitespace collapsed (tokens joined by
    single spaces, the input form pycocoevalcap's scorers take)."""
    return " ".join(_NON_WORD.sub(" ", _APOSTROPHES.sub("", text.lower())).split())


def _ngram_counts(words: Sequence[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def _check(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise DataError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference lists: give one per item"
        )
    if not hypotheses:
        raise DataError("no captions to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise DataError(f"item {i}: references must be a non-empty list of strings")


def cider_d(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    *,
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D of tokenised captions (pycocoevalcap ``Cider().compute_score``).

    Args:
        references: Per item, its reference captions (tokens joined by spaces).
        hypotheses: Per item, the candidate caption.
        n: Longest n-gram.
        sigma: Width of the Gaussian length penalty.

    Returns:
        The corpus score (mean over items) and the per-item scores.
    """
    _check(references, hypotheses)
    ref_counts = [[_ngram_counts(r.split(), n) for r in refs] for refs in references]
    doc_freq: dict[tuple[str, ...], float] = {}
    for refs in ref_counts:
        for gram in {g for counts in refs for g in counts}:
            doc_freq[gram] = doc_freq.get(gram, 0.0) + 1.0
    log_items = math.log(float(len(references)))

    def vectorise(counts: dict[tuple[str, ...], int]) -> tuple[list[dict], list[float], int]:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            df = math.log(max(1.0, doc_freq.get(gram, 0.0)))
            k = len(gram) - 1
            vec[k][gram] = float(tf) * (log_items - df)
            norm[k] += vec[k][gram] ** 2
            if k == 1:  # pycocoevalcap counts bigrams as the "length"
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    scores = []
    for hyp, refs in zip(hypotheses, ref_counts):
        vec_h, norm_h, len_h = vectorise(_ngram_counts(hyp.split(), n))
        total = [0.0] * n
        for counts in refs:
            vec_r, norm_r, len_r = vectorise(counts)
            penalty = math.e ** (-(float(len_h - len_r) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(
                    min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_h[k].items()
                )
                if norm_h[k] != 0 and norm_r[k] != 0:
                    val /= norm_h[k] * norm_r[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


def bleu_n(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], *, n: int = 4
) -> tuple[list[float], list[list[float]]]:
    """BLEU-1..n of tokenised captions (pycocoevalcap ``Bleu(n).compute_score``, "closest" reference length).

    Returns:
        The corpus scores ``[BLEU-1, ..., BLEU-n]`` and, per order, the per-item scores.
    """
    _check(references, hypotheses)
    small, tiny = 1e-9, 1e-15
    per_item: list[list[float]] = [[] for _ in range(n)]
    total_guess, total_correct = [0] * n, [0] * n
    total_test, total_ref = 0, 0
    for hyp, refs in zip(hypotheses, references):
        max_counts: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for ref in refs:
            words = ref.split()
            ref_lens.append(len(words))
            for gram, count in _ngram_counts(words, n).items():
                max_counts[gram] = max(max_counts.get(gram, 0), count)
        words = hyp.split()
        test_len = len(words)
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in _ngram_counts(words, n).items():
            correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
        total_test += test_len
        total_ref += ref_len
        bleu = 1.0
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            bleu *= (float(correct[k]) + tiny) / (float(guess[k]) + small)
            per_item[k].append(bleu ** (1.0 / (k + 1)))
        ratio = (test_len + tiny) / (ref_len + small)
        if ratio < 1:
            for k in range(n):
                per_item[k][-1] *= math.exp(1 - 1 / ratio)
    corpus = []
    bleu = 1.0
    for k in range(n):
        bleu *= float(total_correct[k] + tiny) / (total_guess[k] + small)
        corpus.append(bleu ** (1.0 / (k + 1)))
    ratio = (total_test + tiny) / (total_ref + small)
    if ratio < 1:
        corpus = [b * math.exp(1 - 1 / ratio) for b in corpus]
    return corpus, per_item


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], *, beta: float = 1.2
) -> tuple[float, list[float]]:
    """ROUGE-L of tokenised captions (pycocoevalcap ``Rouge().compute_score``).

    Returns:
        The mean over items and the per-item scores.
    """
    _check(references, hypotheses)
    scores = []
    for hyp, refs in zip(hypotheses, references):
        cand = hyp.split(" ")
        precisions, recalls = [], []
        for ref in refs:
            tokens = ref.split(" ")
            common = _lcs(tokens, cand)
            precisions.append(common / float(len(cand)))
            recalls.append(common / float(len(tokens)))
        p, r = max(precisions), max(recalls)
        scores.append((1 + beta**2) * p * r / float(r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return sum(scores) / len(scores), scores


def caption_scores(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], *, tokenize: bool = True
) -> dict[str, Any]:
    """CIDEr-D, BLEU-1..4 and ROUGE-L of a caption set, and the metrics left out with their reasons.

    Args:
        references: Per item, its reference captions.
        hypotheses: Per item, the model caption.
        tokenize: Apply :func:`caption_tokenize` to both sides (False: inputs are already tokenised).

    Returns:
        ``{"CIDEr-D", "BLEU-1", ..., "BLEU-4", "ROUGE-L", "items", "tokenizer", "unavailable"}``; scores on
        pycocoevalcap's scales (CIDEr-D 0-10, the others 0-1).
    """
    if tokenize:
        references = [[caption_tokenize(r) for r in refs] for refs in references]
        hypotheses = [caption_tokenize(h) for h in hypotheses]
    bleus, _ = bleu_n(references, hypotheses)
    return {
        "CIDEr-D": cider_d(references, hypotheses)[0],
        **{f"BLEU-{k + 1}": b for k, b in enumerate(bleus)},
        "ROUGE-L": rouge_l(references, hypotheses)[0],
        "items": len(hypotheses),
        "tokenizer": "lower case, apostrophes removed, punctuation to spaces, whitespace split"
        if tokenize
        else "given",
        "unavailable": dict(UNAVAILABLE),
    }
