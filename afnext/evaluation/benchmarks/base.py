"""What a benchmark adapter is: read the benchmark's own files, build prompts, name a metric, score predictions.

An adapter reads the files a benchmark *releases* (field names as released) from a root folder, resolves each
audio path against that root, and turns every record into a :class:`BenchmarkItem`: chat messages with a
``<sound>`` placeholder where the audio goes (one per audio file), the reference, the options, the metadata the
official scripts break results down by, and the record itself. ``score(items, predictions, judge=None)`` returns
a JSON-able dict. ``missing_audio(items)`` lists every audio file that is absent or unreadable, so nothing is
dropped silently.

Prompt templates come from the benchmark's YAML (``conf/benchmark/<name>.yaml``, key ``prompt``) so they are
visible and overridable: ``user`` is formatted with ``{question}``, ``{options}`` (the options rendered with
``option`` = ``"({letter}) {text}"`` and joined by ``option_separator``) and the adapter's extra fields;
``user_open`` is used for items without options. A template holds one ``<sound>``; an item with k audio files
gets k placeholders there, one per line.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from afnext.errors import ConfigError, DataError
from afnext.evaluation.metrics.judged import Judge
from afnext.evaluation.metrics.mcq import LETTERS
from afnext.reasoning.metrics import final_answer
from afnext.storage import atomic_write

__all__ = [
    "SOUND",
    "BaseBenchmark",
    "Benchmark",
    "BenchmarkItem",
    "PromptTemplate",
    "read_records",
    "write_embedded_audio",
]

SOUND = "<sound>"
"""The audio placeholder in prompts."""


@dataclass
class BenchmarkItem:
    """One question (or utterance, clip) of a benchmark.

    Attributes:
        id: The benchmark's id for it (predictions are keyed by it).
        audio: Audio files, resolved against the root (relative as released when no root was given).
        messages: Chat messages (``role``, ``content``); the user turn holds one ``<sound>`` per audio file.
        reference: The answer text, or the reference captions / transcripts.
        choices: The options of a multiple-choice question, in the order shown; empty otherwise.
        answer_index: Index of the right option in ``choices`` where the release says it.
        meta: The fields results are broken down by (as released).
        raw: The record as read.
    """

    id: str
    audio: list[Path]
    messages: list[dict[str, str]]
    reference: str | list[str]
    choices: list[str] = field(default_factory=list)
    answer_index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Benchmark(Protocol):
    """The interface evaluation runs and ``afnext eval score`` rely on."""

    name: str
    metric: str
    prediction_field: str | None
    generation: dict[str, Any]

    def read(self, root: str | Path | None = None) -> list[BenchmarkItem]:
        """Items of the benchmark under ``root`` (default: the configured root)."""
        ...

    def load(self, path: str | Path) -> list[dict[str, Any]]:
        """The records of one file in the benchmark's own format."""
        ...

    def items(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        root: str | Path | None = None,
        source: str = "",
    ) -> list[BenchmarkItem]:
        """Items from records in the benchmark's own format."""
        ...

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Scores (JSON-able) of ``predictions`` (``{item id: model output}``)."""
        ...

    def missing_audio(self, items: Sequence[BenchmarkItem]) -> list[dict[str, str]]:
        """Absent or unreadable audio files: ``{"id", "path", "reason"}`` each."""
        ...


@dataclass
class PromptTemplate:
    """How an item becomes chat messages (see the module docstring)."""

    user: str = SOUND + "\n{question}\n{options}"
    user_open: str = SOUND + "\n{question}"
    system: str | None = None
    option: str = "({letter}) {text}"
    option_separator: str = "\n"

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, where: str) -> PromptTemplate:
        """Build from a YAML ``prompt`` mapping; unknown keys and templates without ``<sound>`` are errors."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"{where}.prompt: unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        template = cls(**config)
        for key in ("user", "user_open"):
            if getattr(template, key).count(SOUND) != 1:
                raise ConfigError(
                    f"{where}.prompt.{key} must hold exactly one {SOUND} (where the audio goes): "
                    f"{getattr(template, key)!r}"
                )
        return template

    def render(
        self, question: str, choices: Sequence[str] = (), n_audio: int = 1, **fields: Any
    ) -> list[dict[str, str]]:
        """Messages for one item.

        Raises:
            ConfigError: The template names a field the adapter does not provide.
        """
        options = self.option_separator.join(
            self.option.format(letter=LETTERS[i], text=text, index=i + 1)
            for i, text in enumerate(choices)
        )
        template = self.user if choices else self.user_open
        try:
            content = template.format(question=question, options=options, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"prompt template {template!r} cannot be filled ({exc}); it can use {{question}}, "
                f"{{options}} and {sorted('{' + f + '}' for f in fields)} (write {{{{ }}}} for braces)"
            ) from exc
        content = content.replace(SOUND, "\n".join([SOUND] * max(n_audio, 1)), 1)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": content}]


def read_records(
    path: str | Path,
    *,
    delimiter: str | None = None,
    escapechar: str | None = None,
    audio_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Records of a JSON list, JSON-lines, CSV, TSV or parquet file (by suffix).

    Args:
        path: The file.
        delimiter: The CSV / TSV column separator (default: by suffix).
        escapechar: The character that escapes the next one in a CSV / TSV file written with it (CoVoST's
            TSVs: ``\\``, as pandas writes them with ``escapechar="\\"`` and no quoting).
        audio_dir: Parquet only: where audio embedded in the file (Hugging Face ``datasets``' ``Audio`` column,
            ``{"bytes", "path"}``) is written out; its field then holds that file's path
            (:func:`write_embedded_audio`). ``None``: such fields stay as read (bytes in memory).

    Raises:
        DataError: The file is missing or malformed (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, audio_dir)
    if suffix in (".csv", ".tsv"):
        sep = delimiter or ("\t" if suffix == ".tsv" else ",")
        quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=sep, quoting=quoting, escapechar=escapechar)
            return [dict(row) for row in reader]
    text = path.read_text(encoding="utf-8")
    try:
        records: Any = json.loads(text) if suffix != ".jsonl" else None
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":  # "Extra data": JSON lines in a .json file, read as such below
            raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        records = None
    if records is None:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
    if isinstance(records, dict) and all(isinstance(v, dict) for v in records.values()):
        records = [{"id": key, **value} for key, value in records.items()]  # {id: record} layouts
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected a list of JSON objects (one per item)")
    return records


def _read_parquet(path: Path, audio_dir: str | Path | None) -> list[dict[str, Any]]:
    """Rows of a parquet file, read in batches so embedded audio is written out before the next batch."""
    import pyarrow
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = []
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                if audio_dir is not None:
                    row = {
                        key: _written(
                            value, audio_dir, f"{path} row {len(records) + 1}, column {key!r}"
                        )
                        for key, value in row.items()
                    }
                records.append(row)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    return records


def _written(value: Any, audio_dir: str | Path, where: str) -> Any:
    """:func:`write_embedded_audio` with errors that name the file, row and column."""
    try:
        return write_embedded_audio(value, audio_dir)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from exc
    except OSError as exc:
        raise DataError(
            f"{where}: cannot write its audio to {audio_dir} ({exc}); set benchmark.audio_cache to a writable "
            "folder with room for the clips"
        ) from exc


def _is_embedded_audio(value: Any) -> bool:
    return isinstance(value, dict) and "bytes" in value and "path" in value


def write_embedded_audio(value: Any, audio_dir: str | Path) -> Any:
    """Write audio embedded in a record to ``audio_dir``; other values are returned unchanged.

    Hugging Face ``datasets`` stores an ``Audio`` column as ``{"bytes": <the encoded file>, "path": <its name>}``
    (MMSU's release is such a dataset). The bytes go to ``audio_dir/<sha256 of the bytes><suffix of path>`` (written
    once, atomically: the same clip read again reuses the file) and the value becomes that file's path. With no
    bytes, the value becomes ``path`` as released (resolved against the benchmark's root later). A list holding
    such values is mapped item by item.

    Args:
        value: A field's value as read.
        audio_dir: The folder the clips go to (created when needed).

    Raises:
        DataError: Embedded audio with neither bytes nor a path.
    """
    if isinstance(value, list) and any(_is_embedded_audio(v) for v in value):
        return [write_embedded_audio(v, audio_dir) for v in value]  # nulls in the list stay null
    if not _is_embedded_audio(value):
        return value
    data, name = value["bytes"], value["path"]
    if not data:
        if not name:
            raise DataError(f"embedded audio with neither bytes nor a path: {value!r}")
        return name
    suffix = Path(name).suffix.lower() if name else ""
    target = Path(audio_dir).absolute() / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if not target.is_file() or target.stat().st_size != len(data):
        with atomic_write(target) as handle:
            handle.write(data)
    return str(target)


class BaseBenchmark:
    """Shared behaviour of the adapters: configuration, reading, audio checks.

    Args:
        root: Folder holding the benchmark as released; needed to read audio, not to score a predictions file.
        name: Name in results (the YAML's option name).
        file: The released file to read, relative to ``root``; a glob pattern (``data/*.parquet``) reads every
            match, in name order, as one set.
        prompt: Prompt template settings (:class:`PromptTemplate` fields).
        generation: Generation settings a runner passes to ``generate`` (``max_new_tokens``, ...).
        audio_cache: Where audio embedded in a parquet release is written out (:func:`write_embedded_audio`);
            ``None``: ``$AFNEXT_HOME/cache/benchmark_audio/<name>`` (``.afnext`` when ``AFNEXT_HOME`` is unset).
    """

    name = "benchmark"
    metric = "accuracy"
    prediction_field: str | None = None
    """The field of the benchmark's own file format that holds a model output (the official scripts' input);
    ``None``: predictions come as a separate ``{id, prediction}`` file."""
    default_file = ""
    default_prompt: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        name: str | None = None,
        file: str | None = None,
        prompt: Mapping[str, Any] | None = None,
        generation: Mapping[str, Any] | None = None,
        audio_cache: str | Path | None = None,
    ) -> None:
        self.root = Path(root) if root not in (None, "") else None
        self.name = name or self.name
        self.file = file or self.default_file
        self.audio_cache = Path(
            audio_cache
            or Path(os.environ.get("AFNEXT_HOME") or ".afnext")
            / "cache"
            / "benchmark_audio"
            / self.name
        )
        self.prompt = PromptTemplate.from_config(
            {**self.default_prompt, **(prompt or {})}, f"benchmark {self.name}"
        )
        self.generation = dict(generation or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={self.root}, file={self.file!r})"

    def _root(self, root: str | Path | None) -> Path:
        chosen = Path(root) if root is not None else self.root
        if chosen is None:
            raise ConfigError(
                f"benchmark {self.name}: no root folder; set benchmark.root=/path/to/{self.name}"
            )
        return chosen

    def resolve(self, path: str, root: Path | None) -> Path:
        """An audio path as released, resolved against ``root`` (``./x.wav`` and ``x.wav`` alike)."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() or root is None else root / candidate

    def read(self, root: str | Path | None = None) -> list[BenchmarkItem]:
        """Items of ``root / file`` (the released file, or every file a glob pattern matches)."""
        base = self._root(root)
        path = base / self.file
        if not glob.has_magic(self.file):
            paths = [path] if path.exists() else []
        elif Path(self.file).is_absolute():
            paths = sorted(Path(p) for p in glob.glob(self.file, recursive=True))
        else:  # the pattern only: brackets in the root's own name stay literal
            paths = sorted(base.glob(self.file))
        if not paths:
            what = "no file matches" if glob.has_magic(self.file) else "no such file"
            raise DataError(
                f"{path}: {what}; set benchmark.root to the folder holding the release (and "
                f"benchmark.file if the file is named differently)"
            )
        items: list[BenchmarkItem] = []
        for part in paths:
            items.extend(self.items(self.load(part), root=base, source=str(part)))
        if len(paths) > 1:
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise DataError(
                        f"{path}: id {item.id!r} appears in two of the {len(paths)} files matched; ids must be "
                        f"unique (narrow benchmark.file to one split)"
                    )
                seen.add(item.id)
        return items

    def load(self, path: str | Path) -> list[dict[str, Any]]:
        """Records of a file in the benchmark's format (JSON, JSONL, CSV, TSV, parquet by suffix); audio
        embedded in a parquet file is written to ``audio_cache``."""
        return read_records(path, audio_dir=self.audio_cache)

    def items(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        root: str | Path | None = None,
        source: str = "records",
    ) -> list[BenchmarkItem]:
        """Items of ``records``; ids must be unique.

        Raises:
            DataError: A record lacks a field or repeats an id (names the source and record).
        """
        base = Path(root) if root is not None else None
        out: list[BenchmarkItem] = []
        seen: set[str] = set()
        for number, record in enumerate(records, 1):
            where = f"{source} item {number}"
            try:
                item = self.item(dict(record), base, where, number - 1)
            except KeyError as exc:
                raise DataError(f"{where}: no field {exc} (fields: {sorted(record)})") from exc
            except (
                TypeError,
                AttributeError,
            ) as exc:  # a field of the wrong kind (null choices, ...)
                raise DataError(f"{where}: malformed record ({exc})") from exc
            if item.id in seen:
                raise DataError(f"{where}: id {item.id!r} appears twice; ids must be unique")
            seen.add(item.id)
            out.append(item)
        return out

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        """One item from one record (``index``: its position in the file); adapters override this."""
        raise NotImplementedError

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """Scores of ``predictions`` (adapters override this)."""
        raise NotImplementedError

    def missing_audio(
        self, items: Sequence[BenchmarkItem], *, check_readable: bool = True
    ) -> list[dict[str, str]]:
        """Audio files that are absent or (``check_readable``) whose header soundfile cannot read."""
        import soundfile

        missing = []
        for item in items:
            for path in item.audio:
                reason = None
                if not path.is_file():
                    reason = "missing"
                elif check_readable:
                    try:
                        soundfile.info(str(path))
                    except (RuntimeError, OSError) as exc:  # soundfile's errors are RuntimeErrors
                        reason = f"unreadable: {exc}"
                if reason:
                    missing.append({"id": item.id, "path": str(path), "reason": reason})
        return missing

    def audio_report(self, items: Sequence[BenchmarkItem]) -> dict[str, Any]:
        """``{"items", "audio_files", "missing": count, "files": missing_audio(items)}``."""
        files = self.missing_audio(items)
        return {
            "items": len(items),
            "audio_files": sum(len(i.audio) for i in items),
            "missing": len(files),
            "files": files,
        }

    def predicted(
        self, items: Sequence[BenchmarkItem], predictions: Mapping[str, Any]
    ) -> tuple[list[BenchmarkItem], list[str]]:
        """The items that have a prediction and their final answers (the text after ``</think>``).

        Raises:
            DataError: A prediction names no item or is not a string.
        """
        self.unknown_predictions(items, predictions)
        chosen, texts = [], []
        for item in items:
            if item.id in predictions:
                value = predictions[item.id]
                if not isinstance(value, str):
                    raise DataError(
                        f"item {item.id!r}: the prediction must be a string, got {type(value).__name__}"
                    )
                chosen.append(item)
                texts.append(final_answer(value))
        return chosen, texts

    @staticmethod
    def unknown_predictions(items: Sequence[BenchmarkItem], predictions: Mapping[str, Any]) -> None:
        """Raise DataError when a prediction's id names no item (a predictions file of another set)."""
        known = {i.id for i in items}
        unknown = [key for key in predictions if key not in known]
        if unknown:
            raise DataError(
                f"{len(unknown)} predictions have ids that are not items of this benchmark "
                f"(first: {unknown[0]!r}); check the benchmark and the predictions file"
            )
