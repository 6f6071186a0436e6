"""An LLM judge: a chat model behind an OpenAI-compatible endpoint scores free-form answers.

Each item's fields (``question``, ``reference``, ``prediction``, ...) fill the prompt template; the judge
replies at temperature 0 and the score is read from the reply with a regex (the last match wins, so a
judge that reasons first and states its score last is read right). Judgments are cached on disk by
request (prompt text and model) through :class:`~afnext.inference.client.OpenAICompatibleClient`, so a
rerun of a benchmark asks the judge nothing it has answered. A failed request or an unreadable score is
``None`` for that item and counted in :attr:`LLMJudge.failures`; it never fails the other items.

A benchmark scored by a judge keeps its own prompt and scale in its config (``judge_prompt``, ``judge_scale`` in
``conf/benchmark/longaudiobench.yaml``); the endpoint is the run's (``judge.base_url``, ``judge.model`` in
``conf/eval.yaml``). :meth:`LLMJudge.for_benchmark` joins the two: a judge with the benchmark's prompt and scale
that shares the endpoint's client (its connections, concurrency limit and cache).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

from afnext.errors import ConfigError
from afnext.evaluation.metrics.judged import Verdict, scale_prompt, verdict_rule

__all__ = ["DEFAULT_JUDGE_PROMPT", "DEFAULT_SCORE_PATTERN", "LLMJudge", "build_judge"]

log = logging.getLogger(__name__)

DEFAULT_SCORE_PATTERN = r"(?i)\bscore\b\W{0,3}(-?\d+(?:\.\d+)?)"
DEFAULT_JUDGE_PROMPT = scale_prompt(0, 10)


def _template_fields(prompt: str) -> list[str]:
    """The named fields of a ``str.format`` template (``{question}``, ``{item[x]}`` -> ``item``)."""
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as exc:  # an unmatched brace
        raise ConfigError(
            f"judge.prompt is not a valid str.format template ({exc}); write a literal brace as "
            "{{ or }}"
        ) from exc
    fields = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ConfigError(
                f"judge.prompt has a positional field {{{name}}}; name every field, e.g. {{question}}"
            )
        if root not in fields:
            fields.append(root)
    return fields


class LLMJudge:
    """Scores items with a judge model behind an OpenAI-compatible chat endpoint.

    Args:
        base_url: ``http://host:port/v1`` or the full ``.../chat/completions`` URL.
        model: The judge model's name on that server.
        prompt: A ``str.format`` template with named fields (``{question}``, ``{reference}``,
            ``{prediction}``; default :data:`DEFAULT_JUDGE_PROMPT`, 0-10); sent as the user message. A
            benchmark's own ``judge_prompt`` replaces it for that benchmark (:meth:`for_benchmark`).
        api_key_env: Environment variable holding the API key; ``None`` for servers without keys.
        cache_dir: Folder of cached judgments (keyed by prompt text and model); ``None``: no cache.
        concurrency: Most requests in flight at once.
        max_retries: Further attempts after a connection error, a timeout, HTTP 429 or 5xx.
        timeout: Seconds to wait for one judgment.
        score_pattern: A regex with one group capturing the number; the last match in a reply wins.
        min_score: Lowest valid score; a score below it is ``None`` (counted as ``out_of_range``).
        max_score: Highest valid score; likewise.
        max_tokens: Most tokens per judgment.
        backoff: Seconds before the first retry (doubled each retry, with jitter).

    Attributes:
        failures: Items scored ``None`` since the judge was built.
        failure_reasons: Those failures by reason: the client's (``timeout``, ``http_500``, ...),
            ``unparsable`` or ``out_of_range``.

    Raises:
        ConfigError: A setting is invalid (the message names the key), or ``api_key_env`` is unset.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        prompt: str = DEFAULT_JUDGE_PROMPT,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        cache_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        score_pattern: str = DEFAULT_SCORE_PATTERN,
        min_score: float = 0.0,
        max_score: float = 10.0,
        max_tokens: int = 512,
        backoff: float = 0.5,
    ) -> None:
        from afnext.inference.client import OpenAICompatibleClient

        self.prompt, self.fields = prompt, _template_fields(prompt)
        try:
            self.pattern = re.compile(score_pattern)
        except re.error as exc:
            raise ConfigError(
                f"judge.score_pattern {score_pattern!r} is not a valid regex: {exc}"
            ) from exc
        if self.pattern.groups != 1:
            raise ConfigError(
                f"judge.score_pattern {score_pattern!r} has {self.pattern.groups} groups; give exactly "
                "one, around the number (use (?:...) for other groups)"
            )
        if not min_score <= max_score:
            raise ConfigError(
                f"judge.min_score={min_score} is above judge.max_score={max_score}; swap them"
            )
        if max_tokens < 1:
            raise ConfigError(f"judge.max_tokens must be >= 1, got {max_tokens}")
        self.min_score, self.max_score, self.max_tokens = min_score, max_score, max_tokens
        self.client = OpenAICompatibleClient(
            base_url,
            model,
            api_key_env=api_key_env,
            timeout=timeout,
            max_retries=max_retries,
            concurrency=concurrency,
            cache_dir=cache_dir,
            backoff=backoff,
            config_key="judge",
        )
        self.failures = 0
        self.failure_reasons: Counter[str] = Counter()
        self.verdict: Verdict | None = None

    def for_benchmark(
        self,
        prompt: str | None = None,
        scale: Sequence[float] | None = None,
        verdict: Mapping[str, object] | None = None,
    ) -> LLMJudge:
        """This judge with a benchmark's prompt, score scale and verdict rule (each kept when ``None``), on the
        same client (connections, concurrency limit, cache) and with its own failure counts.

        Args:
            prompt: The benchmark's prompt template.
            scale: Its (lowest, highest) score.
            verdict: Read a verdict word instead of a number (NeMo-Skills' judges): ``marker`` (the reply's
                text after its last occurrence is the verdict, e.g. ``"Judgement:"``), ``values`` (each verdict
                word's score; the verdict, lower-cased, starting with the word selects it, e.g. ``{"yes": 1,
                "no": 0}``) and ``otherwise`` (the score of a reply without a marker or a known word: a number
                counts it so, as NeMo-Skills counts such replies wrong, and names it in the failure reasons as
                ``no_verdict``; ``None`` leaves it out as a failure).

        Raises:
            ConfigError: The prompt is not a template with named fields, the scale is not (low, high), or the
                verdict rule lacks its marker or values.
        """
        judge = copy.copy(self)
        if prompt is not None:
            judge.prompt, judge.fields = prompt, _template_fields(prompt)
        if scale is not None:
            if len(scale) != 2 or not float(scale[0]) <= float(scale[1]):
                raise ConfigError(
                    f"judge_scale={list(scale)!r}: give [lowest, highest], lowest <= highest"
                )
            judge.min_score, judge.max_score = float(scale[0]), float(scale[1])
        if verdict is not None:
            judge.verdict = verdict_rule(verdict)
        judge.failures, judge.failure_reasons = 0, Counter()
        return judge

    def close(self) -> None:
        """Close the judge's connections."""
        self.client.close()

    def render(self, item: Mapping[str, str], index: int = 0) -> str:
        """The prompt text for one item.

        Raises:
            ConfigError: The item lacks a field the prompt names.
        """
        missing = [name for name in self.fields if name not in item]
        if missing:
            raise ConfigError(
                f"judge item {index} has no field {missing[0]!r} that judge.prompt uses (it has "
                f"{sorted(item)}); give it, or change the prompt"
            )
        return self.prompt.format(**item)

    def parse(self, reply: str) -> tuple[float | None, str | None]:
        """``(score, None)``, or ``(None, reason)`` when no number matches or it is out of range. With a verdict
        rule (:meth:`for_benchmark`), the verdict word's score; a reply without one gives the rule's
        ``otherwise`` score and the reason ``no_verdict`` (counted, not left out, when that score is a number)."""
        if self.verdict is not None:
            marker, values, otherwise = self.verdict
            if marker in reply:
                said = reply.split(marker)[-1].strip().lower()
                for word, value in values:
                    if said.startswith(word):
                        return value, None
            return otherwise, "no_verdict"
        matches = self.pattern.findall(reply)
        if not matches:
            return None, "unparsable"
        try:
            score = float(matches[-1])
        except ValueError:
            return None, "unparsable"
        if not self.min_score <= score <= self.max_score:
            return None, "out_of_range"
        return score, None

    def score(self, items: Sequence[Mapping[str, str]]) -> list[float | None]:
        """One score per item, in order; ``None`` where the request failed or the reply has no valid
        score (each counted in :attr:`failures`).

        Args:
            items: Template fields per item, e.g. ``{"question": ..., "reference": ...,
                "prediction": ...}``.

        Raises:
            ConfigError: An item lacks a field the prompt uses (checked before any request is sent).
        """
        requests = [
            {"messages": [{"role": "user", "content": self.render(item, i)}]}
            for i, item in enumerate(items)
        ]
        results = self.client.complete_many(requests, temperature=0, max_tokens=self.max_tokens)
        scores: list[float | None] = []
        for i, result in enumerate(results):
            if result.text is None:
                value, reason = None, result.reason or "error"
                log.warning("judge item %d failed: %s", i, result.error)
            else:
                value, reason = self.parse(result.text)
                if reason is not None:
                    log.warning("judge item %d: %s reply %r", i, reason, result.text[-200:])
            if reason is not None:
                self.failures += value is None  # a reply counted by the verdict rule is scored
                self.failure_reasons[reason] += 1
            scores.append(value)
        return scores


def build_judge(
    config: Mapping[str, object] | None, *, cache_dir: str | os.PathLike[str] | None = None
) -> object | None:
    """The judge of a ``judge`` config block (``conf/eval.yaml``), or ``None`` when it names no endpoint.

    Args:
        config: ``{base_url, model, api_key_env, cache_dir, concurrency, max_retries, timeout, max_tokens,
            score_pattern, prompt}`` for an :class:`LLMJudge` (``None`` values: its defaults); or a block with
            ``_target_``, instantiated by Hydra as it is (a plugin's judge: any object with ``score(items)``).
        cache_dir: Where judgments are cached when the block sets no ``cache_dir``.

    Raises:
        ConfigError: ``model`` without ``base_url`` or the reverse, an unknown key, or an invalid setting (the
            message names ``judge.<key>``).
    """
    if not config:
        return None
    values = {k: v for k, v in dict(config).items() if v is not None}
    if "_target_" in values:
        import inspect

        from hydra.utils import get_object, instantiate

        try:
            target = get_object(str(values["_target_"]))
            parameters = inspect.signature(target).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                # conf/eval.yaml's LLM-judge keys go only to a target that takes them
                values = {k: v for k, v in values.items() if k == "_target_" or k in parameters}
            return instantiate(values, _convert_="all")
        except Exception as exc:  # Hydra wraps the target's own error
            raise ConfigError(f"judge: could not build {values['_target_']}: {exc}") from exc
    from afnext.inference.client import endpoint_settings

    known = {
        "base_url", "model", "prompt", "api_key_env", "cache_dir", "concurrency", "max_retries", "timeout",
        "score_pattern", "max_tokens", "backoff",
    }  # fmt: skip
    values = endpoint_settings(
        config,
        where="judge",
        known=known,
        what="an LLM judge (any OpenAI-compatible endpoint) needs",
    )
    if values is None:
        return None
    values.setdefault("cache_dir", cache_dir)
    return LLMJudge(**values)  # type: ignore[arg-type]
