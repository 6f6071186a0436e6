"""A length penalty: DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), in words or characters.

With ``max_length`` L and ``buffer`` B: 0 up to ``L - B``, then falling linearly to -1 at L, and -1 beyond. It
discourages rambling without touching answers of a sensible length; weight it in the stage's ``grpo.rewards``.
"""

from __future__ import annotations

from afnext.errors import ConfigError
from afnext.training.rewards.base import RewardSample

__all__ = ["LengthPenalty"]

UNITS = ("words", "chars")


class LengthPenalty:
    """Soft penalty for completions longer than ``max_length - buffer`` (0 down to -1).

    Args:
        max_length: Length at which the penalty reaches -1.
        buffer: Length over which it ramps up (``0 < buffer <= max_length``).
        unit: ``words`` (whitespace-separated) or ``chars``.

    Raises:
        ConfigError: A bad length, buffer or unit.
    """

    def __init__(self, *, max_length: int = 200, buffer: int = 50, unit: str = "words") -> None:
        if unit not in UNITS:
            raise ConfigError(f"reward.length.unit={unit!r}; use one of {list(UNITS)}")
        if max_length < 1 or not 0 < buffer <= max_length:
            raise ConfigError(
                f"reward.length needs max_length >= 1 and 0 < buffer <= max_length; got {max_length}, {buffer}"
            )
        self.max_length, self.buffer, self.unit = int(max_length), int(buffer), unit

    def __call__(self, sample: RewardSample, completion: str) -> float:
        length = len(completion.split()) if self.unit == "words" else len(completion)
        start = self.max_length - self.buffer
        if length <= start:
            return 0.0
        if length >= self.max_length:
            return -1.0
        return (start - length) / self.buffer
