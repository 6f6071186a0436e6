"""Score a predictions file without a model: what ``afnext eval score benchmark=NAME predictions=FILE`` runs.

Two kinds of predictions file:

* the benchmark's **own file** with the model output in the field its official script reads, for adapters
  that name one (``prediction_field``: MMAU ``model_output`` in ``mmau-test-mini.json``, MMAR
  ``answer_prediction`` in ``MMAR-meta.jsonl``, MMSU ``response``, MMAU-Pro / MuchoMusic ``model_output``).
  Everything needed (answers, choices, breakdown fields) is in the file: no root, no audio. Records without the
  field are skipped and counted;
* otherwise an ``{id, prediction}`` JSON list or JSON-lines file (``output``, ``response``, ``text``, ``pred``
  or ``model_output`` are accepted for ``prediction``); the references come from the benchmark's root.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import Benchmark, read_records
from afnext.evaluation.metrics.judged import Judge

__all__ = ["PREDICTION_KEYS", "read_predictions", "result_tables", "score_file"]

PREDICTION_KEYS = ("prediction", "output", "response", "text", "pred", "model_output")
"""Fields an ``{id, prediction}`` file may hold the model output in (the first present is used)."""


def read_predictions(path: str | Path) -> dict[str, Any]:
    """``{id: model output}`` from a JSON list or JSON-lines file (a ``null`` output, as ``afnext eval`` writes
    for a sample whose request failed, counts as no prediction).

    Raises:
        DataError: A record lacks ``id`` or an output field, or an id repeats (names the file and record).
    """
    predictions: dict[str, Any] = {}
    for number, record in enumerate(read_records(path), 1):
        key = next((k for k in PREDICTION_KEYS if k in record), None)
        if "id" not in record or key is None:
            raise DataError(
                f"{path} item {number}: needs 'id' and one of {list(PREDICTION_KEYS)} (fields: "
                f"{sorted(record)})"
            )
        ident = str(record["id"])
        if ident in predictions:
            raise DataError(f"{path} item {number}: id {ident!r} appears twice")
        if record[key] is not None:
            predictions[ident] = record[key]
    return predictions


def score_file(
    benchmark: Benchmark,
    predictions: str | Path,
    *,
    root: str | Path | None = None,
    judge: Judge | None = None,
) -> dict[str, Any]:
    """Score a predictions file with a benchmark adapter.

    Args:
        benchmark: The adapter (built from ``conf/benchmark/<name>.yaml``).
        predictions: The file (see the module docstring).
        root: The benchmark's root folder: needed when the file is an ``{id, prediction}`` file, used to
            resolve audio paths otherwise (default: the adapter's own root).
        judge: LLM judge for benchmarks with open answers.

    Returns:
        The adapter's scores plus ``predictions_file``.

    Raises:
        DataError: The file is malformed, no record has a prediction, or a prediction is not a string.
    """
    path = Path(predictions)
    if not path.is_file():
        raise DataError(f"{path}: no such predictions file (predictions=...)")
    field = benchmark.prediction_field
    if field:
        base = root if root is not None else getattr(benchmark, "root", None)
        items = benchmark.items(benchmark.load(path), root=base, source=str(path))
        outputs: dict[str, Any] = {}
        for item in items:
            if field in item.raw:
                value = item.raw[field]
                if not isinstance(value, str):
                    raise DataError(
                        f"{path}: item {item.id!r}: {field!r} is {type(value).__name__}, not text; write "
                        f"'' for an empty answer, or drop the field to skip the item"
                    )
                outputs[item.id] = value
        if not outputs:
            raise DataError(
                f"{path}: no record has a {field!r} field; give the benchmark's own file with each model "
                f"output in {field!r}"
            )
    else:
        items = benchmark.read(root)
        outputs = read_predictions(path)
    return {**benchmark.score(items, outputs, judge=judge), "predictions_file": str(path)}


_NOT_SCORES = ("benchmark", "metric", "resumed", "predictions_file", "official_file")
"""Result fields that are not scores (left out of the key / value table)."""


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def result_tables(result: Mapping[str, Any]) -> list[Any]:
    """Rich tables of a result: official / final-answer accuracy with breakdowns for multiple choice, the
    headline numbers otherwise."""
    from rich.table import Table

    title = f"{result.get('benchmark', 'benchmark')}: {result.get('metric', '')}"
    if "official" in result and "final_answer" in result:
        official, final = result["official"], result["final_answer"]
        table = Table(title=title)
        for column in ("group", "official %", "final answer %", "n"):
            table.add_column(column, justify="left" if column == "group" else "right")
        table.add_row(
            "overall", _pct(official["accuracy"]), _pct(final["accuracy"]), str(official["total"])
        )
        for name, groups in official.get("breakdown", {}).items():
            for group, row in groups.items():
                other = final["breakdown"].get(name, {}).get(group, {})
                table.add_row(
                    f"{name}: {group}",
                    _pct(row["accuracy"]),
                    _pct(other.get("accuracy")),
                    str(row["total"]),
                )
        tables = [table]
    elif isinstance(result.get("overall"), Mapping):  # rates overall and per group (TACoT)
        groups = {"overall": result["overall"], **result.get("by_question_type", {})}
        columns = [
            k for k, v in result["overall"].items() if isinstance(v, (int, float)) or v is None
        ]
        table = Table(title=title)
        table.add_column("group")
        for column in columns:
            table.add_column(column, justify="right")
        for name, rates in groups.items():
            table.add_row(name, *(_rate(rates.get(c)) for c in columns))
        tables = [table]
    else:
        tables = [Table(title=title)]
        tables[0].add_column("key")
        tables[0].add_column("value", justify="right")
        for key, value in result.items():
            if isinstance(value, (int, float, str)) and key not in _NOT_SCORES:
                text = f"{value:.4f}" if isinstance(value, float) else str(value)
                tables[0].add_row(key, text)
    footer = Table(show_header=False, box=None)
    footer.add_column()
    footer.add_row(
        f"items {result.get('items')}, scored {result.get('scored')}, skipped (no prediction) "
        f"{result.get('skipped')}"
    )
    for note in result.get("notes", []):
        footer.add_row(f"note: {note}")
    return [*tables, footer]
