"""The MMAU / MMAR official multiple-choice rule, final-answer extraction, and MMSU's / MuchoMusic's rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afnext.errors import DataError
from afnext.evaluation.benchmarks import MMAU
from afnext.evaluation.metrics import (
    accuracy_summary,
    final_answer_text,
    leading_option,
    mmsu_official,
    muchomusic_official,
    official_mcq,
)


def official_string_match(answer, prediction, choices):
    """Literal transcription of ``string_match`` in Sakshi113/MMAU evaluation.py (identical in
    ddlBoJack/MMAR code/evaluation.py): the oracle the rule is compared against."""

    def tokenize(text):
        return set(re.findall(r"\b\w+\b", text.lower()))

    prediction_tokens = tokenize(prediction)
    answer_tokens = tokenize(answer)
    if not prediction_tokens:
        return False
    incorrect_tokens = set()
    for choice in choices:
        choice_tokens = tokenize(choice)
        if choice_tokens != answer_tokens:
            incorrect_tokens.update(choice_tokens - answer_tokens)
    cond1 = answer_tokens.issubset(prediction_tokens)
    cond2 = prediction_tokens.isdisjoint(incorrect_tokens)
    return cond1 and cond2


def official_extract_responses(model_outputs, answer_options, prefix="The correct answer is:"):
    """Literal transcription of MuchoMusic's ``extract_responses`` (muchomusic_eval/scoring.py)."""
    letter_options = ["A", "B", "C", "D"]
    responses = []
    for i, output in enumerate(model_outputs):
        output = output.split(prefix)[-1].strip()
        response = list(set(letter_options).intersection(output))
        if len(response) == 1:
            responses.append(letter_options.index(response[0]))
        else:
            normalized_output = output.lower().strip()
            normalized_answers = [j.lower().strip() for j in answer_options[i]]
            for i, answer in enumerate(
                normalized_answers
            ):  # shadows the outer i, as the original does
                if answer in normalized_output:
                    responses.append(i)
                    break
            else:
                responses.append(-1)
    return responses


SPEAKER = ["A child", "A woman", "An adult man", "A teenager"]


@pytest.mark.parametrize(
    ("answer", "prediction", "choices", "right"),
    [
        # words the answer shares with wrong choices ("a") never count against it
        ("A woman", "A woman", SPEAKER, True),
        ("A woman", "The speaker is a woman.", SPEAKER, True),
        ("A woman", "a woman, not a child", SPEAKER, False),  # "child" is a distractor token
        ("A woman", "woman", SPEAKER, False),  # the answer's "a" is missing
        ("Dog barking", "barking", ["Dog barking", "Dog howling"], False),
        ("Dog barking", "DOG BARKING!", ["Dog barking", "Dog howling"], True),
        # punctuation is never a token: "3.5" is {"3", "5"}, so "5 seconds" lacks the "3"
        ("3.5 seconds", "5 seconds", ["3.5 seconds", "5 seconds", "2 seconds"], False),
        ("3.5 seconds", "3 5 seconds", ["3.5 seconds", "5 seconds", "2 seconds"], True),
        ("3.5 seconds", "about 3.5s", ["3.5 seconds", "5 seconds", "2 seconds"], False),
        # a choice that tokenises like the answer is no distractor
        ("A woman", "woman, a", ["A woman", "woman, a", "Man"], True),
        # an answer without word tokens is matched by any non-empty, distractor-free prediction
        ("?", "hmm", ["?", "yes"], True),
        ("?", "yes", ["?", "yes"], False),
        # empty (or token-free) predictions are wrong
        ("Man", "", ["Man", "Woman"], False),
        ("Man", "...", ["Man", "Woman"], False),
        # an option letter alone is not the answer's words
        ("Woman", "(B)", ["Man", "Woman"], False),
        ("Café", "café", ["Café", "Bar"], True),
    ],
)
def test_official_rule_on_crafted_cases(answer, prediction, choices, right):
    assert official_mcq(answer, prediction, choices) is right
    assert official_string_match(answer, prediction, choices) is right


WORDS = [
    "a",
    "A",
    "the",
    "dog",
    "Dog",
    "dogs",
    "bark",
    "3",
    "5",
    "3.5",
    "man",
    "woman",
    "x_y",
    "café",
    "B",
]
text = st.lists(st.sampled_from(WORDS), max_size=6).flatmap(
    lambda ws: st.lists(
        st.sampled_from([" ", ", ", "-", ". ", "\n", "!"]), min_size=len(ws), max_size=len(ws)
    ).map(lambda seps: "".join(w + s for w, s in zip(ws, seps)))
)


@settings(max_examples=400, deadline=None)
@given(
    choices=st.lists(text, min_size=1, max_size=5),
    pick=st.integers(0, 4),
    prediction=st.one_of(text, st.text(max_size=20)),
    free_answer=st.one_of(st.none(), st.text(max_size=10)),
)
def test_official_rule_equals_the_official_function(choices, pick, prediction, free_answer):
    answer = choices[pick % len(choices)] if free_answer is None else free_answer
    assert official_mcq(answer, prediction, choices) == official_string_match(
        answer, prediction, choices
    )


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("B", 1),
        ("(B)", 1),
        ("B.", 1),
        ("B) Woman", 1),
        ("B: woman", 1),
        ("[C]", 2),
        ("Answer: B", 1),
        ("The answer is (C) child.", 2),
        ("final answer: A", 0),
        ("A dog barks", None),  # an article, not option A
        ("A.M. radio", None),
        ("b", None),  # lower case is a word
        ("E", None),  # beyond the choices
        ("I think B", None),  # only a leading letter counts
        ("B\n\nBecause it honks.", 1),  # the letter alone on its line
        ("**B**", 1),
        ("**(B)** Woman", 1),
        ("**Answer:** C", 2),
        ("(b)", 1),  # in brackets a lower-case letter is an option
        ("[c] child", 2),
        ("Because it honks.", None),
        ("A\tdog", None),
        ("Bird song", None),
    ],
)
def test_leading_option_letter(text, index):
    assert leading_option(text, ["Man", "Woman", "Child", "Robot"]) == index


def test_final_answer_rescues_a_think_chain_that_mentions_other_options():
    choices = ["Man", "Woman", "Child", "Robot"]
    output = "<think>It could be a man or a child, but the pitch is high.</think>\n(B) Woman"
    assert official_mcq("Woman", output, choices) is False  # the chain names distractors
    assert final_answer_text(output, choices) == "Woman"
    assert official_mcq("Woman", final_answer_text(output, choices), choices) is True
    # a letter alone after the chain maps to its option; text answers go through the rule unchanged
    assert final_answer_text("<think>...</think>B", choices) == "Woman"
    assert final_answer_text("<think>x</think> a woman, I think", choices) == "a woman, I think"
    # an unclosed chain has no final answer (wrong), though the raw rule may accept it
    unclosed = "<think>it is a woman"
    assert final_answer_text(unclosed, choices) == ""
    assert official_mcq("Woman", unclosed, choices) is True
    assert official_mcq("Woman", final_answer_text(unclosed, choices), choices) is False


def test_non_string_prediction_is_a_data_error_naming_it():
    with pytest.raises(DataError, match="prediction must be a string"):
        official_mcq("Man", None, ["Man", "Woman"])


def test_mmau_scores_both_views_and_skips_items_without_prediction():
    records = [
        {
            "id": "1",
            "audio_id": "./a.wav",
            "question": "Who?",
            "choices": SPEAKER,
            "answer": "A woman",
            "task": "sound",
            "category": "Reasoning",
            "sub-category": "Source",
            "difficulty": "easy",
        },
        {
            "id": "2",
            "audio_id": "./b.wav",
            "question": "Who?",
            "choices": SPEAKER,
            "answer": "A child",
            "task": "speech",
            "category": ["Reasoning"],
            "sub-category": None,
            "difficulty": "hard",
        },
        {
            "id": "3",
            "audio_id": "./c.wav",
            "question": "Who?",
            "choices": SPEAKER,
            "answer": "A teenager",
            "task": "speech",
            "category": "Information Extraction",
            "sub-category": "Source",
            "difficulty": "hard",
        },
    ]
    mmau = MMAU()
    items = mmau.items(records)
    predictions = {"1": "<think>not a child</think>(B)", "2": "A child"}
    result = mmau.score(items, predictions)
    assert (result["items"], result["scored"], result["skipped"]) == (3, 2, 1)
    official, final = result["official"], result["final_answer"]
    assert (official["correct"], official["total"], official["accuracy"]) == (1, 2, 50.0)
    assert (final["correct"], final["total"], final["accuracy"]) == (2, 2, 100.0)
    assert official["breakdown"]["task"] == {
        "sound": {"accuracy": 0.0, "correct": 0, "total": 1},
        "speech": {"accuracy": 100.0, "correct": 1, "total": 1},
    }
    assert list(official["breakdown"]["task"]) == ["sound", "speech"]  # the official order
    assert (
        official["breakdown"]["category"]["Reasoning"]["total"] == 2
    )  # ["Reasoning"] counts as Reasoning
    assert official["breakdown"]["sub-category"] == {
        "Source": {"accuracy": 0.0, "correct": 0, "total": 1}
    }


def test_accuracy_summary_orders_groups_and_leaves_uncounted_items_out():
    meta = [{"f": "b"}, {"f": "a"}, {"f": ["a", "b"]}, {"f": None}]
    summary = accuracy_summary([True, False, None, True], meta, ["f"], {"f": ("a", "b", "c")})
    assert (summary["correct"], summary["total"], summary["not_counted"]) == (2, 3, 1)
    assert list(summary["breakdown"]["f"]) == ["a", "b"]  # "c" has no item
    assert summary["breakdown"]["f"]["b"]["correct"] == 1


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("A", True),
        ("A dog barks", True),  # the first character decides (the official quirk)
        ("The answer is A.", True),  # second-to-last character
        ("B", False),
        ("", False),  # counted, wrong
        ("None", False),
        ("I pick a", None),  # unparseable: the script skips it
        ("x", None),
    ],
)
def test_mmsu_official_rule(response, expected):
    assert mmsu_official(response, ["yes", "no", "maybe", ""], "yes") is expected


@settings(max_examples=300, deadline=None)
@given(
    output=st.one_of(text, st.text(alphabet="ABCDabcd rockjazz:.", max_size=25)),
    order=st.permutations([0, 1, 2, 3]),
)
def test_muchomusic_rule_equals_the_official_functions(output, order):
    original = ["Rock", "Jazz", "Pop music", "Folk"]
    options = [original[i] for i in order]
    output = f"The correct answer is: {output}" if len(output) % 2 else output
    (picked,) = official_extract_responses([output], [options])
    assert muchomusic_official(output, options, order.index(0)) == (picked == order.index(0))


def test_muchomusic_rule_crafted():
    options = ["Rock", "Jazz", "Pop", "Folk"]
    assert muchomusic_official("The correct answer is: (B) Jazz", options, 1)
    assert not muchomusic_official("A guitar solo", options, 1)  # the capital A picks option A
    assert muchomusic_official("jazz, clearly", options, 1)
    assert not muchomusic_official("Both A and B", options, 1)  # two letters, then no option text
