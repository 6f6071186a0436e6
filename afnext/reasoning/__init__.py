"""afnext.reasoning: Temporal Audio Chain-of-Thought (TACoT) data and scoring.

* :mod:`~afnext.reasoning.format`: the ``<think>`` / ``<t>START-END</t>`` format: parse, validate, render.
* :mod:`~afnext.reasoning.timeline`: what happens when in an audio file; :mod:`~afnext.reasoning.readers`
  reads TSV (DESED / AudioSet-strong), Whisper JSON, SRT, WebVTT and RTTM into it.
* :mod:`~afnext.reasoning.generators`: timeline -> (question, chain, answer): templates, an LLM teacher.
* :mod:`~afnext.reasoning.scenes` / :mod:`~afnext.reasoning.sources`: synthetic scenes, annotated audio.
* :mod:`~afnext.reasoning.build`: ``afnext data build``; :mod:`~afnext.reasoning.metrics`: scores.

Names are imported on first use, so ``import afnext.reasoning`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it
_EXPORTS = {
    "Caption": "format",
    "Issue": "format",
    "Span": "format",
    "Step": "format",
    "TACoTResponse": "format",
    "Turn": "format",
    "parse_captions": "format",
    "parse_response": "format",
    "parse_turns": "format",
    "render_captions": "format",
    "render_turns": "format",
    "validate_response": "format",
    "Event": "timeline",
    "Timeline": "timeline",
    "Word": "timeline",
    "read_event_tsv": "readers",
    "read_rttm": "readers",
    "read_srt": "readers",
    "read_transcript": "readers",
    "read_vtt": "readers",
    "read_whisper_json": "readers",
    "Generator": "generators.base",
    "QASample": "generators.base",
    "TemplateGenerator": "generators.template",
    "LLMTeacherGenerator": "generators.llm_teacher",
    "OpenAIChat": "generators.chat",
    "TransformersChat": "generators.chat",
    "Scene": "scenes",
    "SceneSynthesizer": "scenes",
    "AnnotatedSource": "sources",
    "Source": "sources",
    "SourceItem": "sources",
    "SyntheticSource": "sources",
    "BuildReport": "build",
    "build_dataset": "build",
    "answer_correct": "metrics",
    "evaluate_files": "metrics",
    "extract_choice": "metrics",
    "score_outputs": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"afnext.reasoning.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'afnext.reasoning' has no attribute {name!r}")
