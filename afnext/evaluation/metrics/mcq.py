"""Multiple-choice scoring: the MMAU / MMAR official rule, final-answer extraction, MMSU's and MuchoMusic's rules.

**Official MMAU / MMAR rule** (``string_match`` in Sakshi113/MMAU ``evaluation.py``, copied unchanged into
ddlBoJack/MMAR ``code/evaluation.py``): lower-case the texts and take their sets of word tokens
(``re.findall(r"\\b\\w+\\b", text.lower())``: Unicode letters, digits and ``_``; punctuation is never a token, so
``"3.5"`` gives ``{"3", "5"}``). The *distractor tokens* are, for every choice whose token set differs from the
answer's, its tokens minus the answer's tokens, all pooled. A prediction is right iff it has at least one token,
holds every answer token, and holds no distractor token. So words the answer shares with a wrong choice never
count against a prediction, a choice that tokenises like the answer (``"A woman"`` / ``"woman, a"``) is no
distractor, and an answer without word tokens is matched by any non-empty prediction free of distractors.

**Final answer** (AF-Next scores Think outputs this way): the text after the last ``</think>`` (an unclosed
``<think>`` gives the empty answer, which is wrong), via :func:`afnext.reasoning.metrics.final_answer`; when that
text starts with an option letter (``B``, ``(B)``, ``B.``, ``B)``, ``B:``, ``Answer: B``, ``The answer is (B) ...``)
it is replaced by that option's text; the result is scored with the official rule. Only a *leading* letter is
read (upper case: ``A dog barks`` is a sentence, not option A), so the official rule still decides every text
answer; :func:`afnext.reasoning.metrics.extract_choice` also reads letters anywhere and option words, which would
replace the official rule, so it is not used here.

**MMSU** (dingdongwang/MMSU ``mmsu_evaluation.py``) and **MuchoMusic** (mulab-mir/muchomusic
``muchomusic_eval/scoring.py``) have their own rules, transcribed in :func:`mmsu_official` and
:func:`muchomusic_official`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from afnext.errors import DataError
from afnext.reasoning.metrics import final_answer

__all__ = [
    "LETTERS",
    "distractor_tokens",
    "final_answer_text",
    "leading_option",
    "mmsu_official",
    "muchomusic_official",
    "official_mcq",
    "word_tokens",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Option letters, in order."""

_WORD = re.compile(r"\b\w+\b")
# An optional "Answer:" / "The (final|correct) answer is" lead-in, then a letter in parentheses or brackets, or a
# bare letter followed by ")", ".", ":" and a space (or the end), or standing alone.
_LEADING = re.compile(
    r"\s*\*{0,2}(?i:(?:the\s+)?(?:final\s+|correct\s+)?answer(?:\s+is)?\s*:?\s*\*{0,2}\s*)?\*{0,2}"
    r"(?:[(\[]([A-Za-z])[)\]]"  # (B) [B] (b)
    r"|([A-Z])(?:[).:](?=[\s*]|$)|(?=\*)|(?=[ \t]*(?:\n|$))))"  # B. B) B: **B** B alone on its line
)


def word_tokens(text: str) -> set[str]:
    """The official tokenizer: the set of ``\\b\\w+\\b`` matches in the lower-cased text."""
    return set(_WORD.findall(text.lower()))


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"{what} must be a string, got {type(value).__name__} {value!r}; write '' for an empty answer"
        )
    return value


def distractor_tokens(answer: str, choices: Sequence[str]) -> set[str]:
    """Tokens only wrong choices have: for each choice tokenising differently from the answer, its tokens minus
    the answer's (the official ``incorrect_tokens``)."""
    answer_tokens = word_tokens(answer)
    pooled: set[str] = set()
    for choice in choices:
        tokens = word_tokens(_check_text(choice, "a choice"))
        if tokens != answer_tokens:
            pooled |= tokens - answer_tokens
    return pooled


def official_mcq(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """The MMAU / MMAR official rule (argument order as in their ``string_match``).

    Args:
        answer: The reference answer's text.
        prediction: The model output (or the final answer extracted from it).
        choices: All options, the answer among them.

    Returns:
        Whether the prediction is right (see the module docstring).

    Raises:
        DataError: A value is not a string (the official script would crash on it).
    """
    prediction_tokens = word_tokens(_check_text(prediction, "the prediction"))
    answer_tokens = word_tokens(_check_text(answer, "the answer"))
    if not prediction_tokens:
        return False
    return answer_tokens <= prediction_tokens and prediction_tokens.isdisjoint(
        distractor_tokens(answer, choices)
    )


def leading_option(text: str, choices: Sequence[str]) -> int | None:
    """The option a leading letter picks (``B``, ``(B)``, ``B.``, ``B)``, ``Answer: B``, ``**B**``, ``B`` alone on
    the first line), or ``None``.

    A bare letter counts in upper case only (``a`` is a word); in brackets either case does (``(b)``). Only
    letters within the number of choices count.
    """
    match = _LEADING.match(text)
    if match is None:
        return None
    index = LETTERS.index((match.group(1) or match.group(2)).upper())
    return index if index < len(choices) else None


def final_answer_text(output: str, choices: Sequence[str]) -> str:
    """The final answer of an output with a leading option letter replaced by that option's text.

    Args:
        output: A model output, with or without a ``<think>`` chain.
        choices: The options; empty for an open question (no letter is then read).
    """
    answer = final_answer(_check_text(output, "the prediction"))
    index = leading_option(answer, choices) if choices else None
    return choices[index] if index is not None else answer


def mmsu_official(response: str, choices: Sequence[str], answer: str) -> bool | None:
    """MMSU's official rule, transcribed from ``calculate_accuracy_per_task_and_category``.

    The response, stripped and with newlines removed, picks the letter it starts with (``A``-``D``), else the
    letter in its second-to-last character (``"The answer is A."``). An empty response or ``"None"`` is counted
    and wrong. Any other response is *not counted* (the script prints "Wrong format response" and skips it, so it
    leaves the denominator): ``None`` is returned for it.

    Args:
        response: The model's response (the ``response`` field).
        choices: ``choice_a`` ... ``choice_d`` (missing ones as ``""``).
        answer: ``answer_gt``, the text of the right choice.

    Returns:
        True / False when the item counts, ``None`` when the official script skips it.
    """
    predict = _check_text(response, "the response").strip().replace("\n", "")
    letters = "ABCD"
    picked = None
    if predict != "None" and predict:
        if predict[0] in letters:
            picked = predict[0]
        elif len(predict) > 1 and predict[-2] in letters:
            picked = predict[-2]
        else:
            return None
    if picked is None:
        return False
    index = letters.index(picked)
    return index < len(choices) and choices[index] == answer


def muchomusic_official(
    output: str,
    options: Sequence[str],
    correct: int,
    *,
    prefix: str = "The correct answer is:",
    letters: Sequence[str] = ("A", "B", "C", "D"),
) -> bool:
    """MuchoMusic's official rule, transcribed from ``extract_responses`` + ``compare_answers``.

    The text after the last ``prefix`` is kept; if exactly one of the letters occurs in it *as a character*
    anywhere (so the ``A`` of ``"A guitar"`` counts), that letter is the answer; otherwise the first option
    (in the order shown) whose lower-cased text is a substring of the lower-cased output; otherwise none (wrong).

    Args:
        output: The model output.
        options: The options in the order they were shown.
        correct: Index of the right option in ``options``.
        prefix: The prompt's answer lead-in, removed first.
        letters: The option letters of the official script (always four).
    """
    text = _check_text(output, "the prediction").split(prefix)[-1].strip()
    found = set(letters).intersection(text)
    if len(found) == 1:
        return list(letters).index(found.pop()) == correct
    lowered = text.lower().strip()
    for index, option in enumerate(options):
        if option.lower().strip() in lowered:
            return index == correct
    return False
