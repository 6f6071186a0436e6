"""One inference engine behind ``afnext eval``, ``afnext chat`` and ``afnext serve``.

A request is (messages, audio, generation settings). The engine

1. **prepares** each request alone through :meth:`AudioProcessor.encode` (the one path that builds a sample),
   so bad audio or a malformed conversation fails that request only (:class:`Result` ``error``);
2. **plans** batches: requests with equal settings, sorted by prompt length (long audio first, so similar lengths
   share a batch and little is padded), each batch capped at ``max_batch_size`` rows and ``token_budget`` tokens
   (rows x (longest prompt + max_new_tokens));
3. **runs** a batch left-padded through the model's KV-cached ``generate``, streaming each row's text to its
   listener if it has one (:class:`~afnext.inference.generation.BatchStreamer`).

Greedy answers do not depend on the batch a request lands in: attention ignores the left padding, and the
repetition penalty does not see it (recent transformers leave left padding out of the penalty; rows are also
padded with their own first token, already in the row, so a version that counts padding sees the same tokens
batched as alone). Tests check batched == one at a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from afnext.errors import AfnextError, ConfigError
from afnext.inference.generation import BatchStreamer, GenerationSettings, TextListener
from afnext.inference.requests import Prepared, Request, Result
from afnext.llms.tokenizer import AUDIO_TOKEN

__all__ = ["InferenceEngine", "Prepared", "Request", "Result", "load_engine"]


class InferenceEngine:
    """Batched, KV-cached generation with a loaded model and its processor.

    Args:
        model: An :class:`afnext.model.AudioLanguageModel` (put it on its device first).
        processor: Its :class:`afnext.data.processor.AudioProcessor` (``max_seconds`` is the longest audio a
            request may hold).
        settings: Default generation settings (greedy, 1024 new tokens, no penalty).
        max_batch_size: Most requests per ``generate`` call.
        token_budget: Most tokens per call, counted as rows x (longest prompt + max_new_tokens); a single
            request over it still runs, alone.

    Raises:
        ConfigError: ``max_batch_size`` or ``token_budget`` below 1.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        settings: GenerationSettings | None = None,
        max_batch_size: int = 32,
        token_budget: int = 65536,
    ) -> None:
        if max_batch_size < 1 or token_budget < 1:
            raise ConfigError(
                f"engine: max_batch_size={max_batch_size} and token_budget={token_budget} must be >= 1"
            )
        self.model = model
        self.processor = processor
        self.settings = settings or GenerationSettings()
        self.max_batch_size = max_batch_size
        self.token_budget = token_budget
        self.stop_ids = list(model.llm.stop_token_ids())
        self.lock = (
            threading.Lock()
        )  # one generate at a time (a chat thread beside a server's worker)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    # ----------------------------------------------------------------------------------------------
    # Preparing and planning
    # ----------------------------------------------------------------------------------------------
    def prepare(self, request: Request) -> Prepared:
        """Encode one request (audio read, features, prompt ids); an afnext error becomes its ``error``."""
        settings = request.settings or self.settings
        try:
            sample = self.processor.encode(
                request.messages, request.audio, add_generation_prompt=True
            )
        except AfnextError as exc:
            return Prepared(request, settings, error=str(exc), exception=exc)
        return Prepared(request, settings, sample=sample)

    def audio_tokens(self, seconds: float) -> int:
        """Audio tokens an audio of ``seconds`` becomes (its windows' tokens, without the boundary tokens; for
        planning before the audio is read)."""
        front = self.processor.front_end
        window, rate = float(front.window_seconds), float(front.frame_rate)
        full, rest = divmod(max(seconds, 0.0), window)
        frames = [round(window * rate)] * int(full) + ([math.ceil(rest * rate)] if rest > 0 else [])
        if not frames:
            return 0
        return int(self.processor.tokens_for_frames(torch.tensor(frames)).sum())

    def estimate_tokens(self, request: Request, audio_seconds: Sequence[float]) -> int:
        """Prompt tokens of a request whose audio lasts ``audio_seconds`` (read from file headers), without
        reading the audio; 0 when the request cannot be rendered (preparing it will say why)."""
        try:
            text, _, _ = self.processor.render(request.messages, add_generation_prompt=True)
            counts = [self.audio_tokens(s) for s in audio_seconds]
            if text.count(AUDIO_TOKEN) != len(counts):
                return 0
            ids, _ = self.processor.tokenize(text, [], counts)
        except AfnextError:
            return 0
        return len(ids)

    def plan(
        self, lengths: Sequence[int], settings: Sequence[GenerationSettings]
    ) -> list[list[int]]:
        """Batches of request indices: equal settings, longest prompts first, within the caps.

        Args:
            lengths: Prompt tokens of each request (exact or estimated).
            settings: Each request's settings.

        Returns:
            Lists of indices into ``lengths``; every index appears once.
        """
        groups: dict[GenerationSettings, list[int]] = {}
        for index, s in enumerate(settings):
            groups.setdefault(s, []).append(index)
        batches: list[list[int]] = []
        for s, indices in groups.items():
            order = sorted(indices, key=lambda i: (-lengths[i], i))
            current: list[int] = []
            for index in order:
                # sorted longest first: the batch's longest prompt is its first one
                longest = lengths[current[0]] if current else lengths[index]
                cost = (len(current) + 1) * (longest + s.max_new_tokens)
                if current and (len(current) >= self.max_batch_size or cost > self.token_budget):
                    batches.append(current)
                    current = []
                current.append(index)
            if current:
                batches.append(current)
        return batches

    # ----------------------------------------------------------------------------------------------
    # Running
    # ----------------------------------------------------------------------------------------------
    def _inputs(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-padded ``(B, L)`` ids and mask (each row padded with its own first token) and the windows."""
        width = max(len(s["input_ids"]) for s in samples)
        ids = torch.empty((len(samples), width), dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        audio_ids = {
            self.processor.audio_token_id,
            self.processor.audio_bos_id,
            self.processor.audio_eos_id,
        }
        for row, sample in enumerate(samples):
            row_ids = sample["input_ids"]
            first = row_ids[0] if row_ids[0] not in audio_ids else self.processor.pad_token_id
            ids[row] = first
            ids[row, width - len(row_ids) :] = torch.tensor(row_ids, dtype=torch.long)
            mask[row, width - len(row_ids) :] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        windows = [s for s in samples if s["input_features"].shape[0]]
        if windows:
            out["input_features"] = torch.cat([s["input_features"] for s in windows])
            out["input_features_mask"] = torch.cat([s["input_features_mask"] for s in windows])
        device = self.device
        return {k: v.to(device) for k, v in out.items()}

    def run(
        self,
        prepared: Sequence[Prepared],
        listeners: Sequence[TextListener | None] | None = None,
    ) -> list[Result]:
        """Answer prepared requests of equal settings in one ``generate`` call (failed ones are passed through).

        Args:
            prepared: From :meth:`prepare`; all with the same settings.
            listeners: Per request, a callable that receives its text piece by piece (``None``: not streamed).

        Returns:
            One :class:`Result` per request, in order. If ``generate`` fails for the batch, each request is run
            alone so that only the one at fault reports the error.

        Raises:
            ConfigError: Requests with different settings.
        """
        listeners = list(listeners) if listeners is not None else [None] * len(prepared)
        results: list[Result | None] = [
            None if p.sample is not None else self._failed(p, p.error or "") for p in prepared
        ]
        live = [i for i, p in enumerate(prepared) if p.sample is not None]
        if not live:
            return results  # type: ignore[return-value]
        settings = {prepared[i].settings for i in live}
        if len(settings) > 1:
            raise ConfigError(
                "engine.run: one batch takes one generation setting; group requests with plan()"
            )
        streams = [_Resumable(listeners[i]) if listeners[i] else None for i in live]
        try:
            done = self._generate([prepared[i] for i in live], streams)
        except (RuntimeError, AfnextError) as exc:  # e.g. out of memory: find the request at fault
            if len(live) == 1:
                done = [self._failed(prepared[live[0]], f"generation failed: {exc}")]
            else:  # alone again; a streamed request's listener does not get its text twice
                done = [
                    self.run([prepared[i]], [st.rerun() if st else None])[0]
                    for i, st in zip(live, streams)
                ]
        for i, result in zip(live, done):
            results[i] = result
        return results  # type: ignore[return-value]

    def _failed(self, prepared: Prepared, error: str) -> Result:
        return Result(id=prepared.request.id, error=error)

    @torch.inference_mode()
    def _generate(
        self, prepared: Sequence[Prepared], listeners: Sequence[TextListener | None]
    ) -> list[Result]:
        settings = prepared[0].settings
        samples = [p.sample for p in prepared]
        start = time.perf_counter()
        inputs = self._inputs(samples)  # type: ignore[arg-type]
        streamer = BatchStreamer(self.processor.tokenizer, listeners, self.stop_ids)
        with self.lock:
            if settings.do_sample and settings.seed is not None:
                torch.manual_seed(settings.seed)
            self.model.eval()
            out = self.model.generate(
                **inputs,
                **settings.generate_kwargs(),
                eos_token_id=self.stop_ids,
                streamer=streamer if any(listeners) else None,
            )
        seconds = time.perf_counter() - start
        new = out[:, inputs["input_ids"].shape[1] :].tolist()  # (B, new)
        results = []
        for row, (p, tokens) in enumerate(zip(prepared, new)):
            cut = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
            kept = tokens if cut is None else tokens[:cut]
            text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
            streamer.flush(row, text)
            results.append(
                Result(
                    id=p.request.id,
                    text=text,
                    finish_reason="length" if cut is None else "stop",
                    prompt_tokens=p.prompt_tokens,
                    completion_tokens=len(kept) + (cut is not None),
                    audio_seconds=float(p.sample["audio_seconds"]),  # type: ignore[index]
                    timings={"batch_seconds": seconds, "batch_size": float(len(prepared))},
                )
            )
        return results

    def iter_generate(self, requests: Iterable[Request]) -> Iterator[tuple[int, Result]]:
        """Answer requests batch by batch, yielding ``(index, result)`` as each batch finishes."""
        prepared = [self.prepare(r) for r in requests]
        for index, p in enumerate(prepared):
            if p.sample is None:
                yield index, self._failed(p, p.error or "")
        ok = [i for i, p in enumerate(prepared) if p.sample is not None]
        plan = self.plan(
            [prepared[i].prompt_tokens for i in ok], [prepared[i].settings for i in ok]
        )
        for batch in plan:
            indices = [ok[b] for b in batch]
            for index, result in zip(indices, self.run([prepared[i] for i in indices])):
                yield index, result

    def generate(self, requests: Sequence[Request]) -> list[Result]:
        """Answer every request (batched); results in the order of ``requests``."""
        results: list[Result | None] = [None] * len(requests)
        for index, result in self.iter_generate(requests):
            results[index] = result
        return results  # type: ignore[return-value]

    def stream(self, request: Request) -> Iterator[str]:
        """Answer one request, yielding its text piece by piece as it is generated (the pieces join to the
        answer; ``generate`` runs in a thread).

        Raises:
            InputError / AudioError: The request cannot be prepared (raised before anything is yielded).
            AfnextError: Generation failed.
        """
        import queue

        prepared = self.prepare(request)
        if prepared.exception is not None:
            raise prepared.exception
        pieces: queue.Queue[str | None] = queue.Queue()
        outcome: list[Result] = []

        def work() -> None:
            try:
                outcome.extend(self.run([prepared], [pieces.put]))
            finally:
                pieces.put(None)

        thread = threading.Thread(target=work, name="afnext-generate", daemon=True)
        thread.start()
        while (piece := pieces.get()) is not None:
            yield piece
        thread.join()
        if outcome and outcome[0].error:
            from afnext.errors import InputError

            raise InputError(outcome[0].error)


class _Resumable:
    """A listener wrapper that remembers what it passed on; run again, it skips that much of the new text."""

    def __init__(self, listener: TextListener) -> None:
        self.listener = listener
        self.sent = ""
        self.seen = 0

    def __call__(self, piece: str) -> None:
        self.seen += len(piece)
        if self.seen > len(self.sent):  # what is new beyond the text passed on before
            new = piece[len(piece) - (self.seen - len(self.sent)) :]
            self.sent += new
            self.listener(new)

    def rerun(self) -> _Resumable:
        self.seen = 0
        return self


def load_engine(
    checkpoint: str | Path,
    *,
    device: str = "auto",
    dtype: str | None = None,
    max_audio_seconds: float | None = None,
    **engine_kwargs: Any,
) -> InferenceEngine:
    """An engine for a run, stage or model folder (afnext or transformers AF3 / AF-Next).

    Args:
        checkpoint: The folder (see :func:`afnext.interop.resolve_checkpoint`).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: Weights' dtype (``bfloat16``, ``float32``, ...; ``None``: as saved).
        max_audio_seconds: Longest audio a request may hold (``None``: no limit).
        **engine_kwargs: :class:`InferenceEngine` arguments (``settings``, ``max_batch_size``, ...).
    """
    from afnext.data.processor import AudioProcessor
    from afnext.interop import resolve_checkpoint
    from afnext.model import AudioLanguageModel

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ConfigError(f"dtype={dtype!r} is not a torch dtype; use bfloat16, float16 or float32")
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = AudioLanguageModel.from_pretrained(resolve_checkpoint(checkpoint), **kwargs)
    model.to(device).eval()
    processor = AudioProcessor.from_model(model, max_seconds=max_audio_seconds)
    return InferenceEngine(model, processor, **engine_kwargs)
