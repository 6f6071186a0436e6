"""Accuracy in percent, overall and per value of metadata fields, as the official MMAU / MMAR scripts print it.

The official scripts count an item in the group of each field's value (``task``, ``difficulty``, ``sub-category``
for MMAU; ``modality``, ``category``, ``sub-category`` for MMAR) and print ``correct / total * 100``. Here a
field whose value is missing or ``None`` puts the item in no group of that field (the scripts do the same for a
missing ``sub-category``), and a list value (MMAU's ``category`` is ``["Reasoning"]`` on 13 items, MuchoMusic's
``reasoning`` holds several labels) puts it in the group of each element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["accuracy_summary", "group_values"]


def group_values(value: Any) -> list[str]:
    """The groups a metadata value puts an item in: none for ``None`` / ``""``, each element of a list."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and v != ""]
    return [str(value)]


def _rate(correct: int, total: int) -> dict[str, Any]:
    return {
        "accuracy": 100.0 * correct / total if total else None,
        "correct": correct,
        "total": total,
    }


def accuracy_summary(
    flags: Sequence[bool | None],
    meta: Sequence[Mapping[str, Any]],
    fields: Sequence[str] = (),
    order: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Accuracy over the counted items, with a breakdown per field.

    Args:
        flags: One entry per scored item: right, wrong, or ``None`` when the rule does not count it (MMSU skips
            responses it cannot parse).
        meta: The items' metadata, aligned with ``flags``.
        fields: Metadata fields to break the accuracy down by.
        order: Per field, the groups to list first and in this order (the official scripts' order); other
            groups follow in order of first appearance.

    Returns:
        ``{"accuracy": percent or None, "correct", "total", "not_counted", "breakdown": {field: {group:
        {"accuracy", "correct", "total"}}}}``; groups without items are left out.
    """
    order = order or {}
    counted = [(bool(f), m) for f, m in zip(flags, meta) if f is not None]
    correct = sum(f for f, _ in counted)
    summary = {**_rate(correct, len(counted)), "not_counted": len(flags) - len(counted)}
    breakdown: dict[str, dict[str, Any]] = {}
    for name in fields:
        tallies: dict[str, list[int]] = {group: [0, 0] for group in order.get(name, ())}
        for flag, m in counted:
            for group in group_values(m.get(name)):
                tally = tallies.setdefault(group, [0, 0])
                tally[0] += flag
                tally[1] += 1
        breakdown[name] = {g: _rate(c, t) for g, (c, t) in tallies.items() if t}
    summary["breakdown"] = breakdown
    return summary
