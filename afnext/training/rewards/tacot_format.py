"""TACoT format: is the completion a well-formed grounded response?

1.0 when :func:`afnext.reasoning.format.validate_response` finds no issue (one closed ``<think>`` block, one step
per line each citing a ``<t>START-END</t>`` span with ``START <= END <= duration``, a final answer after
``</think>``), else 0.0 (R1-AQA's binary format reward), or with ``partial: true`` ``1 - issues / max_issues``
floored at 0, which still ranks a nearly right chain above a broken one.
"""

from __future__ import annotations

from afnext.errors import ConfigError
from afnext.reasoning.format import validate_response
from afnext.training.rewards.base import RewardSample

__all__ = ["TACoTFormatReward"]


class TACoTFormatReward:
    """Rewards responses the TACoT validator accepts.

    Args:
        require_think: A ``<think>`` chain is required (Think mode); False checks an Instruct answer (spans
            only).
        partial: Graded instead of all-or-nothing (see the module docstring).
        max_issues: Issues that take a partial reward to 0.

    Raises:
        ConfigError: ``max_issues`` < 1.
    """

    def __init__(
        self, *, require_think: bool = True, partial: bool = False, max_issues: int = 4
    ) -> None:
        if max_issues < 1:
            raise ConfigError(f"reward.tacot_format.max_issues={max_issues} must be >= 1")
        self.require_think, self.partial, self.max_issues = require_think, partial, max_issues

    def __call__(self, sample: RewardSample, completion: str) -> float:
        """Score one completion against the audio's duration (spans past it are issues)."""
        issues = validate_response(
            completion, duration=sample.duration, require_think=self.require_think
        )
        if not self.partial:
            return float(not issues)
        return max(0.0, 1.0 - len(issues) / self.max_issues)
