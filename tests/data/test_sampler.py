"""Duration bucketing, rank sharding, weighted mixtures, and resuming mid-epoch."""

from __future__ import annotations

import random
import statistics

import pytest

from afnext.data.sampler import DurationBucketBatchSampler, WeightedMixtureSampler
from afnext.errors import ConfigError


def _durations(n: int = 200, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.5, 30.0) for _ in range(n)]


def test_buckets_group_similar_durations_and_cover_every_index():
    durations = _durations()
    sampler = DurationBucketBatchSampler(durations, batch_size=8, num_buckets=10, seed=1)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(durations)))
    assert max(len(b) for b in batches) == 8
    spread = statistics.mean(
        max(durations[i] for i in b) - min(durations[i] for i in b) for b in batches
    )
    rng = random.Random(0)
    shuffled = rng.sample(range(len(durations)), len(durations))
    random_spread = statistics.mean(
        max(durations[i] for i in shuffled[k : k + 8])
        - min(durations[i] for i in shuffled[k : k + 8])
        for k in range(0, len(shuffled), 8)
    )
    assert spread < random_spread / 4  # bucketing: ~3 s spread vs ~22 s for random batches


def test_small_buckets_still_fill_batches():
    batches = list(DurationBucketBatchSampler(_durations(12), batch_size=2, num_buckets=10, seed=0))
    assert [len(b) for b in batches] == [2] * 6


def test_max_batch_seconds_caps_the_audio_per_batch():
    durations = [*_durations(), 100.0]  # longer than the cap: a batch of its own
    sampler = DurationBucketBatchSampler(durations, max_batch_seconds=60.0, seed=0)
    batches = list(sampler)
    for batch in batches:
        total = sum(max(durations[i], 1.0) for i in batch)
        assert total <= 60.0 or len(batch) == 1
    assert [len(b) for b in batches if 200 in b] == [1]
    assert sorted(i for b in batches for i in b) == list(range(len(durations)))


def test_order_is_seeded_per_epoch():
    durations = _durations()
    a = DurationBucketBatchSampler(durations, batch_size=4, seed=3)
    b = DurationBucketBatchSampler(durations, batch_size=4, seed=3)
    assert list(a) == list(b)
    epoch0 = list(a)
    a.sampler.set_epoch(1)  # what Lightning's _set_sampler_epoch calls
    assert list(a) != epoch0
    assert list(DurationBucketBatchSampler(durations, batch_size=4, seed=4)) != epoch0
    ordered = list(DurationBucketBatchSampler(durations, batch_size=4, shuffle=False))
    firsts = [durations[b[0]] for b in ordered]
    assert firsts == sorted(firsts)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_the_same_number_of_batches(drop_last):
    durations = _durations(103)
    total = len(list(DurationBucketBatchSampler(durations, batch_size=4, seed=0)))
    shards = [
        list(
            DurationBucketBatchSampler(
                durations, batch_size=4, seed=0, num_replicas=3, rank=r, drop_last=drop_last
            )
        )
        for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for b in s for i in b]
    if drop_last:
        assert len(shards[0]) == total // 3
        assert len(seen) == len(set(seen))  # nothing repeated
    else:
        assert len(shards[0]) == -(-total // 3)
        assert set(seen) == set(range(len(durations)))  # everything seen, a few repeated


def test_mixture_respects_weights_and_cycles_each_manifest():
    mixture = WeightedMixtureSampler([50, 500], [3.0, 1.0], num_samples=2000, seed=0)
    draws = list(mixture)
    share = sum(1 for i in draws if i < 50) / len(draws)
    assert 0.72 < share < 0.78  # 3:1 -> 0.75 (std ~0.01 over 2,000 draws)
    small = [i for i in draws if i < 50]
    assert sorted(small[:50]) == list(range(50))  # no repeat before the manifest is used up
    assert all(50 <= i < 550 for i in draws if i >= 50)
    assert len(mixture) == 2000
    assert list(WeightedMixtureSampler([50, 500], [3.0, 1.0], num_samples=2000, seed=0)) == draws
    mixture.set_epoch(1)
    assert list(mixture) != draws


def test_mixture_feeds_the_bucket_sampler():
    durations = _durations(60)
    mixture = WeightedMixtureSampler([10, 50], [1.0, 0.0], num_samples=30, seed=0)
    sampler = DurationBucketBatchSampler(durations, batch_size=5, mixture=mixture, seed=0)
    drawn = [i for b in sampler for i in b]
    assert len(drawn) == 30 and all(i < 10 for i in drawn)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="batch_size"):
        DurationBucketBatchSampler([1.0])
    with pytest.raises(ConfigError, match="weights"):
        WeightedMixtureSampler([1, 2], [1.0])
    with pytest.raises(ConfigError, match="no manifest"):
        WeightedMixtureSampler([0, 2], [1.0, 0.0])


@pytest.mark.parametrize("use_mixture", [False, True])
def test_resume_yields_exactly_the_remaining_batches(use_mixture):
    durations = _durations(90)

    def make() -> DurationBucketBatchSampler:
        mixture = WeightedMixtureSampler([30, 60], [2.0, 1.0], seed=7) if use_mixture else None
        return DurationBucketBatchSampler(durations, batch_size=4, seed=7, mixture=mixture)

    full = make()
    full.set_epoch(2)
    expected = list(full)

    first = make()
    first.set_epoch(2)
    it = iter(first)
    head = [next(it) for _ in range(5)]
    state = first.state_dict()
    assert state == {"epoch": 2, "position": 5, "seed": 7}

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning sets the restored epoch again before iterating
    rest = list(resumed)
    assert head + rest == expected
    assert len(resumed) == len(expected)  # the epoch's length, as Lightning counts it
    assert list(resumed) == expected  # the next iteration is a whole epoch again


def test_position_counts_consumed_batches_when_told():
    sampler = DurationBucketBatchSampler(_durations(40), batch_size=4, seed=0)
    sampler.count_on_yield = False
    it = iter(sampler)
    for _ in range(4):  # a DataLoader prefetching ahead
        next(it)
    sampler.advance()
    sampler.advance()
    assert sampler.state_dict()["position"] == 2
    other = DurationBucketBatchSampler(_durations(40), batch_size=4, seed=1)
    with pytest.raises(ConfigError, match="same seed"):
        other.load_state_dict(sampler.state_dict())


def test_ranks_get_batches_of_similar_work_at_each_step():
    """With a work estimate, each step's batches (one per rank) are ones of similar work: the batch holding a
    long sample is paired with the next heaviest, not with a short one."""
    from afnext.data.sampler import DurationBucketBatchSampler

    durations = [1.0] * 14 + [1800.0, 900.0]
    work = {i: d * d for i, d in enumerate(durations)}  # attention-like: quadratic in length

    def cost(batch):
        return sum(work[i] for i in batch)

    plain = [
        DurationBucketBatchSampler(durations, batch_size=1, num_replicas=2, rank=r, seed=3)
        for r in range(2)
    ]
    balanced = [
        DurationBucketBatchSampler(
            durations, batch_size=1, num_replicas=2, rank=r, seed=3, cost=cost
        )
        for r in range(2)
    ]

    def worst_wait(samplers):
        a, b = (s.epoch_batches(0) for s in samplers)
        return max(abs(cost(x) - cost(y)) for x, y in zip(a, b))

    assert worst_wait(balanced) == 1800.0**2 - 900.0**2  # the two long samples share a step
    assert worst_wait(plain) > worst_wait(balanced)
    seen = sorted(i for s in balanced for batch in s.epoch_batches(0) for i in batch)
    assert seen == list(range(16))  # every sample once
