"""Scorers for audio-language benchmarks: plain functions, each tested against its reference implementation.

* :mod:`~afnext.evaluation.metrics.mcq`: the MMAU / MMAR official rule, final-answer extraction for Think
  outputs, MMSU's and MuchoMusic's official rules.
* :mod:`~afnext.evaluation.metrics.breakdown`: accuracy in percent, overall and per metadata field.
* :mod:`~afnext.evaluation.metrics.asr`: corpus WER after Whisper's English normaliser (jiwer).
* :mod:`~afnext.evaluation.metrics.translation`: corpus BLEU (sacrebleu).
* :mod:`~afnext.evaluation.metrics.captions`: CIDEr-D, BLEU-1..4, ROUGE-L in pure Python (= pycocoevalcap).
* :mod:`~afnext.evaluation.metrics.judged`: the LLM-judge interface and judged averages.

TACoT answer accuracy and grounding scores live in :func:`afnext.reasoning.metrics.score_outputs`.
"""

from afnext.evaluation.metrics.asr import normalize_english, wer
from afnext.evaluation.metrics.breakdown import accuracy_summary, group_values
from afnext.evaluation.metrics.captions import (
    UNAVAILABLE,
    bleu_n,
    caption_scores,
    caption_tokenize,
    cider_d,
    rouge_l,
)
from afnext.evaluation.metrics.judged import Judge, judged_scores
from afnext.evaluation.metrics.mcq import (
    LETTERS,
    distractor_tokens,
    final_answer_text,
    leading_option,
    mmsu_official,
    muchomusic_official,
    official_mcq,
    word_tokens,
)
from afnext.evaluation.metrics.translation import BLEU_TOKENIZERS, bleu_metric, corpus_bleu

__all__ = [
    "BLEU_TOKENIZERS",
    "LETTERS",
    "UNAVAILABLE",
    "Judge",
    "accuracy_summary",
    "bleu_metric",
    "bleu_n",
    "caption_scores",
    "caption_tokenize",
    "cider_d",
    "corpus_bleu",
    "distractor_tokens",
    "final_answer_text",
    "group_values",
    "judged_scores",
    "leading_option",
    "mmsu_official",
    "muchomusic_official",
    "normalize_english",
    "official_mcq",
    "rouge_l",
    "wer",
    "word_tokens",
]
