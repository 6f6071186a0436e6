"""Duration-bucketed batching and weighted mixtures of manifests, both resumable mid-epoch.

:class:`DurationBucketBatchSampler` sorts an epoch's samples by duration (random tie-break), cuts them into
``num_buckets`` buckets of equal count, shuffles inside each bucket, fills batches in bucket order up to
``batch_size`` samples and/or ``max_batch_seconds`` of audio, shuffles the batches (seeded by ``seed`` and
the epoch), and gives every distributed rank the same number of batches (padding by repeating batches, or
dropping the remainder with ``drop_last``), as ``DistributedSampler`` does for samples. Similar durations
in a batch keep padding (text) and wasted window slots (audio) low, as in lhotse's / ESPnet's bucketing
samplers.

:class:`WeightedMixtureSampler` draws an epoch's indices from several manifests by weight (per-stage data
mixtures): a manifest is picked with probability proportional to its weight, then its next sample from a
per-manifest permutation (reshuffled when used up, so a small manifest repeats and a large one is seen in
part). The bucket sampler takes it as ``mixture`` to batch those indices.

Both keep ``(epoch, position)``: ``state_dict()`` / ``load_state_dict()`` continue a resumed run with the
batch after the last consumed one. DataLoader workers and Lightning prefetch ahead of the training step, so
the position counts what the main process consumed: ``AudioDataModule`` sets ``count_on_yield=False`` and
calls :meth:`advance` per batch it receives; iterated directly, position counts what was yielded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from afnext.errors import ConfigError

__all__ = ["DurationBucketBatchSampler", "WeightedMixtureSampler", "spread_order"]


def _generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + salt) % (2**63))


def spread_order(n: int) -> list[int]:
    """``0 .. n-1`` reordered so that every prefix spreads evenly over the range: the middle first, then the
    middles of the two halves, and so on (a breadth-first walk of the bisection tree)."""
    order: list[int] = []
    queue = [(0, n)]
    head = 0
    while head < len(queue):
        lo, hi = queue[head]
        head += 1
        if lo >= hi:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        queue += [(lo, mid), (mid + 1, hi)]
    return order


class _Resumable:
    """Epoch counter and position in the epoch, shared by the samplers."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = 0
        self.count_on_yield = True
        self._position = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (Lightning calls it every epoch)."""
        self.epoch = int(epoch)

    def advance(self, n: int = 1) -> None:
        """Record that the main process consumed ``n`` more items of this epoch."""
        self._position += n

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position", "seed"}``: where the run is in its data."""
        return {"epoch": self.epoch, "position": self._position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration of that epoch skips the ``position`` consumed items.

        Raises:
            ConfigError: The state was saved with another seed (the order would differ).
        """
        if int(state.get("seed", self.seed)) != self.seed:
            raise ConfigError(
                f"the checkpoint's data order used data.seed={state['seed']}, this run has {self.seed}; "
                "resume with the same seed"
            )
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._resume = (self.epoch, self._position)

    def _iterate(self, items: list[Any]) -> Iterator[Any]:
        start = 0
        if self._resume is not None:
            epoch, position = self._resume
            self._resume = None
            if epoch == self.epoch:
                start = min(position, len(items))
        self._position = start
        for item in items[start:]:
            if self.count_on_yield:
                self._position += 1
            yield item


class WeightedMixtureSampler(_Resumable, Sampler[int]):
    """Sample indices of concatenated manifests by per-manifest weight.

    Args:
        group_sizes: Samples per manifest; indices of manifest ``k`` are
            ``sum(group_sizes[:k]) ... + group_sizes[k] - 1`` (as :class:`ManifestDataset` lays them out).
        weights: Relative weight of each manifest (probability of drawing from it, not per sample).
        num_samples: Draws per epoch (default: the total number of samples).
        seed: Seeds the draws together with the epoch.

    Raises:
        ConfigError: Weights and groups disagree in number, a weight is negative, or nothing can be drawn.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        weights: Sequence[float],
        *,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if len(group_sizes) != len(weights):
            raise ConfigError(
                f"{len(weights)} mixture weights for {len(group_sizes)} manifests; give one each"
            )
        if any(w < 0 for w in weights):
            raise ConfigError(f"mixture weights must be >= 0, got {list(weights)}")
        usable = [w if n > 0 else 0.0 for n, w in zip(group_sizes, weights)]
        if sum(usable) <= 0:
            raise ConfigError("the data mixture has no manifest with samples and a weight > 0")
        self.group_sizes = [int(n) for n in group_sizes]
        self.offsets = [sum(self.group_sizes[:k]) for k in range(len(self.group_sizes))]
        self.probabilities = torch.tensor(usable, dtype=torch.float64) / sum(usable)
        self.num_samples = int(num_samples if num_samples is not None else sum(self.group_sizes))
        self._cache: tuple[int, list[int]] | None = None

    def epoch_indices(self, epoch: int) -> list[int]:
        """All indices drawn in ``epoch`` (deterministic in ``seed`` and ``epoch``)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        gen = _generator(self.seed, epoch, salt=1)
        picks = torch.multinomial(
            self.probabilities, self.num_samples, replacement=True, generator=gen
        )
        perms: dict[int, list[int]] = {}
        cursor: dict[int, int] = {}
        indices: list[int] = []
        for k in picks.tolist():
            if cursor.get(k, self.group_sizes[k]) >= self.group_sizes[k]:
                perms[k] = torch.randperm(self.group_sizes[k], generator=gen).tolist()
                cursor[k] = 0
            indices.append(self.offsets[k] + perms[k][cursor[k]])
            cursor[k] += 1
        self._cache = (epoch, indices)
        return indices

    def __iter__(self) -> Iterator[int]:
        return self._iterate(self.epoch_indices(self.epoch))

    def __len__(self) -> int:
        return self.num_samples


class DurationBucketBatchSampler(_Resumable, Sampler[list[int]]):
    """Batches of indices with similar durations, sharded over distributed ranks.

    Args:
        durations: Seconds of audio per dataset index (``ManifestDataset.durations``).
        batch_size: Most samples per batch (``None``: only ``max_batch_seconds`` caps).
        max_batch_seconds: Most audio seconds per batch, summed over its samples; a sample longer than this
            gets a batch of its own. ``None``: only ``batch_size`` caps.
        num_buckets: Number of duration buckets per epoch.
        shuffle: Shuffle within buckets and the order of batches (per epoch); off: batches in duration order.
        seed: Seeds the shuffles together with the epoch.
        num_replicas: Distributed world size.
        rank: This process's rank.
        drop_last: Drop the batches that do not divide evenly over ranks instead of repeating some.
        mixture: Draw each epoch's indices from this mixture instead of taking every index once.
        min_sample_seconds: Least a sample counts toward ``max_batch_seconds`` (text-only samples have no
            audio but still cost compute).
        windows: Audio windows (encoder inputs) per dataset index; with ``max_windows`` a batch holds at most
            that many (the encoder's cost is per window). A sample with more gets a batch of its own.
        max_windows: Most audio windows per batch (``data.max_windows_per_batch``); ``None``: no cap.
        stratified: Without ``shuffle``: order the batches so that every prefix spreads over the duration range
            (the median batch first, then the quartiles, ...) instead of shortest first; validation with
            ``limit_val_batches`` then sees long audio too.
        cost: ``batch indices -> work`` (:func:`afnext.data.cost.step_flops`). With several ranks, each
            optimizer step's batches are ones of similar work (batches sorted by work, dealt in steps of
            ``num_replicas``, the steps shuffled), so no rank waits on one that holds a 30-minute sample.

    Raises:
        ConfigError: Neither cap is set, a cap is not positive, or ``rank`` is outside ``num_replicas``.
    """

    def __init__(
        self,
        durations: Sequence[float],
        *,
        batch_size: int | None = None,
        max_batch_seconds: float | None = None,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        mixture: WeightedMixtureSampler | None = None,
        min_sample_seconds: float = 1.0,
        windows: Sequence[int] | None = None,
        max_windows: int | None = None,
        stratified: bool = False,
        cost: Callable[[list[int]], float] | None = None,
    ) -> None:
        super().__init__(seed)
        if batch_size is None and max_batch_seconds is None:
            raise ConfigError("set data.batch_size and/or data.max_batch_seconds to cap a batch")
        if (batch_size is not None and batch_size < 1) or (
            max_batch_seconds is not None and max_batch_seconds <= 0
        ):
            raise ConfigError(
                f"data.batch_size={batch_size} / data.max_batch_seconds={max_batch_seconds} must be positive"
            )
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is outside num_replicas={num_replicas}")
        if max_windows is not None and (max_windows < 1 or windows is None):
            raise ConfigError(
                f"data.max_windows_per_batch={max_windows} must be positive and needs the windows per sample"
            )
        self.durations = [float(d) for d in durations]
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.num_buckets = max(1, int(num_buckets))
        self.shuffle = shuffle
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.drop_last = drop_last
        self.mixture = mixture
        self.min_sample_seconds = float(min_sample_seconds)
        self.windows = None if windows is None else [int(w) for w in windows]
        self.max_windows = max_windows
        self.stratified = stratified
        self.cost = cost
        self._cache: tuple[int, list[list[int]]] | None = None

    def _fill(self, indices: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        seconds = 0.0
        windows = 0
        for i in indices:
            cost = max(self.durations[i], self.min_sample_seconds)
            n_windows = self.windows[i] if self.windows is not None else 0
            full = self.batch_size is not None and len(current) >= self.batch_size
            over = self.max_batch_seconds is not None and seconds + cost > self.max_batch_seconds
            too_many = self.max_windows is not None and windows + n_windows > self.max_windows
            if current and (full or over or too_many):
                batches.append(current)
                current, seconds, windows = [], 0.0, 0
            current.append(i)
            seconds += cost
            windows += n_windows
        if current:
            batches.append(current)
        return batches

    def all_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch`` before sharding (deterministic in ``seed`` and ``epoch``)."""
        gen = _generator(self.seed, epoch)
        if self.mixture is not None:
            indices = list(self.mixture.epoch_indices(epoch))
        else:
            indices = list(range(len(self.durations)))
        if self.shuffle:
            indices = [indices[j] for j in torch.randperm(len(indices), generator=gen).tolist()]
        indices.sort(key=lambda i: self.durations[i])  # stable: the shuffle breaks ties
        n = len(indices)
        ordered: list[int] = []
        for b in range(self.num_buckets):
            bucket = indices[n * b // self.num_buckets : n * (b + 1) // self.num_buckets]
            if self.shuffle:
                bucket = [bucket[j] for j in torch.randperm(len(bucket), generator=gen).tolist()]
            ordered.extend(bucket)
        # Batches are filled across bucket boundaries (neighbouring buckets hold similar durations), so
        # small buckets never leave a trail of part-filled batches; only the epoch's last batch may be short.
        batches = self._fill(ordered)
        if self.shuffle:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
        elif self.stratified:
            batches = [batches[j] for j in spread_order(len(batches))]
        return batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``; every rank gets the same number."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self.all_batches(epoch)
        replicas = self.num_replicas
        if replicas > 1 and batches:
            if self.drop_last:
                batches = batches[: len(batches) // replicas * replicas]
            else:
                missing = -len(batches) % replicas
                batches = batches + [batches[j % len(batches)] for j in range(missing)]
            if self.cost is not None:
                batches = self._balance(batches, epoch)
        mine = batches[self.rank :: replicas]
        self._cache = (epoch, mine)
        return mine

    def _balance(self, batches: list[list[int]], epoch: int) -> list[list[int]]:
        """Steps of ``num_replicas`` batches of similar work (sorted by work), in shuffled step order."""
        assert self.cost is not None
        ranked = sorted(batches, key=self.cost)
        steps = [
            ranked[i : i + self.num_replicas] for i in range(0, len(ranked), self.num_replicas)
        ]
        if self.shuffle:
            gen = _generator(self.seed, epoch, salt=2)
            steps = [steps[j] for j in torch.randperm(len(steps), generator=gen).tolist()]
        return [batch for step in steps for batch in step]

    @property
    def sampler(self) -> DurationBucketBatchSampler:
        """This object: Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` every epoch."""
        return self

    def __iter__(self) -> Iterator[list[int]]:
        return self._iterate(self.epoch_batches(self.epoch))

    def __len__(self) -> int:
        """Batches of the current epoch on this rank (a resumed epoch yields only the rest of them)."""
        return len(self.epoch_batches(self.epoch))
