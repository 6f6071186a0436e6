"""Question answering over a TACoT manifest: batched greedy answers, accuracy, and chance (the demo's score).

Unlike the official AF3 script (one sample at a time), samples are answered in batches by the inference engine,
through the same planning and scoring as ``afnext eval benchmark=tacot`` (:func:`evaluate_manifest`). A
sample's prompt is its conversation up to the first ``gpt`` turn; its reference is the line's ``answer``.
Multiple-choice lines (``choices``) are scored by the option the free-text answer picks
(afnext.reasoning.metrics), so think-mode outputs are parsed like reasoning models answer. Chance is
the mean over samples of ``1 / len(choices)`` for a multiple-choice sample and, for an open one, the accuracy of
the best fixed answer for its question type (the most often right of that type's references, scored by the same
rules: a guesser that knows the question type and the answers' distribution, stricter than a uniform guess).
An open question that names its candidates in its text ("which comes first: the melody or the chirp?") has a
higher chance than that (1/2 here) which this cannot see: give such questions their ``choices``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afnext.errors import DataError, InputError

__all__ = ["QAResult", "answer_questions", "chance_of", "evaluate_manifest", "read_qa_manifest"]


@dataclass
class QAResult:
    """Accuracy of a model on a manifest, with every prediction."""

    accuracy: float
    chance: float | None
    count: int
    by_type: dict[str, float] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "chance": self.chance,
            "count": self.count,
            "by_type": self.by_type,
        }


def read_qa_manifest(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Lines of a JSONL manifest with the prompt messages, audio paths and reference of each.

    Raises:
        DataError: A malformed line (names file and line).
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            turns = item["conversations"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{number}: not an AF3-style manifest line ({exc})") from exc
        first_gpt = next((i for i, t in enumerate(turns) if t.get("from") == "gpt"), None)
        if first_gpt is None:
            raise DataError(f"{path}:{number}: no gpt turn to compare against")
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in turns[:first_gpt]]
        sound = item.get("sound") or []
        sounds = [sound] if isinstance(sound, str) else list(sound)
        rows.append(
            {
                "id": item.get("id", f"{path.name}:{number}"),
                "messages": messages,
                "sounds": [str(s if Path(s).is_absolute() else path.parent / s) for s in sounds],
                "reference": item.get("answer") or turns[first_gpt]["value"],
                "choices": list(item.get("choices") or []),
                "question_type": item.get("question_type", "all"),
                "question": turns[first_gpt - 1]["value"] if first_gpt else "",
            }
        )
        if limit is not None and len(rows) >= limit:
            break
    return rows


def answer_questions(
    model: Any,
    processor: Any,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    **generate_kwargs: Any,
) -> list[str]:
    """Answers for prompt rows from :func:`read_qa_manifest` through the inference engine (greedy unless
    ``generate_kwargs`` say otherwise: :class:`~afnext.inference.generation.GenerationSettings` fields).

    Raises:
        InputError: A row's request failed (names the row and why).
    """
    from afnext.inference.engine import InferenceEngine, Request
    from afnext.inference.generation import GenerationSettings

    engine = InferenceEngine(model, processor, max_batch_size=batch_size)
    settings = GenerationSettings.from_mapping(
        {"max_new_tokens": max_new_tokens}, generate_kwargs, where="answer_questions"
    )
    requests = [Request(r["messages"], r["sounds"], settings, id=str(r["id"])) for r in rows]
    answers = []
    for row, result in zip(rows, engine.generate(requests)):
        if result.error is not None:
            raise InputError(f"question {row['id']!r}: {result.error}")
        answers.append((result.text or "").strip())
    return answers


def chance_of(rows: Sequence[dict[str, Any]]) -> float | None:
    """Chance accuracy of :func:`read_qa_manifest` rows (see the module docstring); None without rows."""
    from afnext.reasoning.metrics import answer_correct, final_answer

    if not rows:
        return None
    total = sum(1.0 / len(r["choices"]) for r in rows if r["choices"])
    open_by_type: dict[str, list[str]] = {}
    for r in rows:
        if not r["choices"]:
            open_by_type.setdefault(r["question_type"], []).append(final_answer(r["reference"]))
    for references in open_by_type.values():
        total += max(
            sum(answer_correct(guess, ref) for ref in references) for guess in set(references)
        )
    return total / len(rows)


def evaluate_manifest(
    model: Any,
    manifest: str | Path,
    *,
    processor: Any = None,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    limit: int | None = None,
) -> QAResult:
    """Answer every question of a TACoT manifest and score the answers as ``afnext eval benchmark=tacot`` does.

    The items come from the TACoT benchmark adapter (the manifest's folder is its root), are planned and
    answered by the same functions as ``afnext eval`` (:mod:`afnext.evaluation.predict`: one inference engine,
    greedy, ``batch_size`` samples per call) and are scored by the adapter. So ``afnext eval benchmark=tacot
    benchmark.root=DIR checkpoint=RUN generation=greedy generation.max_new_tokens=N engine.max_batch_size=B``
    reports the accuracy this returns.

    Args:
        model: An :class:`afnext.model.AudioLanguageModel`.
        manifest: A TACoT split as ``afnext data build`` writes it (``test.jsonl``).
        processor: Defaults to ``AudioProcessor.from_model(model, max_seconds=None)``.
        batch_size: Most samples per ``generate`` call (the engine's ``max_batch_size``).
        max_new_tokens: Longest answer.
        limit: Score only the first ``limit`` lines.

    Raises:
        InputError: The manifest has no questions, or a question's request failed (names it and why).
    """
    from afnext.data.processor import AudioProcessor
    from afnext.evaluation.benchmarks.tacot import TACoT
    from afnext.evaluation.predict import answer_items, plan_items
    from afnext.inference.engine import InferenceEngine
    from afnext.inference.generation import GenerationSettings

    manifest = Path(manifest)
    processor = processor or AudioProcessor.from_model(model, max_seconds=None)
    benchmark = TACoT(manifest.parent, file=manifest.name)
    items = benchmark.read()[:limit] if limit is not None else benchmark.read()
    if not items:
        raise InputError(f"{manifest}: no questions to evaluate")
    engine = InferenceEngine(model, processor, max_batch_size=batch_size)
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    outputs: dict[str, str] = {}
    for batch in plan_items(engine, benchmark.name, items, settings):
        for result in answer_items(engine, batch):
            if result.error is not None:
                raise InputError(f"{manifest}: question {result.id!r}: {result.error}")
            outputs[str(result.id)] = (result.text or "").strip()
    scores = benchmark.score(items, outputs)
    predictions = []
    for item in items:
        alone = benchmark.score(
            [item], {item.id: outputs[item.id]}
        )  # the adapter's rule, item by item
        predictions.append(
            {
                "id": item.id,
                "sound": str(item.audio[0]) if item.audio else None,
                "question": item.messages[-1]["content"],
                "prediction": outputs[item.id],
                "reference": item.reference,
                "correct": alone["overall"]["accuracy"] == 1.0,
            }
        )
    return QAResult(
        accuracy=scores["overall"]["accuracy"],
        chance=chance_of(read_qa_manifest(manifest, limit)),
        count=len(predictions),
        by_type={k: v["accuracy"] for k, v in scores["by_question_type"].items()},
        predictions=predictions,
    )
