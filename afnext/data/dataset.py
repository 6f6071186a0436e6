"""A map-style dataset over AF3-style manifests: one sample's token ids, labels and audio windows per index.

``__getitem__`` runs inside DataLoader worker processes: it decodes the audio (soundfile + torchaudio through
the processor), computes the 30 s windows of log-mel features and renders the conversation to ids with the
``<sound>`` slots expanded to the audio's true token count. A bad sample (malformed manifest line,
placeholder mismatch, missing or unreadable audio, audio over ``max_audio_seconds``, prompt over
``max_length`` tokens) either raises a :class:`~afnext.errors.DataError` naming ``file:line`` and the reason
(``on_error="raise"``) or comes back as a :class:`Skipped` marker that the collator drops and counts
(``on_error="skip"``). Nothing is dropped silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from afnext.data.manifest import ManifestEntry, ManifestProblem, ManifestRecord, read_manifest
from afnext.errors import AfnextError, AudioError, ConfigError, DataError

__all__ = ["ON_ERROR", "ManifestDataset", "Sample", "Skipped"]

ON_ERROR = ("skip", "raise")
"""Accepted values of ``on_error``."""

Sample = dict[str, Any]
"""One sample: ``input_ids`` / ``labels`` ``(L,)`` long; ``input_features`` ``(W, n_mels, frames)``;
``input_features_mask`` ``(W, frames)`` bool (``W = 0`` for text-only samples); ``audio_seconds`` float;
``num_tokens`` int (``L``); ``id`` and ``where`` (``file:line``) str."""

# Reason keys added to the manifest's (malformed_json, bad_record, placeholder_mismatch).
MISSING_FILE = "missing_file"
UNREADABLE_AUDIO = "unreadable_audio"
AUDIO_TOO_LONG = "audio_too_long"
TOO_MANY_TOKENS = "too_many_tokens"


class Skipped(NamedTuple):
    """Marker returned for a bad sample in ``on_error="skip"`` mode.

    Attributes:
        where: ``file:line`` of the sample in its manifest.
        reason: Short key the skip counters use (``missing_file``, ``unreadable_audio``, ``malformed_json``,
            ``placeholder_mismatch``, ``bad_record``, ``audio_too_long``, ``too_many_tokens``).
        message: What is wrong and what to do.
    """

    where: str
    reason: str
    message: str


class _BadSample(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _question(messages: Sequence[dict[str, str]]) -> str:
    """The user turn the first answer replies to ("" when there is none)."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    asked = [m["content"] for m in messages[:first] if m["role"] == "user"]
    return asked[-1] if asked else ""


def _header_seconds(path: str) -> float | None:
    """Duration from the file header (no decoding); None when it cannot be read (``__getitem__`` says why)."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except (RuntimeError, OSError, ValueError, TypeError):
        return None
    return info.frames / info.samplerate if info.samplerate else None


class ManifestDataset(Dataset):
    """Samples of one or more manifests, in order (manifest 0's lines, then manifest 1's, ...).

    Args:
        manifests: One manifest path or several (``.jsonl`` or ``.json``).
        processor: The model's :class:`~afnext.data.processor.AudioProcessor`; may be attached later through
            the ``processor`` attribute (it comes from the model), but before the first ``__getitem__``.
        on_error: ``skip`` (return a :class:`Skipped` marker) or ``raise`` (a ``DataError`` naming
            ``file:line``; malformed manifest lines raise already here).
        max_audio_seconds: Longest audio (all sounds of a sample together) accepted; ``None``: no limit beyond
            the processor's.
        max_length: Most tokens a sample may have (prompt + answer with expanded audio slots).

    Attributes:
        entries: A :class:`ManifestRecord` or :class:`ManifestProblem` per index.
        durations: Seconds of audio per index, from the ``duration`` field, else the file headers (0 for
            text-only samples and for audio whose header cannot be read); used for bucketing.
        group_sizes: Number of samples of each manifest (indices are contiguous per manifest).

    Raises:
        ConfigError: ``on_error`` is not ``skip`` / ``raise``.
        DataError: A manifest cannot be read, or (``raise`` mode) has a malformed line.
    """

    def __init__(
        self,
        manifests: str | os.PathLike | Sequence[str | os.PathLike],
        processor: Any | None = None,
        *,
        on_error: str = "skip",
        max_audio_seconds: float | None = None,
        max_length: int | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ConfigError(f"data.on_error={on_error!r}; use 'skip' or 'raise'")
        paths = [manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests)
        if not paths:
            raise ConfigError("ManifestDataset needs at least one manifest path")
        self.processor = processor
        self.on_error = on_error
        self.max_audio_seconds = max_audio_seconds
        self.max_length = max_length
        self.manifests = [str(Path(p).absolute()) for p in paths]
        self.entries: list[ManifestEntry] = []
        self.group_sizes: list[int] = []
        for path in self.manifests:
            entries = read_manifest(path)
            if on_error == "raise":
                for entry in entries:
                    if isinstance(entry, ManifestProblem):
                        raise DataError(f"{entry.where}: {entry.message} (data.on_error=raise)")
            self.entries.extend(entries)
            self.group_sizes.append(len(entries))
        self.durations = [self._duration(entry) for entry in self.entries]

    @staticmethod
    def _duration(entry: ManifestEntry) -> float:
        if isinstance(entry, ManifestProblem):
            return 0.0
        if entry.duration is not None:
            return entry.duration
        total = 0.0
        for sound in entry.sounds:
            seconds = _header_seconds(sound)
            total += seconds or 0.0
        return total

    def windows(self, window_seconds: float) -> list[int]:
        """Audio windows (encoder inputs) of each sample: ``ceil(seconds / window_seconds)`` per audio (from the
        total duration when only that is known: one more window per extra audio, an upper bound)."""
        counts = []
        for entry, seconds in zip(self.entries, self.durations):
            sounds = 0 if isinstance(entry, ManifestProblem) else len(entry.sounds)
            counts.append(math.ceil(seconds / window_seconds) + max(0, sounds - 1) if sounds else 0)
        return counts

    def __len__(self) -> int:
        return len(self.entries)

    def where(self, index: int) -> str:
        """``file:line`` of sample ``index``."""
        return self.entries[index].where

    def __getitem__(self, index: int) -> Sample | Skipped:
        """Load, featurize and tokenize sample ``index``.

        Returns:
            A :data:`Sample` dict, or a :class:`Skipped` marker in ``skip`` mode.

        Raises:
            DataError: (``raise`` mode) naming ``file:line`` and the reason.
            ConfigError: No processor is attached.
        """
        entry = self.entries[index]
        try:
            if isinstance(entry, ManifestProblem):
                raise _BadSample(entry.reason, entry.message)
            return self._build(entry)
        except _BadSample as bad:
            if self.on_error == "raise":
                raise DataError(
                    f"{entry.where}: {bad.message} (data.on_error=raise)"
                ) from bad.__cause__
            return Skipped(entry.where, bad.reason, bad.message)

    def _build(self, record: ManifestRecord) -> Sample:
        proc = self.processor
        if proc is None:
            raise ConfigError(
                "ManifestDataset has no processor; call AudioDataModule.attach_processor(processor) "
                "(or set dataset.processor) before loading samples"
            )
        limit = self.max_audio_seconds
        if limit is not None and record.duration is not None and record.duration > limit:
            raise _BadSample(
                AUDIO_TOO_LONG,
                f"'duration' is {record.duration:.1f} s, over data.max_audio_seconds={limit}; "
                "raise the limit or cut the audio",
            )
        waves: list[dict[str, Any]] = []
        seconds = 0.0
        for sound in record.sounds:
            if not Path(sound).is_file():
                raise _BadSample(
                    MISSING_FILE,
                    f"audio file not found: {sound} (relative 'sound' paths resolve against the "
                    "manifest's folder); fix the path or remove the line",
                )
            try:
                wave = proc.load(sound)
            except ConfigError:  # the settings are wrong, not this sample: stop
                raise
            except (AfnextError, OSError) as exc:
                raise _BadSample(UNREADABLE_AUDIO, f"cannot use audio: {exc}") from exc
            seconds += wave.numel() / proc.sampling_rate
            waves.append({"array": wave, "sampling_rate": proc.sampling_rate, "path": str(sound)})
        if limit is not None and seconds > limit:
            raise _BadSample(
                AUDIO_TOO_LONG,
                f"the audio is {seconds:.1f} s, over data.max_audio_seconds={limit}; raise the limit or "
                "cut the audio",
            )
        try:
            sample = proc.encode(list(record.messages), waves)
        except ConfigError:
            raise
        except AudioError as exc:  # too short for one token, or not finite: this sample's audio
            raise _BadSample(UNREADABLE_AUDIO, f"cannot use audio: {exc}") from exc
        except AfnextError as exc:
            raise _BadSample("bad_record", str(exc)) from exc
        ids, labels = sample["input_ids"], sample["labels"]
        if self.max_length is not None and len(ids) > self.max_length:
            raise _BadSample(
                TOO_MANY_TOKENS,
                f"the sample is {len(ids)} tokens, over data.max_length={self.max_length}; raise "
                "data.max_length or shorten the audio / conversation",
            )
        input_features, input_features_mask = (
            sample["input_features"],
            sample["input_features_mask"],
        )
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),  # (L,)
            "labels": torch.tensor(labels, dtype=torch.long),  # (L,)
            "input_features": input_features,  # (W, n_mels, frames)
            "input_features_mask": input_features_mask,  # (W, frames)
            "audio_seconds": seconds,
            "num_tokens": len(ids),
            "id": record.id,
            "where": record.where,
            # For validation answers and their table: the first sound, the question, the options.
            "sound": record.sounds[0] if record.sounds else None,
            "question": _question(record.messages),
            "choices": [str(c) for c in record.extra.get("choices") or []],
        }
