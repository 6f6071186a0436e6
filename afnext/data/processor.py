"""Turn (audio, chat messages) into model inputs the way the AF3 / AF-Next processors do, and decode.

Each audio becomes the windows its encoder's front end makes of it (:mod:`afnext.audio.frontends`); its
``<sound>`` placeholder becomes ``<|sound_bos|>`` + N x ``<sound>`` + ``<|sound_eos|>`` (AF-Next / Music
Flamingo; N alone for AF3), with N the tokens the model's encoder and connector make of the audio's true length.

Prompts follow the LLM: the tokenizer's own chat template renders them (ChatML for AF-Next / AF3 and afnext's tiny
tokenizer, the Llama 3 format for a Llama 3 backbone, ...). Labels cover the assistant turns only: what the
template adds for an assistant message (its text and the end-of-turn token, not the whitespace after it), found
by rendering the conversation up to each assistant turn with and without it; a template that renders earlier
turns differently once a later one is added is refused with an error (set ``llm.chat_template=chatml`` then).

:meth:`AudioProcessor.encode` is the one path that builds a sample: the processor's batches, the dataset,
evaluation and the server all use it.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afnext.audio.frontends import FrontEnd, LogMelFrontEnd, WaveformFrontEnd
from afnext.errors import AudioError, ConfigError, InputError
from afnext.llms.loss import IGNORE_INDEX
from afnext.llms.tokenizer import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

__all__ = ["IGNORE_INDEX", "AudioProcessor", "Message"]

Message = dict[str, Any]


class AudioProcessor:
    """Builds ``input_ids``, ``attention_mask``, ``input_features``, ``input_features_mask`` (+ ``labels``).

    Args:
        tokenizer: The LLM's tokenizer (with afnext's audio tokens and a chat template).
        tokens_for_frames: Maps ``(W,)`` valid feature frames per window to LLM tokens per window (use
            :meth:`from_model`, which takes it from the model's encoder and connector).
        front_end: The encoder's feature front end (default: Whisper log-mel, 128 bands, 30 s windows).
        audio_boundary_tokens: Wrap each audio in ``<|sound_bos|>`` / ``<|sound_eos|>`` (AF-Next).
        max_seconds: Longest audio accepted (``None``: no limit).
        system_prompt: A system turn to add when a conversation has none (``None``: the chat template decides;
            ChatML templates add their default one).
        padding_side: ``left`` (generation, as AF3's processor) or ``right`` (training).
        resample_backend: How audio at other rates is resampled: ``soxr`` (libsoxr, as librosa and HF
            ``datasets``) or ``torchaudio`` (its windowed sinc; the ``[torchaudio]`` extra).
        input_kind: Older way to pick the front end (``log_mel`` or ``waveform``), with ``n_mels``,
            ``window_seconds`` and ``sampling_rate``; ignored when ``front_end`` is given.
    """

    def __init__(
        self,
        tokenizer: Any,
        tokens_for_frames: Callable[[torch.Tensor], torch.Tensor],
        *,
        front_end: FrontEnd | None = None,
        audio_boundary_tokens: bool = True,
        max_seconds: float | None = 1800.0,
        system_prompt: str | None = None,
        padding_side: str = "left",
        resample_backend: str = "soxr",
        input_kind: str = "log_mel",
        n_mels: int = 128,
        window_seconds: float = 30.0,
        sampling_rate: int = 16000,
    ) -> None:
        from afnext.audio.resample import check_resample_backend

        check_resample_backend(resample_backend, "resample_backend")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side={padding_side!r}; use 'left' or 'right'")
        if front_end is None:
            if input_kind not in ("log_mel", "waveform"):
                raise ConfigError(f"input_kind={input_kind!r}; give a front_end instead")
            front_end = (
                LogMelFrontEnd(
                    n_mels=n_mels, window_seconds=window_seconds, sampling_rate=sampling_rate
                )
                if input_kind == "log_mel"
                else WaveformFrontEnd(window_seconds=window_seconds, sampling_rate=sampling_rate)
            )
        self.tokenizer = tokenizer
        self.tokens_for_frames = tokens_for_frames
        self.front_end = front_end
        self.audio_boundary_tokens = audio_boundary_tokens
        self.max_seconds = max_seconds
        self.system_prompt = system_prompt
        self.padding_side = padding_side
        self.resample_backend = resample_backend
        self.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        self.audio_bos_id = tokenizer.convert_tokens_to_ids(AUDIO_BOS_TOKEN)
        self.audio_eos_id = tokenizer.convert_tokens_to_ids(AUDIO_EOS_TOKEN)
        self.pad_token_id = tokenizer.pad_token_id
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; give the LLM one "
                "(llm.chat_template=chatml, or a tokenizer folder with its template)"
            )

    @property
    def sampling_rate(self) -> int:
        """Rate audio is loaded at (the front end's)."""
        return int(self.front_end.sampling_rate)

    @property
    def window_seconds(self) -> float:
        """Seconds of audio per window (the front end's)."""
        return float(self.front_end.window_seconds)

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> AudioProcessor:
        """A processor matching a model's tokenizer, encoder front end and token counts."""
        from afnext.encoders.base import encoder_front_end

        kwargs.setdefault("audio_boundary_tokens", model.audio_boundary_tokens)
        kwargs.setdefault("front_end", encoder_front_end(model.encoder))
        return cls(model.llm.tokenizer, model.audio_tokens_for_frames, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # Audio
    # ----------------------------------------------------------------------------------------------
    def load(self, audio: Any) -> torch.Tensor:
        """Any audio input -> mono float32 waveform at ``sampling_rate``.

        Accepts a path, ``bytes``, a binary file object, a 1-D tensor / array at ``sampling_rate``, or a
        dict ``{"array": ..., "sampling_rate": sr}`` / ``{"path": ...}`` (Hugging Face datasets style).
        """
        from afnext.audio import load_audio, resample

        if isinstance(audio, dict):
            if "array" in audio:
                wave = torch.as_tensor(np.asarray(audio["array"]), dtype=torch.float32)
                sr = int(audio.get("sampling_rate", self.sampling_rate))
                wave = resample(wave, sr, self.sampling_rate, backend=self.resample_backend)
                return self._check_wave(wave, str(audio.get("path") or "<array>"))
            audio = audio.get("path") or audio.get("audio")
        if isinstance(audio, (str, Path, bytes, bytearray, io.IOBase)):
            return load_audio(
                audio,
                sampling_rate=self.sampling_rate,
                max_seconds=self.max_seconds,
                resample_backend=self.resample_backend,
            )
        if isinstance(audio, (np.ndarray, torch.Tensor)):
            return self._check_wave(torch.as_tensor(audio, dtype=torch.float32), "<array>")
        raise InputError(
            f"cannot read audio of type {type(audio).__name__}; give a path, bytes, a 1-D array at "
            f"{self.sampling_rate} Hz, or {{'array': ..., 'sampling_rate': ...}}"
        )

    def _check_wave(self, wave: torch.Tensor, source: str) -> torch.Tensor:
        from afnext.audio import check_waveform

        return check_waveform(wave, self.sampling_rate, max_seconds=self.max_seconds, source=source)

    def features(
        self, wave: torch.Tensor, source: str = "<waveform>"
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Windows of one waveform (the encoder's front end) and the number of LLM tokens they make.

        Args:
            wave: ``(S,)`` mono waveform at ``sampling_rate``.
            source: Where the audio came from, for error messages.

        Returns:
            ``(features, mask, n_tokens)``: ``(W, C, F)`` / ``(W, F)`` as the front end makes them (Whisper
            log-mel: ``(W, 128, 3000)``; raw waveform: ``(W, 1, samples)``).

        Raises:
            AudioError: The audio is too short to yield one LLM token with this encoder and connector.
        """
        feats, mask = self.front_end(wave, max_seconds=self.max_seconds)
        n_tokens = int(self.tokens_for_frames(mask.sum(-1)).sum())
        if n_tokens == 0:
            raise AudioError(
                f"{wave.shape[0]} samples ({wave.shape[0] / self.sampling_rate * 1000:.1f} ms) yield no LLM "
                f"token with this encoder and connector, which need at least {self._shortest_samples()} "
                f"samples at {self.sampling_rate} Hz; use longer audio or drop it",
                source,
            )
        return feats, mask, n_tokens

    def _shortest_samples(self) -> int:
        """Fewest samples that yield one LLM token (a window's frames are ``sampling_rate / frame_rate``
        samples each)."""
        per_window = round(self.window_seconds * self.sampling_rate)
        step = max(1, round(self.sampling_rate / float(self.front_end.frame_rate)))
        counts = torch.arange(1, per_window // step + 1)
        first = int(torch.nonzero(self.tokens_for_frames(counts))[0, 0]) + 1
        return (first - 1) * step + 1  # frames count from a window's first sample (ceil)

    def audio_placeholder_ids(self, n_tokens: int) -> list[int]:
        """The ids one audio occupies in the prompt."""
        ids = [self.audio_token_id] * n_tokens
        if self.audio_boundary_tokens:
            ids = [self.audio_bos_id, *ids, self.audio_eos_id]
        return ids

    # ----------------------------------------------------------------------------------------------
    # Text
    # ----------------------------------------------------------------------------------------------
    def _template(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def render(
        self, messages: Sequence[Message], *, add_generation_prompt: bool | None = None
    ) -> tuple[str, list[tuple[int, int]], list[Any]]:
        """The prompt as the tokenizer's chat template renders it.

        Args:
            messages: The conversation (``role``, ``content``: a string with ``<sound>`` placeholders, or parts
                ``{"type": "text" | "audio", ...}``; a message's audio parts go before its text, as AF3's
                processor puts them).
            add_generation_prompt: Open an assistant turn at the end (default: when the conversation does
                not end with an assistant turn).

        Returns:
            ``(text, target_spans, audio)``: the text with ``<sound>`` where each audio goes, the character
            spans ``[start, end)`` of the assistant turns' targets, and the audio found in content parts.

        Raises:
            InputError: A bad message.
            ConfigError: A chat template whose earlier turns change when a later one is added.
        """
        conversation, audios = self._normalise(messages)
        if add_generation_prompt is None:
            add_generation_prompt = conversation[-1]["role"] != "assistant"
        text = self._template(conversation, add_generation_prompt)
        spans = []
        for i, message in enumerate(conversation):
            if message["role"] != "assistant":
                continue
            if i == 0:
                raise InputError(
                    "the conversation starts with an assistant turn; put a user turn first"
                )
            before = self._template(conversation[:i], True)
            upto = self._template(conversation[: i + 1], False)
            if not upto.startswith(before) or not text.startswith(upto):
                name = getattr(self.tokenizer, "name_or_path", "") or "the tokenizer"
                raise ConfigError(
                    f"the chat template of {name} renders earlier turns differently once a later turn is added "
                    f"(at message {i}), so its assistant turns cannot be labelled; train on ChatML instead "
                    "(llm.chat_template=chatml) or give a template that renders turns independently"
                )
            target = upto[len(before) :]
            spans.append((len(before), len(before) + len(target.rstrip())))
        return text, spans, audios

    def _normalise(self, messages: Sequence[Message]) -> tuple[list[Message], list[Any]]:
        """Messages with string content (``<sound>`` per audio part, before the text), and the audio parts."""
        if not messages:
            raise InputError("a conversation needs at least one message")
        conversation: list[Message] = []
        audios: list[Any] = []
        for i, message in enumerate(messages):
            role = message.get("role")
            if role not in ("system", "user", "assistant"):
                raise InputError(f"message {i} has role {role!r}; use system, user or assistant")
            content = message.get("content", "")
            if not isinstance(content, str):
                parts_audio = [p for p in content if p.get("type") == "audio"]
                text = "".join(p.get("text", "") for p in content if p.get("type") == "text")
                for part in parts_audio:
                    source = next(
                        (part[k] for k in ("audio", "path", "url", "array") if k in part), None
                    )
                    if source is None:
                        raise InputError(
                            f"message {i}: an audio part needs 'audio', 'path' or 'array'"
                        )
                    audios.append(source)
                content = AUDIO_TOKEN * len(parts_audio) + text
            if role == "assistant" and AUDIO_TOKEN in content:
                raise InputError(f"message {i}: an assistant turn cannot hold audio (<sound>)")
            conversation.append({"role": role, "content": content})
        if self.system_prompt is not None and conversation[0]["role"] != "system":
            conversation.insert(0, {"role": "system", "content": self.system_prompt})
        return conversation, audios

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def tokenize(
        self, text: str, spans: Sequence[tuple[int, int]], token_counts: Sequence[int]
    ) -> tuple[list[int], list[int]]:
        """Ids and labels of a rendered prompt: each ``<sound>`` expanded to its audio's placeholder ids, the
        target spans labelled with their own ids, everything else ``-100``."""
        cuts = sorted({0, len(text), *(x for span in spans for x in span)})
        targets = set(spans)
        ids: list[int] = []
        labels: list[int] = []
        audio_iter = iter(token_counts)
        for start, end in itertools.pairwise(cuts):
            is_target = any(a <= start and end <= b for a, b in targets)
            for k, piece in enumerate(text[start:end].split(AUDIO_TOKEN)):
                if k:
                    seg = self.audio_placeholder_ids(next(audio_iter))
                    ids += seg
                    labels += [IGNORE_INDEX] * len(seg)
                seg = self._tokenize(piece)
                ids += seg
                labels += seg if is_target else [IGNORE_INDEX] * len(seg)
        return ids, labels

    # ----------------------------------------------------------------------------------------------
    # Samples and batches
    # ----------------------------------------------------------------------------------------------
    def encode(
        self,
        messages: Sequence[Message],
        audio: Sequence[Any] | None = None,
        *,
        add_generation_prompt: bool | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """One sample: the one path from (messages, audio) to model inputs.

        Args:
            messages: A conversation (see :meth:`render`); audio in content parts, or ``<sound>`` in the text
                with ``audio``.
            audio: With ``<sound>`` in the text: the audio, in order (paths, bytes, arrays, waveforms, dicts).
            add_generation_prompt: Open an assistant turn at the end (default: when the conversation does
                not end with an assistant turn).
            max_length: Raise if the sample is longer (never truncates silently).

        Returns:
            ``input_ids`` and ``labels`` (lists of ints), ``input_features`` ``(W, C, F)`` and
            ``input_features_mask`` ``(W, F)`` (``W = 0`` without audio), ``num_tokens``, ``audio_seconds``.

        Raises:
            InputError: Placeholders and audio disagree, a bad message, or a sample over ``max_length``.
            AudioError: Audio that cannot be read or is too short / long.
        """
        text, spans, part_audio = self.render(messages, add_generation_prompt=add_generation_prompt)
        given = [] if audio is None else list(audio)
        if part_audio and given:
            raise InputError("audio given both in message parts and in `audio`")
        sources = part_audio or given
        n_slots = text.count(AUDIO_TOKEN)
        if n_slots != len(sources):
            what = (
                "; audio was given but the prompt has no <sound> placeholder" if not n_slots else ""
            )
            raise InputError(
                f"the prompt has {n_slots} <sound> placeholders but {len(sources)} audio inputs were given{what}"
            )
        feats, masks, counts, seconds = [], [], [], 0.0
        for source in sources:
            wave = self.load(source)
            f, m, n = self.features(wave, _describe(source))
            feats.append(f)
            masks.append(m)
            counts.append(n)
            seconds += wave.shape[0] / self.sampling_rate
        ids, labels = self.tokenize(text, spans, counts)
        if max_length is not None and len(ids) > max_length:
            raise InputError(f"the sample is {len(ids)} tokens, over max_length={max_length}")
        if feats:
            features, mask = torch.cat(feats), torch.cat(masks)
        else:
            f, m = self.front_end(torch.zeros(self.sampling_rate), max_seconds=None)
            features, mask = f[:0].clone(), m[:0].clone()
        return {
            "input_ids": ids,
            "labels": labels,
            "input_features": features,
            "input_features_mask": mask,
            "num_tokens": len(ids),
            "audio_seconds": seconds,
        }

    def __call__(
        self,
        conversations: Sequence[Message] | Sequence[Sequence[Message]],
        audio: Sequence[Any] | Sequence[Sequence[Any]] | None = None,
        *,
        add_generation_prompt: bool | None = None,
        return_labels: bool = False,
        padding_side: str | None = None,
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Build a batch (each sample through :meth:`encode`).

        Args:
            conversations: One conversation (a list of messages) or a batch of them. Audio goes in content
                parts (``{"type": "audio", "path": ...}``) or as ``<sound>`` in the text with ``audio``.
            audio: With ``<sound>`` in text: the audio of each conversation, in order (a list per
                conversation, or one item per conversation).
            add_generation_prompt: Open an assistant turn at the end (default: when the conversation does
                not end with an assistant turn).
            return_labels: Add ``labels`` (assistant turns only; -100 elsewhere).
            padding_side: Override the processor's padding side.
            max_length: Raise if a sample is longer (never truncates silently).

        Returns:
            ``input_ids``, ``attention_mask`` ``(B, L)``; ``input_features``, ``input_features_mask``
            (windows of every audio of every sample, in order; absent without audio); ``labels``.

        Raises:
            InputError: Placeholders and audio disagree, a bad message, or a sample over ``max_length``.
        """
        batch = (
            [conversations]
            if conversations and isinstance(conversations[0], dict)
            else conversations
        )
        if audio is not None and len(audio) != len(batch):
            raise InputError(f"got {len(batch)} conversations but audio for {len(audio)}")
        samples = []
        for b, messages in enumerate(batch):
            given = None if audio is None else audio[b]
            if given is not None and not isinstance(given, (list, tuple)):
                given = [given]
            try:
                samples.append(
                    self.encode(
                        messages,
                        given,
                        add_generation_prompt=add_generation_prompt,
                        max_length=max_length,
                    )
                )
            except InputError as exc:
                raise InputError(f"sample {b}: {exc}") from exc
        out = self._pad(
            [(s["input_ids"], s["labels"]) for s in samples], padding_side or self.padding_side
        )
        if not return_labels:
            out.pop("labels")
        if any(s["input_features"].shape[0] for s in samples):
            out["input_features"] = torch.cat([s["input_features"] for s in samples])
            out["input_features_mask"] = torch.cat([s["input_features_mask"] for s in samples])
        return out

    def _pad(self, rows: list[tuple[list[int], list[int]]], side: str) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            sl = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
            input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
            labels[i, sl] = torch.tensor(lab, dtype=torch.long)
            attention[i, sl] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    # ----------------------------------------------------------------------------------------------
    # Decoding
    # ----------------------------------------------------------------------------------------------
    def batch_decode(
        self,
        sequences: torch.Tensor,
        *,
        prompt_length: int = 0,
        skip_special_tokens: bool = True,
    ) -> list[str]:
        """Decode generated ids; ``prompt_length`` drops the prompt that ``generate`` returns first."""
        return self.tokenizer.batch_decode(
            sequences[:, prompt_length:], skip_special_tokens=skip_special_tokens
        )

    def decode(self, ids: Sequence[int] | torch.Tensor, *, skip_special_tokens: bool = True) -> str:
        """Decode one sequence of ids."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _describe(audio: Any) -> str:
    """Name an audio input of any accepted kind for error messages."""
    from afnext.audio import describe_source

    if isinstance(audio, dict):
        if "array" in audio:
            return str(audio.get("path") or "<array>")  # a decoded file keeps its name for messages
        audio = audio.get("path") or audio.get("audio")
    if isinstance(audio, (str, Path, bytes, bytearray, io.IOBase)):
        return describe_source(audio)
    return "<array>"
