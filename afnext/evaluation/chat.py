"""Answer a question about audio files with a saved model, streaming the text as it is generated.

The answer comes from the inference engine (:meth:`afnext.inference.engine.InferenceEngine.stream`), the one
that ``afnext eval`` and ``afnext serve`` use.

``afnext chat --checkpoint DIR --audio FILE "question"`` calls :func:`chat`. The reasoning of a Think model
(``<think> ... </think>``) is hidden unless ``think=True``; the final answer is always shown.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from afnext.reasoning.format import THINK_CLOSE, THINK_OPEN

__all__ = ["ThinkFilter", "chat", "load_for_chat"]


class ThinkFilter:
    """Turns a growing generated text into what the terminal should show.

    With ``show_think=False`` the ``<think> ... </think>`` blocks are dropped (a ``[thinking]`` marker is
    printed once instead); a partial ``<think>`` tag at the end is held back until it is complete.
    """

    def __init__(self, show_think: bool) -> None:
        self.show_think = show_think
        self.shown = 0
        self.marked = False

    def visible(self, text: str) -> str:
        if self.show_think:
            out = text
        else:
            out, rest = "", text
            while THINK_OPEN in rest:
                before, after = rest.split(THINK_OPEN, 1)
                out += before
                if THINK_CLOSE not in after:
                    rest = ""
                    break
                rest = after.split(THINK_CLOSE, 1)[1].lstrip("\n")
            out += rest
        for k in range(len(THINK_OPEN) - 1, 0, -1):  # hold back a tag still being generated
            if out.endswith(THINK_OPEN[:k]):
                return out[:-k]
        return out

    def new_text(self, text: str) -> str:
        """The part of ``visible(text)`` not shown yet (and the thinking marker, once)."""
        visible = self.visible(text)
        piece = visible[self.shown :]
        self.shown = max(self.shown, len(visible))
        if not self.show_think and THINK_OPEN in text and not self.marked:
            self.marked = True
            piece = "[thinking] " + piece
        return piece


def load_for_chat(checkpoint: str | Path) -> tuple[Any, Any]:
    """Model and processor from a run, stage or model folder (afnext or transformers AF3 / AF-Next)."""
    from afnext.data.processor import AudioProcessor
    from afnext.interop import resolve_checkpoint
    from afnext.model import AudioLanguageModel

    model = AudioLanguageModel.from_pretrained(resolve_checkpoint(checkpoint))
    model.eval()
    return model, AudioProcessor.from_model(model, max_seconds=None)


def chat(
    checkpoint: str | Path | tuple[Any, Any],
    audio: Sequence[str | Path],
    question: str,
    *,
    think: bool = False,
    system: str | None = None,
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    out: TextIO | None = None,
    settings: Any = None,
) -> str:
    """Answer ``question`` about ``audio``, printing the answer as it is generated.

    Args:
        checkpoint: A folder (run / stage / model) or an already loaded ``(model, processor)``.
        audio: Audio files, in the order their ``<sound>`` placeholders appear (placeholders are added in
            front of the question when it has none).
        question: The user's text.
        think: Show the ``<think>`` reasoning too.
        system: System prompt (default: the processor's).
        max_new_tokens: Longest answer.
        temperature: 0 for greedy decoding, else sampling temperature.
        top_p: Nucleus sampling mass (with ``temperature > 0``).
        repetition_penalty: >1 discourages repeats (the AF-Next cards use 1.2).
        out: Where to stream (default: stdout).
        settings: :class:`~afnext.inference.generation.GenerationSettings` to use instead of the four
            arguments above (``afnext chat --preset think``).

    Returns:
        The full generated text (reasoning included).
    """
    from afnext.inference.engine import InferenceEngine, Request
    from afnext.inference.generation import GenerationSettings

    model, processor = checkpoint if isinstance(checkpoint, tuple) else load_for_chat(checkpoint)
    out = out or sys.stdout
    if "<sound>" not in question:
        question = "<sound>" * len(audio) + question
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    sampling = temperature > 0
    settings = settings or GenerationSettings(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else 1.0,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
    )
    engine = InferenceEngine(model, processor, settings=settings, max_batch_size=1)
    shown = ThinkFilter(think)
    text = ""
    for piece in engine.stream(Request(messages, list(audio))):
        text += piece
        visible = shown.new_text(text)
        if visible:
            out.write(visible)
            out.flush()
    out.write("\n")
    out.flush()
    return text.strip()
