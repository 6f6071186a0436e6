"""WER, BLEU and caption metrics against their reference implementations; judged averages."""

from __future__ import annotations

import importlib.util
import random

import jiwer
import pytest
import sacrebleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from afnext.errors import ConfigError, DataError
from afnext.evaluation.metrics import (
    UNAVAILABLE,
    bleu_n,
    caption_scores,
    caption_tokenize,
    cider_d,
    corpus_bleu,
    judged_scores,
    normalize_english,
    rouge_l,
    wer,
)

TOL = 1e-9  # absolute; the implementations do the same float operations in the same order

VOCAB = [
    "a",
    "dog",
    "barks",
    "loudly",
    "while",
    "the",
    "car",
    "passes",
    "by",
    "and",
    "rain",
    "falls",
    "on",
    "roof",
    "two",
    "men",
    "talk",
]


def _sentence(rng: random.Random, low: int = 0, high: int = 12) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(low, high)))


def test_wer_equals_jiwer_on_normalised_text():
    refs = ["Mr. Smith has 2 dogs.", "HELLO, world!", "the colour of the sky", "uh twenty five"]
    hyps = ["mister smith has two dog", "hello word world", "the color of sky", "25"]
    result = wer(refs, hyps)
    normalised = jiwer.process_words(
        [normalize_english(r) for r in refs], [normalize_english(h) for h in hyps]
    )
    assert result["wer"] == pytest.approx(100 * normalised.wer, abs=TOL)
    assert (
        result["errors"] == normalised.substitutions + normalised.deletions + normalised.insertions
    )
    assert result["reference_words"] == sum(len(normalize_english(r).split()) for r in refs)
    # normalisation removes case / punctuation / spelling differences
    assert wer(["Hello, World!"], ["hello world"])["wer"] == 0.0
    assert wer(["Hello, World!"], ["hello world"], normalize=False)["wer"] > 0


def test_wer_is_corpus_level_not_a_mean_of_utterances():
    refs, hyps = ["a b c d e f g h i j", "k"], ["a b c d e f g h i j", "x"]
    assert wer(refs, hyps, normalize=False)["wer"] == pytest.approx(100 / 11)  # 1 error in 11 words
    rng = random.Random(0)
    refs = [_sentence(rng, 1) for _ in range(40)]
    hyps = [_sentence(rng) for _ in range(40)]
    assert wer(refs, hyps)["wer"] == pytest.approx(100 * jiwer.wer(refs, hyps), abs=TOL)


def test_wer_errors_name_the_problem():
    with pytest.raises(DataError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(DataError, match="no word"):
        wer(["uh"], ["x"])  # the normaliser removes the filler


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char"])
def test_bleu_equals_sacrebleu(tokenize):
    rng = random.Random(1)
    hyps = [_sentence(rng).capitalize() + "." for _ in range(30)]
    refs = [_sentence(rng, 1).capitalize() + "." for _ in range(30)]
    ours = corpus_bleu(hyps, refs, tokenize=tokenize)
    theirs = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize)
    assert ours["bleu"] == pytest.approx(theirs.score, abs=TOL)
    assert ours["bp"] == pytest.approx(theirs.bp)
    assert f"tok:{tokenize}" in ours["signature"]


def test_bleu_multiple_references_and_chinese_tokenizer():
    hyps = ["the cat sat on the mat", "a dog"]
    refs = [["the cat sat on a mat", "a cat sat on the mat"], ["a dog runs", "the dog"]]
    ours = corpus_bleu(hyps, refs)
    theirs = sacrebleu.corpus_bleu(hyps, [list(column) for column in zip(*refs)])
    assert ours["bleu"] == pytest.approx(theirs.score, abs=TOL)
    zh = corpus_bleu(["今天天气很好"], ["今天天气不错"], tokenize="zh")
    assert zh["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(["今天天气很好"], [["今天天气不错"]], tokenize="zh").score, abs=TOL
    )
    with pytest.raises(DataError, match="same number"):
        corpus_bleu(["a", "b"], [["a"], ["b", "c"]])


def test_bleu_tokenizers_that_cannot_run_are_config_errors():
    with pytest.raises(ConfigError, match="not offered"):
        corpus_bleu(["a"], ["a"], tokenize="spm")
    if importlib.util.find_spec("MeCab") is None:
        with pytest.raises(ConfigError, match=r"sacrebleu\[ja\]"):
            corpus_bleu(["a"], ["a"], tokenize="ja-mecab")


def _caption_set(seed: int, items: int = 25) -> tuple[list[list[str]], list[str]]:
    rng = random.Random(seed)
    refs = [[_sentence(rng, 1) for _ in range(rng.randint(1, 5))] for _ in range(items)]
    hyps = [_sentence(rng) for _ in range(items)]
    hyps[0] = refs[0][0]  # an exact match
    hyps[1] = ""  # an empty caption
    hyps[2] = "dog"  # a single word
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_caption_metrics_equal_pycocoevalcap(seed):
    refs, hyps = _caption_set(seed)
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    cider, cider_items = Cider().compute_score(gts, res)
    ours, our_items = cider_d(refs, hyps)
    assert ours == pytest.approx(cider, abs=TOL)
    assert our_items == pytest.approx(list(cider_items), abs=TOL)
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    ours_bleu, ours_bleu_items = bleu_n(refs, hyps)
    assert ours_bleu == pytest.approx(bleu, abs=TOL)
    for k in range(4):
        assert ours_bleu_items[k] == pytest.approx(bleu_items[k], abs=TOL)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    ours_rouge, ours_rouge_items = rouge_l(refs, hyps)
    assert ours_rouge == pytest.approx(rouge, abs=TOL)
    assert ours_rouge_items == pytest.approx(list(rouge_items), abs=TOL)


def test_caption_scores_tokenise_and_report_unavailable_metrics_without_numbers():
    assert (
        caption_tokenize("A dog's bark -- LOUD, then silence!") == "a dogs bark loud then silence"
    )
    refs = [["A dog barks.", "A dog is barking!"], ["Rain falls on a roof."]]
    hyps = ["a dog barks", "rain on the roof"]
    scores = caption_scores(refs, hyps)
    tokenised = [[caption_tokenize(r) for r in rs] for rs in refs]
    assert scores["CIDEr-D"] == pytest.approx(cider_d(tokenised, hyps)[0], abs=TOL)
    assert scores["BLEU-4"] == pytest.approx(bleu_n(tokenised, hyps)[0][3], abs=TOL)
    assert set(scores["unavailable"]) == {"METEOR", "SPICE", "SPIDEr", "FENSE"}
    assert scores["unavailable"] == UNAVAILABLE
    assert "METEOR" not in scores and "SPICE" not in scores
    assert all(isinstance(reason, str) and reason for reason in scores["unavailable"].values())
    with pytest.raises(DataError, match="non-empty list"):
        caption_scores([[]], ["x"])


class FakeJudge:
    def __init__(self, scores):
        self.scores = scores
        self.seen = None

    def score(self, items):
        self.seen = list(items)
        return list(self.scores)


def test_judged_scores_count_failures_and_out_of_scale_values():
    items = [{"question": "q", "reference": "r", "prediction": p} for p in "abcd"]
    judge = FakeJudge([4, None, 11, 2])
    result = judged_scores(judge, items, scale=(1, 10))
    assert judge.seen == items
    assert (result["mean"], result["score"]) == (3.0, 30.0)
    assert (result["judged"], result["failed"], result["out_of_scale"]) == (2, 1, 1)
    assert result["per_item"] == [4.0, None, None, 2.0]
    unscored = judged_scores(None, items, scale=(1, 5))
    assert unscored["score"] is None and "no judge" in unscored["reason"]
    with pytest.raises(DataError, match="3 scores for 4 items"):
        judged_scores(FakeJudge([1, 2, 3]), items, scale=(1, 5))
