"""MMAU-Pro (gamma-lab-umd/MMAU-Pro): closed multiple-choice, open-ended and instruction-following questions.

Released on Hugging Face as ``test.parquet`` with ``id, audio_path`` (a list: some questions have several
audio files, ``data/<uuid>.wav`` relative to the dataset folder), ``question, choices, answer, category`` and,
for instruction following, ``task_identifier, kwargs``; its official script reads the prediction from column
``model_output``. A JSON / JSON-lines export of the same records is read too (``benchmark.file``).

How each kind is scored here, against the official script:

* **closed** (``category`` neither ``open`` nor ``instruction following``, at least two choices): the official
  scorer picks the choice closest to the output by NV-Embed-v2 embeddings (NVIDIA's NeMo-Skills MMAU-Pro judge:
  ``encode`` with an empty instruction and ``max_length=4096`` of the output and of each choice, L2-normalised,
  the highest dot product; right when that choice equals the answer, case-insensitively). That 7B model's own
  code is written for transformers 4.42 (NeMo-Skills installs that version to run it) and its weights cannot be
  downloaded here; it is not run, so closed questions are scored here by the MMAU
  / MMAR token rule, on the raw output (``official``) and on the final answer (``final_answer``); numbers are
  not directly comparable with the embedding scorer's (``notes`` in the results says so). The run's
  ``test.jsonl`` (the release's records with ``model_output``) is what an NV-Embed scorer reads.
* **open**: an LLM judge scores the final answer 1-5 (the official script uses Qwen2.5-7B-Instruct and its
  ``OVERALL`` line); the percent is ``100 * mean / 5``, as the official weighted score divides by 5. The
  ``mmau_pro_nemo_skills`` option asks instead NVIDIA NeMo-Skills' judge question (its ``judge/speechlm``
  prompt: a reasoning, then ``Judgement: Yes`` or ``No``; Qwen2.5-7B-Instruct there) and scores the share of
  Yes, a reply without a verdict counted No, as NeMo-Skills does.
* **instruction following**: each question's constraint (``task_identifier``, ``kwargs``: word / sentence /
  keyword counts, casing, quotes, sections, ...) checked by the rules of NVIDIA's NeMo-Skills MMAU-Pro
  evaluator (:mod:`afnext.evaluation.metrics.instruction_following`), on the raw output (``official``) and on
  the final answer; success rate in percent, with the count per constraint.

``overall`` is the official weighting (closed accuracy, open mean / 5, instruction success, each weighted by
its item count) over the kinds that were scored, which it names; questions left unscored (a failed embedding or
judgment) weigh nothing, as in their own kind's number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import BenchmarkItem
from afnext.evaluation.benchmarks.multiple_choice import FINAL_RULE, MultipleChoiceBenchmark
from afnext.evaluation.metrics.breakdown import accuracy_summary
from afnext.evaluation.metrics.embedding_match import build_matcher
from afnext.evaluation.metrics.instruction_following import CONSTRAINTS, follows_instruction
from afnext.evaluation.metrics.judged import Judge, judge_settings, judged_scores
from afnext.evaluation.metrics.mcq import final_answer_text
from afnext.reasoning.metrics import final_answer

__all__ = ["MMAUPro"]

OPEN, FOLLOW = "open", "instruction following"
IF_RULE = (
    "the constraint named by task_identifier / kwargs, checked as NVIDIA NeMo-Skills' MMAU-Pro evaluator does "
    "(afnext.evaluation.metrics.instruction_following); success rate in percent"
)
EMBEDDING_RULE = (
    "the choice nearest the output by {model} embeddings (cosine similarity), right when it is the answer "
    "(NeMo-Skills' NV-Embed rule)"
)
EMBEDDED_NOTE = (
    "Closed questions matched by {model} embeddings from an OpenAI-compatible server; NeMo-Skills runs "
    "nvidia/NV-Embed-v2's own encode (empty instruction, max_length 4096): numbers agree with it when the "
    "server embeds texts as that does."
)
EMBEDDING_NOTE = (
    "Closed questions: the official MMAU-Pro scorer matches the output to a choice by NV-Embed-v2 embedding "
    "similarity; without benchmark.embedder (an embeddings server) they are scored by the MMAU/MMAR token rule "
    "instead (not directly comparable)."
)


class MMAUPro(MultipleChoiceBenchmark):
    """MMAU-Pro adapter.

    Args:
        judge_scale: The open-question judge's (lowest, highest) score.
        judge_prompt: The judge's prompt template (``{question}``, ``{reference}``, ``{prediction}``; ``None``:
            the generic one for ``judge_scale``).
        judge_verdict: A judge that answers with a word, not a number (``marker``, ``values``, ``otherwise``;
            :meth:`afnext.evaluation.judge.LLMJudge.for_benchmark`): ``conf/benchmark/mmau_pro_nemo_skills.yaml``
            asks NeMo-Skills' Yes / No question and scores Yes 1, No 0, no verdict 0 (``judge_scale`` [0, 1]).
        judge_prompt_file: Read the judge's prompt from this file instead (:func:`read_prompt_file`: a YAML
            prompt config's ``user`` entry, e.g. NeMo-Skills' ``judge/speechlm.yaml``, or a text file). The
            judge's fields are ``question``, ``reference`` and ``prediction``, also named ``expected_answer`` and
            ``generation`` as NeMo-Skills' prompts name them.
        embedder: Score closed questions by embedding similarity instead of the token rule (``base_url``,
            ``model``, ``api_key_env``, ``cache_dir``, ...: an OpenAI-compatible ``/embeddings`` server;
            :class:`~afnext.evaluation.metrics.embedding_match.EmbeddingMatcher`), as the official scorer and
            NeMo-Skills do with ``nvidia/NV-Embed-v2``. ``None`` (or no ``base_url``): the token rule.
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings.
    """

    name = "mmau_pro"
    default_file = "test.parquet"
    prediction_field = "model_output"
    fields = ("category",)
    official_rule = (
        "MMAU/MMAR official string_match on the raw output (stands in for NV-Embed matching)"
    )
    notes = (EMBEDDING_NOTE,)

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        judge_scale: Sequence[float] = (1, 5),
        judge_prompt: str | None = None,
        judge_verdict: Mapping[str, Any] | None = None,
        judge_prompt_file: str | None = None,
        embedder: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.matcher = build_matcher(embedder, where="benchmark.embedder")
        self.judge_scale, self.judge_prompt, self.judge_verdict = judge_settings(
            judge_scale, judge_prompt, judge_verdict, judge_prompt_file
        )

    @staticmethod
    def kind(record: Mapping[str, Any]) -> str:
        """``open``, ``instruction following``, ``closed`` or ``unscorable`` (closed with < 2 choices)."""
        category = str(record.get("category") or "")
        if category in (OPEN, FOLLOW):
            return category
        return "closed" if len(record.get("choices") or []) > 1 else "unscorable"

    def choices_of(self, record: Mapping[str, Any]) -> list[str]:
        return list(record.get("choices") or []) if self.kind(record) == "closed" else []

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        item = super().item(record, root, where, index)
        item.meta["kind"] = self.kind(record)
        return item

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Closed accuracy (two rules), judged open answers, and the official weighted overall.

        Args:
            items: The items.
            predictions: ``{item id: model output}``.
            judge: Scores open answers (``score(items) -> list[float | None]``); without it they are not scored.
        """
        self.unknown_predictions(items, predictions)
        scored = [i for i in items if i.id in predictions]
        for item in scored:
            if not isinstance(predictions[item.id], str):
                raise DataError(f"item {item.id!r}: the prediction must be a string")
        closed = [i for i in scored if i.meta["kind"] == "closed"]
        opened = [i for i in scored if i.meta["kind"] == OPEN]
        follow = [i for i in scored if i.meta["kind"] == FOLLOW]
        unscorable = [i for i in scored if i.meta["kind"] == "unscorable"]
        meta = [i.meta for i in closed]
        if self.matcher is None:
            official = [self.official_correct(i, predictions[i.id]) for i in closed]
            final = [self.final_correct(i, predictions[i.id]) for i in closed]
            rule, notes = self.official_rule, list(self.notes)
        else:
            before = Counter(self.matcher.failures)
            official, final = self._embedding_correct(
                closed,
                [predictions[i.id] for i in closed],
                [final_answer_text(predictions[i.id], i.choices) for i in closed],
            )
            rule = EMBEDDING_RULE.format(model=self.matcher.model)
            notes = [EMBEDDED_NOTE.format(model=self.matcher.model)]
            failed = self.matcher.failures - before  # this call's, not earlier calls'
            if failed:
                notes.append(
                    f"texts whose embedding could not be had, by reason: {dict(failed)}; their questions are "
                    f"not counted ({official.count(None)} on the raw output, {final.count(None)} on the "
                    "final answer: not_counted)"
                )
        judged = judged_scores(
            judge,
            [self._judged_item(i, final_answer(predictions[i.id])) for i in opened],
            scale=self.judge_scale,
            prompt=self.judge_prompt,
            verdict=self.judge_verdict,
        )
        following = {
            view: self._following(follow, predictions, final=view == "final_answer")
            for view in ("official", "final_answer")
        }
        result = {
            "benchmark": self.name,
            "metric": "accuracy (percent); open: judge mean / max x 100; instruction following: success rate",
            "items": len(items),
            "scored": len(scored),
            "skipped": len(items) - len(scored),
            "official": {"rule": rule, **accuracy_summary(official, meta, self.fields)},
            "final_answer": {
                "rule": FINAL_RULE if self.matcher is None else f"{rule}, on the final answer",
                **accuracy_summary(final, meta, self.fields),
            },
            "open": {k: v for k, v in judged.items() if k != "per_item"},
            "instruction_following": {
                "rule": IF_RULE,
                "items": len(follow),
                **following["official"],
                "final_answer": following["final_answer"],
            },
            "unscorable": len(unscorable),
            "notes": notes,
        }
        result["overall"] = {
            view: self._overall(
                result[view]["correct"], result[view]["total"], judged, following[view]
            )
            for view in ("official", "final_answer")
        }
        return result

    def _embedding_correct(
        self, items: Sequence[BenchmarkItem], *views: Sequence[str]
    ) -> list[list[bool | None]]:
        """Closed questions by embedding similarity, for each view of the outputs (raw, final answer; embedded
        in one pass, each distinct text once): the choice nearest the (stripped) output is right when it equals
        the answer, stripped and lower-cased; an empty output is wrong; ``None`` where an embedding could not
        be had."""
        assert self.matcher is not None
        texts = [[o.strip() for o in outputs] for outputs in views]
        asked = [(t, i.choices) for view in texts for t, i in zip(view, items) if t]
        picks = iter(self.matcher.match(asked))
        out: list[list[bool | None]] = []
        for view in texts:
            marks: list[bool | None] = []
            for text, item in zip(view, items):
                pick = next(picks) if text else None
                if not text:
                    marks.append(False)
                elif pick is None:
                    marks.append(None)
                else:
                    answer = str(item.reference).strip().lower()
                    marks.append(item.choices[pick].strip().lower() == answer)
            out.append(marks)
        return out

    @staticmethod
    def _judged_item(item: BenchmarkItem, answer: str) -> dict[str, str]:
        """The judge's fields for one open question (with NeMo-Skills' names for its prompts too)."""
        question, reference = str(item.raw.get("question", "")), str(item.reference)
        return {
            "question": question,
            "reference": reference,
            "prediction": answer,
            "expected_answer": reference,
            "generation": answer,
        }

    @staticmethod
    def _following(
        items: Sequence[BenchmarkItem], predictions: Mapping[str, str], *, final: bool
    ) -> dict[str, Any]:
        """Success rate of the instruction-following items, on the raw output or on the final answer, with
        the count per constraint (``unknown_constraints``: identifiers the rules do not know, counted wrong)."""
        per: dict[str, dict[str, int]] = {}
        correct = unknown = 0
        for item in items:
            output = predictions[item.id]
            try:
                ok = follows_instruction(final_answer(output) if final else output, item.raw)
            except DataError as exc:
                raise DataError(f"item {item.id!r}: {exc}") from exc
            name = str(item.raw.get("task_identifier") or "")
            unknown += name not in CONSTRAINTS
            group = per.setdefault(name, {"correct": 0, "total": 0})
            group["correct"] += ok
            group["total"] += 1
            correct += ok
        return {
            "score": 100.0 * correct / len(items) if items else None,
            "correct": correct,
            "total": len(items),
            "unknown_constraints": unknown,
            "by_constraint": dict(sorted(per.items())),
        }

    @staticmethod
    def _overall(
        closed_correct: int,
        closed: int,
        judged: Mapping[str, Any],
        following: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The three kinds' scores weighted by the items each scored (closed questions counted, open answers
        judged, instruction items checked; ``parts`` names the kinds with any)."""
        points, weight, parts = float(closed_correct), closed, ["closed"] if closed else []
        if judged.get("score") is not None and judged.get("judged"):
            points += judged["score"] / 100.0 * judged["judged"]
            weight += judged["judged"]
            parts.append("open")
        if following["total"]:
            points += following["correct"]
            weight += following["total"]
            parts.append("instruction_following")
        return {"score": 100.0 * points / weight if weight else None, "parts": parts}
