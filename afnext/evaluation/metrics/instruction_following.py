"""MMAU-Pro's instruction-following questions: does a response meet its constraint?

Each such question names one constraint (``task_identifier``, e.g. ``"Number Words (at least)"``) and its
arguments (``kwargs``, e.g. ``{"N": 50}``). The rules are those of NVIDIA's NeMo-Skills MMAU-Pro evaluator
(``nemo_skills/evaluation/evaluator/mmau_pro.py``, the audio instruction-following checks), re-implemented here
decision for decision, quirks included, so the success rate is comparable with that pipeline's:

* the response is stripped first; an empty response fails;
* words are whitespace-separated pieces; sentences the non-blank pieces between runs of ``.``, ``!``, ``?``;
  paragraphs the non-blank pieces between ``***``; bullets lines starting with ``*`` and a space; highlighted
  sections ``*text*``; placeholders ``[text]``; a title ``<<text>>``; capital words the words ``str.isupper``
  holds for;
* keyword lists are one string split at ``", "``; keyword checks compare lower-cased text (``Keyword
  Frequency`` counts whole-word matches);
* a missing argument takes the evaluator's default (``N``: 0, ``N1``: 0, ``N2``: 999, strings: empty), and an
  unknown constraint fails;
* a null argument stays null, as the evaluator reads it from the release's struct column: an ``==`` check with it
  is false; any other use of it (a comparison, a keyword) is a :class:`~afnext.errors.DataError` naming the
  constraint and its arguments, where the evaluator stops with a Python error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from afnext.errors import DataError

__all__ = ["CONSTRAINTS", "follows_instruction"]


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str) -> int:
    return sum(1 for piece in re.split(r"[.!?]+", text.strip()) if piece.strip())


def _paragraphs(text: str) -> int:
    return sum(1 for piece in text.split("***") if piece.strip())


def _capital_words(text: str) -> int:
    return sum(1 for word in text.split() if word.isupper())


def _letters(text: str, keep_spaces: bool = False) -> str:
    """Lower-cased ASCII letters of ``text`` (and spaces, with ``keep_spaces``), nothing else."""
    return re.sub(r"[^a-zA-Z ]" if keep_spaces else r"[^a-zA-Z]", "", text).lower()


def _sections(text: str, count: int, splitter: str) -> bool:
    pieces = re.split(rf"\s*{re.escape(splitter)}\s*", text.strip())
    return sum(1 for piece in pieces if piece.strip()) == count


def _two_responses(text: str) -> bool:
    parts = text.split("******")
    return len(parts) == 2 and parts[0].lower().strip() != parts[1].lower().strip()


def _between(value: int, args: Mapping[str, Any]) -> bool:
    return _arg(args, "N1", 0) <= value <= _arg(args, "N2", 999)


def _listed(args: Mapping[str, Any], key: str) -> list[str]:
    """A keyword-list argument: one string split at ``", "`` (as released), or a list as it is."""
    value = _arg(args, key, "")
    return [str(v) for v in value] if isinstance(value, list) else value.split(", ")


def _arg(args: Mapping[str, Any], key: str, default: Any) -> Any:
    """``args[key]`` (null stays null, as in the reference), or ``default`` when the key is absent."""
    return args.get(key, default)


Check = Callable[[str, Mapping[str, Any], Mapping[str, Any]], bool]

CONSTRAINTS: dict[str, Check] = {
    "Include Keywords": lambda r, a, _: all(k.lower() in r.lower() for k in _listed(a, "keywords")),
    "Keyword Frequency": lambda r, a, _: (
        len(re.findall(r"\b" + re.escape(_arg(a, "keyword", "").lower()) + r"\b", r.lower()))
        == _arg(a, "N", 0)
    ),
    "Forbidden Words": lambda r, a, _: (
        not any(w.lower() in r.lower() for w in _listed(a, "forbidden_words"))
    ),
    "Number Paragraphs": lambda r, a, _: _paragraphs(r) == _arg(a, "N", 0),
    "Number Words (at least)": lambda r, a, _: _words(r) >= _arg(a, "N", 0),
    "Number Words (at most)": lambda r, a, _: _words(r) <= _arg(a, "N", 0),
    "Number Words (range)": lambda r, a, _: _between(_words(r), a),
    "Number Sentences (at least)": lambda r, a, _: _sentences(r) >= _arg(a, "N", 0),
    "Number Sentences (at most)": lambda r, a, _: _sentences(r) <= _arg(a, "N", 0),
    "Number Sentences (range)": lambda r, a, _: _between(_sentences(r), a),
    "Postscript": lambda r, a, _: _letters(_arg(a, "postscript_marker", "")) in _letters(r),
    "Number Placeholder": lambda r, a, _: len(re.findall(r"\[[^\]]+\]", r)) >= _arg(a, "N", 0),
    "Number Bullets": lambda r, a, _: len(re.findall(r"(?:^|\n)\s*\*\s+", r)) == _arg(a, "N", 0),
    "Title": lambda r, a, _: re.search(r"<<[^>]+>>", r) is not None,
    "Minimum Number Highlighted Section": lambda r, a, _: (
        len(re.findall(r"\*([^*]+)\*", r)) >= _arg(a, "N", 0)
    ),
    "Multiple Sections": lambda r, a, _: _sections(
        r, _arg(a, "N", 0), _arg(a, "section_splitter", "")
    ),
    "Repeat Prompt": lambda r, a, record: (
        r.strip().lower().startswith(record.get("prompt_transcription", "").strip().lower())
    ),
    "Two Responses": lambda r, a, _: _two_responses(r),
    "All Uppercase": lambda r, a, _: r.isupper(),
    "All Lowercase": lambda r, a, _: r.islower(),
    "All-capital Words (at least)": lambda r, a, _: _capital_words(r) >= _arg(a, "N", 0),
    "All-capital Words (at most)": lambda r, a, _: _capital_words(r) <= _arg(a, "N", 0),
    "All-capital Words (range)": lambda r, a, _: _between(_capital_words(r), a),
    "Start Checker": lambda r, a, _: _letters(r, True).startswith(
        _letters(_arg(a, "start_phrase", ""), True)
    ),
    "End Checker": lambda r, a, _: _letters(r, True).endswith(
        _letters(_arg(a, "end_phrase", ""), True)
    ),
    "Quotation": lambda r, a, _: r.strip().startswith('"') and r.strip().endswith('"'),
    "No Commas": lambda r, a, _: "," not in r,
}
"""Each constraint's check: ``(stripped response, kwargs, the question's record) -> bool``."""


def follows_instruction(response: str, record: Mapping[str, Any]) -> bool:
    """Whether ``response`` meets the constraint of an MMAU-Pro instruction-following question.

    Args:
        response: The model's output (stripped here; empty fails).
        record: The question as released: ``task_identifier``, ``kwargs`` (a mapping, or its JSON text),
            and ``prompt_transcription`` for ``Repeat Prompt``.

    Returns:
        ``False`` also for a constraint not in :data:`CONSTRAINTS` (as the reference evaluator does; callers
        count those apart).

    Raises:
        DataError: ``kwargs`` is neither a mapping, null, nor JSON text of one, or an argument the constraint
            uses is null or of the wrong type (where the reference evaluator fails).
    """
    text = response.strip()
    if not text:
        return False
    args = record.get("kwargs")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise DataError(f"kwargs is not JSON: {args[:80]!r} ({exc.msg})") from exc
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise DataError(f"kwargs must be a mapping, got {type(args).__name__}")
    name = str(record.get("task_identifier") or "")
    check = CONSTRAINTS.get(name)
    if check is None:
        return False
    try:
        return bool(check(text, args, record))
    except (TypeError, AttributeError, ValueError, re.error) as exc:  # a null or mistyped argument
        raise DataError(
            f"constraint {name!r} cannot be checked with kwargs {dict(args)!r} ({type(exc).__name__}: {exc}); "
            "the reference evaluator stops on this record too: fix its kwargs"
        ) from exc
