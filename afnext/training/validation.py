"""Validation metrics by audio duration, summed over ranks before they are read.

A long-audio stage must not pick its best checkpoint on 30-second clips, so validation loss and answer accuracy
are kept per duration bucket (``0-30s``, ``30-120s``, ...) as well as overall. Loss is token-weighted (summed
token losses over target tokens), accuracy is over answered samples; both are sums that every rank adds its own
samples to, so one all-reduce gives the global numbers.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

__all__ = ["DurationBuckets", "ValidationTotals", "bucket_rows"]

_LOSS, _TARGETS, _SAMPLES, _ANSWERED, _CORRECT = range(5)


class DurationBuckets:
    """Buckets of audio duration cut at ``edges`` seconds (``[30, 120]``: ``0-30s``, ``30-120s``, ``120s+``).

    Args:
        edges: Increasing positive bucket limits in seconds (a sample of exactly 30 s is in ``0-30s``).
    """

    def __init__(self, edges: Sequence[float]) -> None:
        from afnext.errors import ConfigError

        self.edges = [float(e) for e in edges]
        if any(e <= 0 for e in self.edges) or self.edges != sorted(set(self.edges)):
            raise ConfigError(
                f"optim.module.duration_buckets={list(edges)} must be increasing positive seconds"
            )
        bounds = [0.0, *self.edges]
        self.names = [f"{_fmt(a)}-{_fmt(b)}s" for a, b in zip(bounds, self.edges)]
        self.names.append(f"{_fmt(bounds[-1])}s+")

    def index(self, seconds: float) -> int:
        """The bucket of a sample with ``seconds`` of audio."""
        return bisect.bisect_left(self.edges, float(seconds))

    def __len__(self) -> int:
        return len(self.names)


def _fmt(x: float) -> str:
    return f"{x:g}"


class ValidationTotals:
    """Sums per duration bucket: token losses, target tokens, samples, answered samples, right answers.

    Args:
        buckets: The duration buckets.
    """

    def __init__(self, buckets: DurationBuckets) -> None:
        self.buckets = buckets
        self.sums = torch.zeros(len(buckets), 5, dtype=torch.float64)

    def add_losses(
        self,
        durations: Sequence[float],
        loss_sums: torch.Tensor,
        targets: torch.Tensor,
        count_samples: bool = True,
    ) -> None:
        """Add each sample's summed token loss and target tokens (one row per sample); ``count_samples=False``
        where another rank of a sequence-parallel group counts the same samples (its share of their tokens
        still adds up)."""
        loss_sums, targets = loss_sums.detach().double().cpu(), targets.detach().double().cpu()
        for seconds, loss, count in zip(durations, loss_sums.tolist(), targets.tolist()):
            row = self.sums[self.buckets.index(seconds)]
            row[_LOSS] += loss
            row[_TARGETS] += count
            row[_SAMPLES] += float(count_samples)

    def add_answers(self, durations: Sequence[float], correct: Sequence[bool]) -> None:
        """Add the scored answers of some samples."""
        for seconds, right in zip(durations, correct):
            row = self.sums[self.buckets.index(seconds)]
            row[_ANSWERED] += 1
            row[_CORRECT] += float(bool(right))

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum over every rank (a collective: all ranks call it); nothing without ``torch.distributed``."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sums = self.sums.to(device)
            dist.all_reduce(sums)
            self.sums = sums.cpu()

    def metrics(self, prefix: str = "val") -> dict[str, float]:
        """``{prefix}/loss``, ``{prefix}/accuracy`` and the same per bucket (``{prefix}/loss/0-30s``), plus
        ``{prefix}/samples/<bucket>``; a metric without data is left out."""
        out: dict[str, float] = {}
        total = self.sums.sum(dim=0)
        rows = [("", total)] + [(f"/{n}", r) for n, r in zip(self.buckets.names, self.sums)]
        for suffix, row in rows:
            if row[_TARGETS] > 0:
                out[f"{prefix}/loss{suffix}"] = float(row[_LOSS] / row[_TARGETS])
            if row[_ANSWERED] > 0:
                out[f"{prefix}/accuracy{suffix}"] = float(row[_CORRECT] / row[_ANSWERED])
            if suffix and row[_SAMPLES] > 0:
                out[f"{prefix}/samples{suffix}"] = float(row[_SAMPLES])
        return out


def bucket_rows(metrics: dict[str, float], prefix: str = "val") -> list[tuple[str, str, str, str]]:
    """``(bucket, samples, loss, accuracy)`` rows of :meth:`ValidationTotals.metrics` output, the overall row
    last (missing values as ``-``), for a printed table."""
    buckets = []
    for key in metrics:
        for kind in ("loss", "accuracy", "samples"):
            head = f"{prefix}/{kind}/"
            if key.startswith(head) and key[len(head) :] not in buckets:
                buckets.append(key[len(head) :])

    def cell(key: str, fmt: str) -> str:
        return format(metrics[key], fmt) if key in metrics else "-"

    rows = [
        (
            b,
            cell(f"{prefix}/samples/{b}", ".0f"),
            cell(f"{prefix}/loss/{b}", ".4f"),
            cell(f"{prefix}/accuracy/{b}", ".3f"),
        )
        for b in buckets
    ]
    total = sum(metrics.get(f"{prefix}/samples/{b}", 0.0) for b in buckets)
    rows.append(
        ("all", f"{total:.0f}", cell(f"{prefix}/loss", ".4f"), cell(f"{prefix}/accuracy", ".3f"))
    )
    return rows
