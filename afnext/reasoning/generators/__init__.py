"""Generators: a timeline in, (question, chain, answer) samples out.

:class:`~afnext.reasoning.generators.base.Generator` is the interface (third parties implement it);
built in: :class:`~afnext.reasoning.generators.template.TemplateGenerator` and
:class:`~afnext.reasoning.generators.llm_teacher.LLMTeacherGenerator` (with the chat clients of
:mod:`~afnext.reasoning.generators.chat`).
"""

from afnext.reasoning.generators.base import Generator, QASample

__all__ = ["Generator", "QASample"]
