"""Turn (audio, chat messages) into model inputs the way the AF3 / AF-Next processors do, and decode.

Each audio becomes its 30 s windows of features; its ``<sound>`` placeholder becomes
``<|sound_bos|>`` + N x ``<sound>`` + ``<|sound_eos|>`` (AF-Next / Music Flamingo; N alone for AF3), with N
the tokens the model's encoder and connector make of the audio's true length. Messages are rendered as
ChatML exactly like afnext's chat template (a default system turn, audio placeholders before the user's
text); labels cover the assistant turns only (their text and ``<|im_end|>``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afnext.errors import AudioError, ConfigError, InputError
from afnext.llms.tokenizer import (
    AUDIO_BOS_TOKEN,
    AUDIO_EOS_TOKEN,
    AUDIO_TOKEN,
    DEFAULT_SYSTEM_PROMPT,
    IM_END,
    IM_START,
)

__all__ = ["IGNORE_INDEX", "AudioProcessor", "Message"]

IGNORE_INDEX = -100
Message = dict[str, Any]


class AudioProcessor:
    """Builds ``input_ids``, ``attention_mask``, ``input_features``, ``input_features_mask`` (+ ``labels``).

    Args:
        tokenizer: The LLM's tokenizer (with afnext's audio tokens).
        tokens_for_frames: Maps ``(W,)`` valid input frames per window to LLM tokens per window (use
            :meth:`from_model`, which takes it from the model's encoder and connector).
        input_kind: ``log_mel`` (Whisper features) or ``waveform`` (raw windows, HuBERT / WavLM).
        n_mels: Mel bins for ``log_mel``.
        audio_boundary_tokens: Wrap each audio in ``<|sound_bos|>`` / ``<|sound_eos|>`` (AF-Next).
        window_seconds: Seconds per window.
        max_seconds: Longest audio accepted (``None``: no limit).
        sampling_rate: Rate of the features (16 kHz).
        system_prompt: Default system turn when a conversation has none (``None``: no system turn).
        padding_side: ``left`` (generation, as AF3's processor) or ``right`` (training).
        resample_backend: How audio at other rates is resampled: ``soxr`` (libsoxr, as librosa and HF
            ``datasets``) or ``torchaudio`` (its windowed sinc; the ``[torchaudio]`` extra).
    """

    def __init__(
        self,
        tokenizer: Any,
        tokens_for_frames: Callable[[torch.Tensor], torch.Tensor],
        *,
        input_kind: str = "log_mel",
        n_mels: int = 128,
        audio_boundary_tokens: bool = True,
        window_seconds: float = 30.0,
        max_seconds: float | None = 1800.0,
        sampling_rate: int = 16000,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        padding_side: str = "left",
        resample_backend: str = "soxr",
    ) -> None:
        from afnext.audio.resample import check_resample_backend

        check_resample_backend(resample_backend, "resample_backend")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side={padding_side!r}; use 'left' or 'right'")
        self.tokenizer = tokenizer
        self.tokens_for_frames = tokens_for_frames
        self.input_kind, self.n_mels = input_kind, n_mels
        self.audio_boundary_tokens = audio_boundary_tokens
        self.window_seconds, self.max_seconds = window_seconds, max_seconds
        self.sampling_rate = sampling_rate
        self.system_prompt = system_prompt
        self.padding_side = padding_side
        self.resample_backend = resample_backend
        self.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        self.audio_bos_id = tokenizer.convert_tokens_to_ids(AUDIO_BOS_TOKEN)
        self.audio_eos_id = tokenizer.convert_tokens_to_ids(AUDIO_EOS_TOKEN)
        self.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> AudioProcessor:
        """A processor matching a model's tokenizer, encoder input and token counts."""
        from afnext.encoders.base import encoder_input_kind

        kwargs.setdefault("audio_boundary_tokens", model.audio_boundary_tokens)
        kwargs.setdefault("input_kind", encoder_input_kind(model.encoder))
        kwargs.setdefault("n_mels", getattr(model.encoder, "n_mels", 128))
        kwargs.setdefault("window_seconds", getattr(model.encoder, "window_seconds", 30.0))
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
                return self._check_wave(wave, "<array>")
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
        """Windows of one waveform and the number of LLM tokens they make.

        Args:
            wave: ``(S,)`` mono waveform at ``sampling_rate``.
            source: Where the audio came from, for error messages.

        Returns:
            ``(features, mask, n_tokens)``: ``(W, n_mels, frames)`` / ``(W, frames)`` for ``log_mel``,
            ``(W, 1, samples)`` / ``(W, samples)`` for ``waveform``.

        Raises:
            AudioError: The audio is too short to yield one LLM token with this encoder and connector.
        """
        from afnext.audio import split_windows, whisper_features

        if self.input_kind == "log_mel":
            feats, mask = whisper_features(
                wave,
                self.sampling_rate,
                n_mels=self.n_mels,
                window_seconds=self.window_seconds,
                max_seconds=self.max_seconds,
                resample_backend=self.resample_backend,
            )
        else:
            windows = split_windows(
                wave,
                sampling_rate=self.sampling_rate,
                window_seconds=self.window_seconds,
                max_seconds=self.max_seconds,
            )
            feats, mask = windows.samples.unsqueeze(1), windows.sample_mask  # (W, 1, S), (W, S)
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
        """Fewest samples that yield one LLM token (a window's input is frames of HOP_LENGTH or samples)."""
        from afnext.audio import HOP_LENGTH

        per_window = round(self.window_seconds * self.sampling_rate)
        step = HOP_LENGTH if self.input_kind == "log_mel" else 1
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
    def render(
        self, messages: Sequence[Message], *, add_generation_prompt: bool | None = None
    ) -> tuple[list[tuple[str, bool]], list[Any]]:
        """ChatML segments ``(text, is_assistant_target)`` with ``<sound>`` placeholders, and the audio
        found in content parts, in order."""
        if not messages:
            raise InputError("a conversation needs at least one message")
        segments: list[tuple[str, bool]] = []
        audios: list[Any] = []
        if messages[0].get("role") != "system" and self.system_prompt is not None:
            segments.append((f"{IM_START}system\n{self.system_prompt}{IM_END}\n", False))
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
            if role == "assistant":
                segments.append((f"{IM_START}assistant\n", False))
                segments.append((f"{content}{IM_END}", True))
                segments.append(("\n", False))
            else:
                segments.append((f"{IM_START}{role}\n{content}{IM_END}\n", False))
        if add_generation_prompt is None:
            add_generation_prompt = messages[-1].get("role") != "assistant"
        if add_generation_prompt:
            segments.append((f"{IM_START}assistant\n", False))
        return segments, audios

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    # ----------------------------------------------------------------------------------------------
    # Batches
    # ----------------------------------------------------------------------------------------------
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
        """Build a batch.

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
        rows: list[tuple[list[int], list[int]]] = []
        feats: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for b, messages in enumerate(batch):
            segments, part_audio = self.render(
                messages, add_generation_prompt=add_generation_prompt
            )
            given = [] if audio is None else audio[b]
            given = list(given) if isinstance(given, (list, tuple)) else [given]
            if part_audio and given:
                raise InputError(f"sample {b}: audio given both in message parts and in `audio`")
            sources = part_audio or given
            n_slots = sum(text.count(AUDIO_TOKEN) for text, _ in segments)
            if n_slots != len(sources):
                what = (
                    "audio was given but the prompt has no <sound> placeholder"
                    if not n_slots
                    else ""
                )
                raise InputError(
                    f"sample {b}: the prompt has {n_slots} <sound> placeholders but {len(sources)} audio "
                    f"inputs were given{'; ' + what if what else ''}"
                )
            token_counts = []
            for source in sources:
                f, m, n = self.features(self.load(source), _describe(source))
                feats.append(f)
                masks.append(m)
                token_counts.append(n)
            ids, labels = self._encode(segments, token_counts)
            if max_length is not None and len(ids) > max_length:
                raise InputError(f"sample {b} is {len(ids)} tokens, over max_length={max_length}")
            rows.append((ids, labels))
        out = self._pad(rows, padding_side or self.padding_side)
        if not return_labels:
            out.pop("labels")
        if feats:
            out["input_features"] = torch.cat(feats)
            out["input_features_mask"] = torch.cat(masks)
        return out

    def _encode(
        self, segments: list[tuple[str, bool]], token_counts: list[int]
    ) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        audio_iter = iter(token_counts)
        for text, is_target in segments:
            pieces = text.split(AUDIO_TOKEN)
            for k, piece in enumerate(pieces):
                if k:
                    seg = self.audio_placeholder_ids(next(audio_iter))
                    ids += seg
                    labels += [IGNORE_INDEX] * len(seg)
                seg = self._tokenize(piece)
                ids += seg
                labels += seg if is_target else [IGNORE_INDEX] * len(seg)
        return ids, labels

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
        audio = None if "array" in audio else (audio.get("path") or audio.get("audio"))
    if isinstance(audio, (str, Path, bytes, bytearray, io.IOBase)):
        return describe_source(audio)
    return "<array>"
