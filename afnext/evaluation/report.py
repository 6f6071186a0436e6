"""What an evaluation run reports: per-benchmark results, ``results.json``, a Markdown table, W&B.

Each benchmark's result is its adapter's ``score`` plus what happened to the samples: ``audio`` (missing or
unreadable files, listed and counted), ``failed`` (samples whose request failed, with the error) and the
generation settings. The Markdown table shows each benchmark's headline numbers (:func:`headline`).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afnext.evaluation.benchmarks.base import Benchmark, BenchmarkItem

__all__ = [
    "benchmark_result",
    "headline",
    "log_to_logger",
    "markdown_table",
    "print_results",
    "write_official_file",
    "write_reports",
]

_COUNTS = ("items", "scored", "skipped")


def benchmark_result(
    benchmark: Benchmark,
    items: Sequence[BenchmarkItem],
    lines: Mapping[str, Mapping[str, Any]],
    missing: Sequence[Mapping[str, str]],
    *,
    judge: Any = None,
) -> dict[str, Any]:
    """Score one benchmark's predictions and say what happened to every sample.

    Args:
        benchmark: The adapter.
        items: Its items (as evaluated).
        lines: ``{id: predictions-file line}`` (``prediction`` is ``None`` for a failed sample).
        missing: ``benchmark.missing_audio(items)``.
        judge: LLM judge for adapters that need one.
    """
    predictions = {k: v["prediction"] for k, v in lines.items() if v.get("prediction") is not None}
    failed = [
        {"id": k, "error": v.get("error")} for k, v in lines.items() if v.get("prediction") is None
    ]
    if predictions:
        scores = benchmark.score(items, predictions, judge=judge)
    else:  # nothing to score (every audio missing, say): the counts still say why
        scores = {
            "benchmark": benchmark.name,
            "items": len(items),
            "scored": 0,
            "skipped": len(items),
        }
    return {
        **scores,
        "audio": {
            "items": len(items),
            "audio_files": sum(len(i.audio) for i in items),
            "missing": len(missing),
            "files": list(missing),
        },
        "failed": {"count": len(failed), "items": failed},
    }


def write_official_file(
    benchmark: Benchmark,
    items: Sequence[BenchmarkItem],
    lines: Mapping[str, Mapping[str, Any]],
    folder: str | Path,
) -> Path | None:
    """The benchmark's own file with each answer in the field its official script reads (MMAU
    ``model_output``, MMAR ``answer_prediction``, ...), for adapters that name one; items without an answer
    keep no such field (the official scripts skip them). A ``.json`` release is written as a JSON list, any other
    as JSON lines (``<name>.jsonl`` for a release read from several files). ``afnext eval score
    predictions=<this file>`` and the official script both read it.

    Returns:
        The file, or ``None`` when the adapter names no prediction field.
    """
    from afnext.storage import atomic_write_text

    field = getattr(benchmark, "prediction_field", None)
    if not field:
        return None
    records = []
    for item in items:
        record = dict(item.raw)
        record.pop(field, None)
        prediction = lines.get(item.id, {}).get("prediction")
        if prediction is not None:
            record[field] = prediction
        records.append(record)
    name = Path(getattr(benchmark, "file", "") or f"{benchmark.name}.jsonl").name
    if glob.has_magic(name):  # several released files (a glob): one file named after the benchmark
        name = f"{benchmark.name}.jsonl"
    path = Path(folder) / (
        name if name.endswith((".json", ".jsonl")) else f"{Path(name).stem}.jsonl"
    )
    if path.suffix == ".json":
        text = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)
    return path


def headline(result: Mapping[str, Any]) -> dict[str, float]:
    """A benchmark result's main numbers: official and final-answer accuracy for multiple choice, the
    ``overall`` rates for TACoT, the top-level numbers otherwise (WER, CIDEr-D, judge score, ...)."""
    if isinstance(result.get("official"), Mapping) and isinstance(
        result.get("final_answer"), Mapping
    ):
        return {
            "accuracy % (official rule)": result["official"].get("accuracy"),
            "accuracy % (final answer)": result["final_answer"].get("accuracy"),
        }
    source = result["overall"] if isinstance(result.get("overall"), Mapping) else result
    return {
        key: value
        for key, value in source.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and key not in (*_COUNTS, "samples", "missing")
    }


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(results: Mapping[str, Any]) -> str:
    """One row per headline number of each benchmark, with the sample counts."""
    rows = [
        "| benchmark | metric | value | items | scored | missing audio | failed |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results["benchmarks"].items():
        numbers = headline(result) or {"-": None}
        for metric, value in numbers.items():
            rows.append(
                f"| {name} | {metric} | {_number(value)} | {result.get('items', '-')} | "
                f"{result.get('scored', '-')} | {result['audio']['missing']} | {result['failed']['count']} |"
            )
    return "\n".join(rows) + "\n"


def write_reports(results: Mapping[str, Any], out_dir: str | Path) -> None:
    """``results.json`` and ``results.md`` in ``out_dir`` (written atomically)."""
    from afnext.storage import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    )
    run = results.get("run", {})
    text = (
        f"# afnext eval\n\ncheckpoint: `{results.get('checkpoint')}`\n\n{markdown_table(results)}\n"
        f"{run.get('generated', 0)} samples generated in {run.get('seconds', 0)} s.\n"
    )
    atomic_write_text(out / "results.md", text)


def log_to_logger(
    logger: Any,
    results: Mapping[str, Any],
    tables: Mapping[str, tuple[Sequence[BenchmarkItem], Mapping[str, Mapping[str, Any]]]],
    *,
    rows: int = 200,
) -> None:
    """Log the headline numbers, and with a ``WandbLogger`` a table per benchmark (``eval/<name>``: id, playable
    audio, prompt, prediction, reference, error; the first ``rows`` items)."""
    metrics = {
        f"eval/{name}/{metric}": value
        for name, result in results["benchmarks"].items()
        for metric, value in headline(result).items()
        if value is not None
    }
    if metrics:
        logger.log_metrics(metrics)
    if not hasattr(logger, "log_table"):
        return
    import wandb

    columns = ["id", "audio", "prompt", "prediction", "reference", "error"]
    for name, (items, lines) in tables.items():
        data = []
        for item in items[:rows]:
            line = lines.get(item.id, {})
            audio = next((p for p in item.audio if p.is_file()), None)
            data.append(
                [
                    item.id,
                    wandb.Audio(str(audio)) if audio is not None else None,
                    item.messages[-1]["content"],
                    line.get("prediction"),
                    item.reference
                    if isinstance(item.reference, str)
                    else " | ".join(item.reference),
                    line.get("error"),
                ]
            )
        logger.log_table(f"eval/{name}", columns=columns, data=data)
    finish = getattr(getattr(logger, "experiment", None), "finish", None)
    if callable(finish):
        finish()


def print_results(results: Mapping[str, Any]) -> None:
    """Each benchmark's score tables, what happened to its samples, and where the results are (stdout)."""
    from rich.console import Console

    from afnext.evaluation.benchmarks.score import result_tables

    console = Console()
    for result in results["benchmarks"].values():
        for table in result_tables(result):
            console.print(table)
        audio, failed = result["audio"], result["failed"]
        console.print(
            f"missing audio: {audio['missing']} file(s); failed requests: {failed['count']}",
            highlight=False,
        )
    out = Path(results["out_dir"])
    console.print(f"results: {out / 'results.json'}, {out / 'results.md'}", highlight=False)
