"""Collate dataset samples into model batches: right padding, or sequence packing into rows of ``max_length``.

Skipped samples (:class:`~afnext.data.dataset.Skipped` markers) are dropped here and carried in the batch's
``skipped`` list so the main process can count and log them (``AudioDataModule`` does).

Packing (``pack=True``) concatenates samples into rows of at most ``max_length`` tokens (first fit, in sample
order), with ``position_ids`` restarting at 0 for every packed sample and an ``attention_mask`` of ones. Such
rows are only correct under an attention implementation that separates documents by ``position_ids``
(transformers' ``flash_attention_2``, afnext's ``afnext_varlen``); with ``eager`` / ``sdpa`` the samples of a
row would attend to each other, so the model must refuse packed batches there (the model's job, not the
collator's). The padding at the end of a row is its own dummy document (positions restart at 0, labels
-100), so every row of a packed batch starts at position 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from afnext.data.dataset import Sample, Skipped
from afnext.data.processor import IGNORE_INDEX
from afnext.errors import ConfigError

__all__ = ["Batch", "Collator"]

Batch = dict[str, Any]
"""A collated batch (see :meth:`Collator.__call__` for the keys and shapes)."""


class Collator:
    """Turns a list of samples (and skip markers) into one batch.

    Args:
        pad_token_id: The tokenizer's pad id (``processor.pad_token_id``).
        pack: Pack samples into rows of at most ``max_length`` tokens instead of one sample per row.
        max_length: Row length for packing (required with ``pack``).

    Raises:
        ConfigError: No pad id, or ``pack`` without ``max_length``.
    """

    def __init__(
        self, pad_token_id: int | None, *, pack: bool = False, max_length: int | None = None
    ) -> None:
        if pad_token_id is None:
            raise ConfigError(
                "the tokenizer has no pad token; set tokenizer.pad_token before training"
            )
        if pack and not max_length:
            raise ConfigError("data.pack=true needs data.max_length (the length of a packed row)")
        self.pad_token_id = int(pad_token_id)
        self.pack = pack
        self.max_length = max_length

    def __call__(self, items: Sequence[Sample | Skipped]) -> Batch:
        """Collate.

        Args:
            items: Samples from :class:`~afnext.data.dataset.ManifestDataset` and :class:`Skipped` markers.

        Returns:
            ``input_ids``, ``attention_mask``, ``labels``: ``(B, L)`` long, right-padded (pad id, 0, -100);
            with ``pack``, ``B`` is the number of packed rows and ``position_ids`` ``(B, L)`` is added;
            ``input_features`` ``(W, n_mels, frames)`` and ``input_features_mask`` ``(W, frames)``: every
            window of every sample, in the order the ``<sound>`` slots appear in the flattened ids (absent when
            no sample has audio); ``audio_seconds`` (float, sum), ``num_tokens`` (int, real tokens),
            ``num_samples`` (int); per sample, in row order: ``durations`` (audio seconds), ``ids``, ``where``, ``sounds`` (first audio path or
            None), ``questions`` (the user turn the first answer replies to), ``choices`` (options, or empty);
            ``skipped`` (list of :class:`Skipped`). When every item was skipped, the tensors have shape ``(0, 0)`` and
            ``num_samples`` is 0: the training step should do nothing for such a batch.
        """
        samples = [it for it in items if not isinstance(it, Skipped)]
        skipped = [it for it in items if isinstance(it, Skipped)]
        if self.pack and samples:
            rows = self._pack_rows([int(s["num_tokens"]) for s in samples])
        else:
            rows = [[i] for i in range(len(samples))]
        order = [i for row in rows for i in row]
        batch = self._pad_rows(samples, rows)
        windows = [samples[i]["input_features"] for i in order]
        if any(w.shape[0] for w in windows):
            batch["input_features"] = torch.cat(windows)  # (W, n_mels, frames)
            batch["input_features_mask"] = torch.cat(
                [samples[i]["input_features_mask"] for i in order]
            )
        batch["audio_seconds"] = float(sum(s["audio_seconds"] for s in samples))
        batch["num_tokens"] = int(sum(s["num_tokens"] for s in samples))
        batch["num_samples"] = len(samples)
        batch["durations"] = [float(samples[i]["audio_seconds"]) for i in order]
        batch["ids"] = [samples[i]["id"] for i in order]
        batch["where"] = [samples[i]["where"] for i in order]
        batch["sounds"] = [samples[i].get("sound") for i in order]
        batch["questions"] = [samples[i].get("question", "") for i in order]
        batch["choices"] = [samples[i].get("choices", []) for i in order]
        batch["skipped"] = skipped
        return batch

    def _pack_rows(self, lengths: list[int]) -> list[list[int]]:
        """First fit in sample order: each sample goes into the first row with room, else a new row."""
        assert self.max_length is not None
        rows: list[list[int]] = []
        room: list[int] = []
        for i, n in enumerate(lengths):
            if n > self.max_length:
                raise ConfigError(
                    f"a sample of {n} tokens cannot be packed into rows of data.max_length={self.max_length}; "
                    "the dataset must get the same max_length so it skips such samples"
                )
            k = next((r for r, free in enumerate(room) if free >= n), None)
            if k is None:
                rows.append([i])
                room.append(self.max_length - n)
            else:
                rows[k].append(i)
                room[k] -= n
        return rows

    def _pad_rows(self, samples: list[Sample], rows: list[list[int]]) -> Batch:
        widths = [sum(int(samples[i]["num_tokens"]) for i in row) for row in rows]
        width = max(widths, default=0)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros(shape, dtype=torch.long)
        positions = torch.zeros(shape, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                ids, lab = samples[i]["input_ids"], samples[i]["labels"]
                n = ids.shape[0]
                input_ids[r, start : start + n] = ids
                labels[r, start : start + n] = lab
                if self.pack:
                    # The previous document's last token must not learn to predict this one's first token
                    # (as transformers' DataCollatorWithFlattening does).
                    labels[r, start] = IGNORE_INDEX
                positions[r, start : start + n] = torch.arange(n)
                start += n
            if self.pack:
                attention[r] = 1
                positions[r, start:] = torch.arange(
                    width - start
                )  # padding tail: its own dummy document
            else:
                attention[r, :start] = 1
        batch: Batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.pack:
            batch["position_ids"] = positions
        return batch
