"""Question answering over an AF3-style manifest: batched greedy answers, accuracy, and chance.

Unlike the official AF3 script (one sample at a time), samples are answered in batches with left padding.
A sample's prompt is its conversation up to the first ``gpt`` turn; its reference is the line's ``answer``
(else that turn's text). Multiple-choice lines (``choices``) are scored by the option the free-text answer
picks (afnext.reasoning.metrics), so think-mode outputs are parsed like reasoning models answer. Chance is
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

import torch

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


@torch.no_grad()
def answer_questions(
    model: Any,
    processor: Any,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    **generate_kwargs: Any,
) -> list[str]:
    """Greedy (or ``generate_kwargs``) answers for prompt rows from :func:`read_qa_manifest`."""
    model.eval()
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = processor(
            [r["messages"] for r in chunk],
            audio=[r["sounds"] for r in chunk],
            padding_side="left",
            add_generation_prompt=True,
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        generate_kwargs.setdefault("do_sample", False)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, **generate_kwargs)
        answers += processor.batch_decode(out, prompt_length=batch["input_ids"].shape[1])
    return [a.strip() for a in answers]


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
    """Answer every question of ``manifest`` and score the answers.

    Args:
        model: An :class:`afnext.model.AudioLanguageModel`.
        manifest: AF3-style JSONL (``afnext data build`` output, or any with ``conversations``).
        processor: Defaults to ``AudioProcessor.from_model(model)``.
        batch_size: Samples per ``generate`` call.
        max_new_tokens: Longest answer.
        limit: Score only the first ``limit`` lines.
    """
    from afnext.data.processor import AudioProcessor
    from afnext.reasoning.metrics import answer_correct, final_answer

    processor = processor or AudioProcessor.from_model(model, max_seconds=None)
    rows = read_qa_manifest(manifest, limit)
    if not rows:
        raise InputError(f"{manifest}: no questions to evaluate")
    answers = answer_questions(
        model, processor, rows, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    predictions = []
    per_type: dict[str, list[bool]] = {}
    for row, answer in zip(rows, answers):
        correct = answer_correct(
            final_answer(answer), final_answer(row["reference"]), row["choices"]
        )
        per_type.setdefault(row["question_type"], []).append(correct)
        predictions.append(
            {
                "id": row["id"],
                "sound": row["sounds"][0] if row["sounds"] else None,
                "question": row["question"],
                "prediction": answer,
                "reference": row["reference"],
                "correct": correct,
            }
        )
    return QAResult(
        accuracy=sum(p["correct"] for p in predictions) / len(predictions),
        chance=chance_of(rows),
        count=len(predictions),
        by_type={k: sum(v) / len(v) for k, v in sorted(per_type.items())},
        predictions=predictions,
    )
