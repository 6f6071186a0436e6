"""Scores for TACoT outputs: answer accuracy, span grounding, grounded steps, format validity.

Usable on any model output file::

    python -m afnext.reasoning.metrics predictions.jsonl test.jsonl [--iou 0.5]

``predictions.jsonl`` holds ``{"id": ..., "output": "..."}`` lines (``prediction``, ``response`` or
``text`` are accepted for ``output``); ``test.jsonl`` is a manifest written by ``afnext data build``.

* **accuracy**: the final answer (the text after ``</think>``; the whole text without a chain) against the
  reference. Multiple choice is parsed out of free text (a letter such as ``(B)``, ``answer is B``, or
  the option's words), as reasoning models answer; numbers match within ``tolerance``; yes / no by the
  first yes or no; other open answers when the normalised reference occurs in the prediction.
* **span precision**: share of cited ``<t>`` spans that match a timeline event or word (IoU >= ``iou``).
* **span recall**: share of the reference evidence (the spans the reference chain cites) matched by a
  cited span.
* **span IoU**: mean, over cited spans, of the best IoU with any timeline event or word.
* **grounded steps**: share of chain steps that cite spans, all matching the timeline.
* **format validity**: share of outputs with no validator issue (Think-mode references only require a
  chain).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afnext.errors import DataError, FormatError
from afnext.reasoning.format import (
    THINK_CLOSE,
    THINK_OPEN,
    Span,
    parse_response,
    spans_in,
    validate_response,
)
from afnext.reasoning.generators.template import LETTERS
from afnext.reasoning.grounding import best_iou, reference_spans, step_grounded
from afnext.reasoning.timeline import Timeline

__all__ = [
    "answer_correct",
    "evaluate_files",
    "extract_choice",
    "final_answer",
    "score_outputs",
    "span_scores",
]

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def final_answer(output: str) -> str:
    """The answer part of an output: after the last ``</think>``; empty if a chain never closes."""
    if THINK_CLOSE in output:
        return output.rsplit(THINK_CLOSE, 1)[1].strip()
    if THINK_OPEN in output:
        return ""
    return output.strip()


def _normalise(text: str) -> str:
    text = re.sub(r"[^a-z0-9. ]+", " ", text.lower())
    return " ".join(_ARTICLES_RE.sub(" ", text).split()).strip(" .")


def extract_choice(text: str, choices: Sequence[str]) -> int | None:
    """The option a free-text answer picks, or ``None`` when it picks none (or several).

    Tried in order: an explicit "answer is B" / "answer: (B)"; ``(B)``-style letters (one distinct letter
    picks it, several pick none); a leading bare letter (``B``, ``B.``, ``B) ...``; not the article in ``A melody``); a trailing one (``I'd say
    B.``); the one option whose words the text contains (the longest when one option's words contain
    another's). Letters count only in upper case: a lower-case ``a`` is a word.
    """
    valid = LETTERS[: len(choices)]
    explicit = re.search(rf"(?i:answer)\s*(?:(?i:is)|:)\s*\(?([{valid}])\b\)?", text)
    if explicit:
        return valid.index(explicit.group(1))
    letters = set(re.findall(rf"\(([{valid}])\)", text))
    if len(letters) > 1:
        return None
    if letters:
        return valid.index(letters.pop())
    bare = re.match(rf"\s*([{valid}])(?:[).:](?:\s|$)|\s*$)", text) or re.search(
        rf"(?:^|\s)([{valid}])[.!]?\s*$", text
    )
    if bare:
        return valid.index(bare.group(1))
    said = _normalise(text)
    found = [
        i for i, c in enumerate(choices) if re.search(rf"\b{re.escape(_normalise(c))}\b", said)
    ]
    found = [
        i
        for i in found
        if not any(j != i and _normalise(choices[i]) in _normalise(choices[j]) for j in found)
    ]
    return found[0] if len(found) == 1 else None


def answer_correct(
    prediction: str, reference: str, choices: Sequence[str] = (), *, tolerance: float = 0.5
) -> bool:
    """Whether a predicted final answer matches the reference answer.

    Args:
        prediction: The model's final answer (see :func:`final_answer`).
        reference: The reference answer (``(B) low tone`` for multiple choice).
        choices: The options of a multiple-choice question; empty for open questions.
        tolerance: Numbers (counts, seconds) match when within this much of each other.
    """
    if choices:
        truth = extract_choice(reference, choices)
        if truth is None:
            raise DataError(
                f"reference answer {reference!r} picks none of the options {list(choices)}"
            )
        return extract_choice(prediction, choices) == truth
    ref = _normalise(reference)
    pred = _normalise(prediction)
    ref_number = _NUMBER_RE.match(ref)
    if ref_number:
        pred_number = _NUMBER_RE.search(pred)
        return (
            bool(pred_number)
            and abs(float(pred_number.group()) - float(ref_number.group())) <= tolerance
        )
    if ref in ("yes", "no"):
        said = re.search(r"\b(yes|no)\b", pred)
        return bool(said) and said.group(1) == ref
    return bool(ref) and re.search(rf"\b{re.escape(ref)}\b", pred) is not None


def span_scores(
    cited: Sequence[Span],
    timeline: Timeline,
    evidence: Sequence[tuple[float, float]],
    *,
    iou: float = 0.5,
) -> dict[str, float]:
    """Counts behind span precision / recall / IoU for one output (summed over a file by the caller).

    Returns:
        ``cited``, ``cited_matched``, ``iou_sum``, ``evidence``, ``evidence_matched``.
    """
    references = reference_spans(timeline)
    ious = [best_iou(span, references) for span in cited]
    matched_evidence = sum(
        1 for start, end in evidence if any(span.iou(start, end) >= iou for span in cited)
    )
    return {
        "cited": len(cited),
        "cited_matched": sum(1 for value in ious if value >= iou),
        "iou_sum": sum(ious),
        "evidence": len(evidence),
        "evidence_matched": matched_evidence,
    }


def _score_one(
    output: str, line: Mapping[str, Any], iou: float, tolerance: float
) -> dict[str, float]:
    where = f"manifest line {line.get('id')!r}"
    timeline = Timeline.from_list(line["timeline"], duration=line["duration"], source=where)
    think = line.get("mode", "think") == "think"
    issues = validate_response(output, duration=line["duration"], require_think=think)
    counts: dict[str, float] = {"samples": 1, "valid": float(not issues)}
    counts["correct"] = float(
        answer_correct(
            final_answer(output), line["answer"], line.get("choices") or (), tolerance=tolerance
        )
    )
    evidence = [tuple(e) for e in line.get("evidence") or ()] or [
        (e.onset, e.offset) for e in timeline.of_kind("sound", "music", "speech")
    ]
    counts.update(span_scores(spans_in(output), timeline, evidence, iou=iou))
    try:
        steps = parse_response(output).steps
    except (
        FormatError
    ):  # unreadable structure: no step counts as grounded (validity already scored)
        steps = ()
    references = reference_spans(timeline)
    counts["steps"] = len(steps)
    counts["steps_grounded"] = sum(step_grounded(s, references, iou) for s in steps)
    return counts


def _rates(c: Mapping[str, float]) -> dict[str, float | None]:
    def ratio(num: str, den: str) -> float | None:
        return round(c[num] / c[den], 4) if c.get(den) else None

    return {
        "samples": int(c["samples"]),
        "accuracy": ratio("correct", "samples"),
        "format_validity": ratio("valid", "samples"),
        "span_precision": ratio("cited_matched", "cited"),
        "span_recall": ratio("evidence_matched", "evidence"),
        "span_iou": ratio("iou_sum", "cited"),
        "steps_grounded": ratio("steps_grounded", "steps"),
    }


def score_outputs(
    outputs: Mapping[str, str],
    manifest: Sequence[Mapping[str, Any]],
    *,
    iou: float = 0.5,
    tolerance: float = 0.5,
) -> dict[str, Any]:
    """Score outputs against manifest lines.

    Args:
        outputs: ``{manifest id: model output}``.
        manifest: Manifest lines (as ``afnext data build`` writes them).
        iou: IoU at which a cited span matches.
        tolerance: Numeric answer tolerance.

    Returns:
        ``{"overall": rates, "by_question_type": {type: rates}, "missing": ids without output}``.

    Raises:
        DataError: An output's id is not in the manifest.
    """
    known = {line["id"] for line in manifest}
    unknown = [i for i in outputs if i not in known]
    if unknown:
        raise DataError(
            f"{len(unknown)} outputs have ids not in the manifest (first: {unknown[0]!r})"
        )
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    missing = []
    for line in manifest:
        if line["id"] not in outputs:
            missing.append(line["id"])
            continue
        for key, value in _score_one(outputs[line["id"]], line, iou, tolerance).items():
            totals["overall"][key] += value
            totals[line.get("question_type", "?")][key] += value
    if not totals:
        raise DataError("no output matches a manifest line; check the ids")
    overall = totals.pop("overall")
    return {
        "overall": _rates(overall),
        "by_question_type": {k: _rates(v) for k, v in sorted(totals.items())},
        "missing": len(missing),
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
    return lines


def evaluate_files(
    predictions: str | Path, manifest: str | Path, *, iou: float = 0.5, tolerance: float = 0.5
) -> dict[str, Any]:
    """:func:`score_outputs` on files: a predictions JSONL and a manifest JSONL.

    Raises:
        FormatError: A line is not JSON, or a prediction has no id or output; names the file and line.
    """
    outputs = {}
    for number, line in enumerate(_read_jsonl(Path(predictions)), 1):
        text = next(
            (line[k] for k in ("output", "prediction", "response", "text") if k in line), None
        )
        if "id" not in line or not isinstance(text, str):
            raise FormatError(
                f"{predictions}:{number}: needs 'id' and a string 'output' (or prediction/response/text)"
            )
        outputs[str(line["id"])] = text
    return score_outputs(outputs, _read_jsonl(Path(manifest)), iou=iou, tolerance=tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m afnext.reasoning.metrics PREDICTIONS MANIFEST``: print the scores as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m afnext.reasoning.metrics", description=__doc__.split("\n")[0]
    )
    parser.add_argument("predictions", help="JSONL with id and output per line")
    parser.add_argument("manifest", help="manifest JSONL written by afnext data build")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU at which a cited span matches")
    parser.add_argument("--tolerance", type=float, default=0.5, help="numeric answer tolerance")
    args = parser.parse_args(argv)
    print(
        json.dumps(
            evaluate_files(args.predictions, args.manifest, iou=args.iou, tolerance=args.tolerance),
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
