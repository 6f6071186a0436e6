"""The dataset builder behind ``afnext data build``: audio + AF3-style JSONL splits, a summary, a preview.

Layout of ``out`` (the manifest line schema is documented in ``docs/tacot.md``)::

    audio/<id>.wav              the audio (rendered as wav or flac, or copied or linked)
    train.jsonl val.jsonl test.jsonl
    summary.json                counts per split and question type, generator and source reports
    preview.md                  the first samples, readable
    build.json                  the settings; a resumed build must match them
    shards/part-XXXXX-of-YYYYY.jsonl (+ .json stats)   finished shards; a rerun skips them

Splits are drawn per audio file (never per sample), so no audio is shared across splits. Everything is a
function of ``seed`` and the item ids: shards can be built in any order, by several processes
(``shard=k``), and a killed build resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afnext.errors import ConfigError, DataError
from afnext.reasoning.generators.base import Generator, QASample
from afnext.reasoning.sources import Source, SourceItem
from afnext.storage import atomic_write_text

__all__ = ["BuildReport", "assign_splits", "build_dataset", "manifest_lines"]

MODES = ("think", "instruct", "both", "grpo")
"""``think``: the gpt turn is the chain then the answer; ``instruct``: the answer alone; ``both``: a line of each;
``grpo``: prompts for GRPO stages: the human turn only, with the ``answer``, ``choices``, ``timeline`` and
``evidence`` the rewards score completions against."""
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class BuildReport:
    """What a build did; the CLI prints :meth:`to_dict` as JSON."""

    out: str
    shards_total: int
    shards_built: list[int] = field(default_factory=list)
    shards_resumed: list[int] = field(default_factory=list)
    merged: bool = False
    samples: dict[str, int] = field(default_factory=dict)
    audio: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def assign_splits(ids: Sequence[str], splits: Mapping[str, float], seed: int) -> dict[str, str]:
    """``{id: split}``: a seeded shuffle cut by the fractions (largest remainders), so counts are exact
    and every split with a positive fraction gets at least one item when there are enough."""
    names = list(splits)
    shuffled = sorted(ids)
    random.Random(seed).shuffle(shuffled)
    raw = [splits[n] * len(ids) for n in names]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(len(names)), key=lambda i: raw[i] - counts[i], reverse=True):
        if sum(counts) == len(ids):
            break
        counts[i] += 1
    for i, name in enumerate(names):  # take one from the largest split for an empty one
        if counts[i] == 0 and splits[name] > 0 and len(ids) >= len(names):
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    out, start = {}, 0
    for name, count in zip(names, counts):
        out.update({item: name for item in shuffled[start : start + count]})
        start += count
    return out


def manifest_lines(
    item: SourceItem,
    sound: str,
    samples: Sequence[QASample],
    *,
    mode: str,
    split: str,
    generator_name: str,
) -> list[dict[str, Any]]:
    """The JSONL lines for one audio file's samples (see ``docs/tacot.md`` for the schema)."""
    assert item.timeline.duration is not None
    safe = _SAFE_ID.sub("_", item.id)
    timeline = item.timeline.to_list()
    lines = []
    modes = ("think", "instruct") if mode == "both" else (mode,)
    for k, sample in enumerate(samples):
        for m in modes:
            turns = [{"from": "human", "value": f"<sound>\n{sample.question}"}]
            if m != "grpo":  # a GRPO prompt has no reference turn: the policy writes it
                target = sample.think_text() if m == "think" else sample.answer
                turns.append({"from": "gpt", "value": target})
            lines.append(
                {
                    "id": f"{safe}-{k}" + (f"-{m}" if mode == "both" else ""),
                    "sound": sound,
                    "duration": round(item.timeline.duration, 3),
                    "conversations": turns,
                    "timeline": timeline,
                    "question_type": sample.question_type,
                    "answer": sample.answer,
                    "choices": list(sample.choices),
                    "evidence": [[s.start, s.end] for s in sample.evidence],
                    "mode": m,
                    "split": split,
                    "audio_id": item.id,
                    "generator": generator_name,
                }
            )
    return lines


def _describe(obj: object) -> str:
    """A stable description of a built object (its repr without memory addresses)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def _delta(after: Any, before: Any) -> Any:
    """``after - before`` over nested dicts of numbers (a generator's counters during one shard)."""
    if isinstance(after, Mapping):
        before = before if isinstance(before, Mapping) else {}
        return {k: _delta(v, before.get(k)) for k, v in after.items()}
    if isinstance(after, int | float):
        return after - (before if isinstance(before, int | float) else 0)
    return after


def _add(total: Any, part: Any) -> Any:
    if isinstance(part, Mapping):
        total = dict(total) if isinstance(total, Mapping) else {}
        for k, v in part.items():
            total[k] = _add(total.get(k), v)
        return total
    if isinstance(part, int | float):
        return (total if isinstance(total, int | float) else 0) + part
    return part


class _Builder:
    def __init__(
        self,
        generator: Generator,
        source: Source,
        out: Path,
        seed: int,
        mode: str,
        audio_format: str,
        copy_audio: bool,
    ) -> None:
        self.generator, self.source, self.out, self.seed, self.mode = (
            generator,
            source,
            out,
            seed,
            mode,
        )
        self.audio_format, self.copy_audio = audio_format, copy_audio
        self.generator_name = type(generator).__name__

    def write_audio(self, item: SourceItem) -> str:
        """Write (or find, when resuming) the item's audio; returns its path relative to ``out``."""
        safe = _SAFE_ID.sub("_", item.id)
        suffix = f".{self.audio_format}" if item.synthesize else (item.audio_path or Path()).suffix
        rel = f"audio/{safe}{suffix}"
        dest = self.out / rel
        if dest.exists() or dest.is_symlink():
            return rel
        tmp = dest.with_name(dest.name + ".partial")
        if item.synthesize is not None:
            import soundfile as sf

            sf.write(
                tmp, item.synthesize(), 16_000, format=self.audio_format.upper(), subtype="PCM_16"
            )
        elif self.copy_audio:
            shutil.copyfile(item.audio_path, tmp)  # type: ignore[arg-type]
        else:
            os.symlink(Path(item.audio_path).resolve(), tmp)  # type: ignore[arg-type]
        os.replace(tmp, dest)
        return rel

    def shard(self, ids: Sequence[str], split_of: Mapping[str, str], part: Path) -> None:
        before = self.generator.report()
        items = [self.source.load(item_id) for item_id in ids]
        rngs = [random.Random(f"{self.seed}/{item_id}") for item_id in ids]
        # A generator with generate_many (the LLM teacher) gets the shard at once, so its requests go
        # out concurrently; the same rngs make the same samples either way.
        many = getattr(self.generator, "generate_many", None)
        if callable(many):
            per_item = many([item.timeline for item in items], rngs)
        else:
            per_item = [self.generator.generate(i.timeline, r) for i, r in zip(items, rngs)]
        lines, empty = [], 0
        for item_id, item, samples in zip(ids, items, per_item):
            sound = self.write_audio(item)
            empty += not samples
            lines += manifest_lines(
                item,
                sound,
                samples,
                mode=self.mode,
                split=split_of[item_id],
                generator_name=self.generator_name,
            )
        stats = {
            "items": len(ids),
            "items_without_samples": empty,
            "generator": _delta(self.generator.report(), before),
        }
        atomic_write_text(part.with_suffix(".json"), json.dumps(stats, indent=1))
        atomic_write_text(part, "".join(json.dumps(line) + "\n" for line in lines))


def _merge(
    out: Path,
    parts: list[Path],
    splits: Sequence[str],
    settings: dict,
    source: Source,
    preview: int,
) -> tuple[dict[str, int], dict[str, int]]:
    by_split: dict[str, list[str]] = {s: [] for s in splits}
    types: dict[str, Counter] = {s: Counter() for s in splits}
    audio: dict[str, set[str]] = {s: set() for s in splits}
    hours: Counter = Counter()
    generator_report: Any = {}
    empty = 0
    shown: list[dict] = []
    for part in parts:
        stats = json.loads(part.with_suffix(".json").read_text())
        generator_report = _add(generator_report, stats["generator"])
        empty += stats["items_without_samples"]
        for raw in part.read_text(encoding="utf-8").splitlines():
            line = json.loads(raw)
            split = line["split"]
            by_split[split].append(raw)
            types[split][line["question_type"]] += 1
            if line["sound"] not in audio[split]:
                audio[split].add(line["sound"])
                hours[split] += line["duration"] / 3600
            if len(shown) < preview and line["question_type"] not in {
                s["question_type"] for s in shown
            }:
                shown.append(line)
    for split, raws in by_split.items():
        atomic_write_text(out / f"{split}.jsonl", "".join(r + "\n" for r in raws))
    samples = {s: len(r) for s, r in by_split.items()}
    audio_counts = {s: len(a) for s, a in audio.items()}
    summary = {
        "samples": samples,
        "audio_files": audio_counts,
        "hours": {s: round(hours[s], 4) for s in splits},
        "question_types": {s: dict(sorted(types[s].items())) for s in splits},
        "items_without_samples": empty,
        "generator": generator_report,
        "source": source.report(),
        "settings": settings,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "preview.md", _preview(shown))
    return samples, audio_counts


def _preview(lines: list[dict]) -> str:
    blocks = ["# Dataset preview\n\nOne sample per question type.\n"]
    for line in lines:
        turns = [c["value"] for c in line["conversations"]]
        human = turns[0]
        gpt = turns[1] if len(turns) > 1 else f"(GRPO prompt; answer: {line['answer']})"
        blocks.append(
            f"## {line['question_type']} ({line['id']}, {line['split']}, {line['duration']} s)\n\n"
            f"**Audio:** `{line['sound']}`\n\n**Human:**\n```\n{human}\n```\n\n"
            f"**GPT:**\n```\n{gpt}\n```\n"
        )
    return "\n".join(blocks)


def build_dataset(
    generator: Generator,
    source: Source,
    out: str,
    seed: int = 0,
    mode: str = "think",
    splits: Mapping[str, float] | None = None,
    shard_size: int = 1000,
    shard: int | None = None,
    audio_format: str = "wav",
    copy_audio: bool = True,
    preview: int = 10,
    overwrite: bool = False,
) -> BuildReport:
    """Build a TACoT dataset: audio, AF3-style JSONL splits, ``summary.json``, ``preview.md``.

    Args:
        generator: Turns each timeline into samples (``conf/reasoning/generator``).
        source: Gives ids, timelines and audio (``conf/reasoning/source``).
        out: Output folder.
        seed: Seeds splits and each item's generator randomness.
        mode: ``think`` (``<think>`` chain then answer), ``instruct`` (plain answers), ``both``, or ``grpo``
            (prompts with their answer, options and timeline, no answer turn: the data of GRPO stages).
        splits: ``{split name: fraction}``; default ``train 0.8, val 0.1, test 0.1``.
        shard_size: Items per shard (the unit of resuming).
        shard: Build only this shard (0-based), for several processes; ``None`` builds all. The splits
            are merged by whichever run finds every shard finished.
        audio_format: ``wav`` or ``flac`` for rendered audio (16 kHz mono, 16-bit). ``wav`` is the
            default: about 5x cheaper to write and to read back than FLAC, for twice the disk.
        copy_audio: Copy existing audio into ``out`` (True) or symlink it (False).
        preview: Samples in ``preview.md``.
        overwrite: Delete an earlier build in ``out`` first (otherwise it is resumed).

    Raises:
        ConfigError: A setting is out of range, or ``out`` holds a build with other settings.
    """
    started = time.perf_counter()
    splits = dict(splits or {"train": 0.8, "val": 0.1, "test": 0.1})
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if not splits or any(f < 0 for f in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
        raise ConfigError(f"splits must be non-negative fractions summing to 1, got {splits}")
    if audio_format not in ("wav", "flac"):
        raise ConfigError(f"audio_format must be wav or flac, got {audio_format!r}")
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    ids = list(source.ids())
    safe = Counter(_SAFE_ID.sub("_", i) for i in ids)
    clashes = [i for i, n in safe.items() if n > 1]
    if clashes:
        raise DataError(f"source ids map to the same file name {clashes[:3]}; make the ids unique")
    total = max(1, math.ceil(len(ids) / shard_size))
    if shard is not None and not 0 <= shard < total:
        raise ConfigError(
            f"shard={shard} is out of range: this build has {total} shards (0..{total - 1})"
        )
    out_dir = Path(out)
    if overwrite:
        for name in (
            "audio",
            "shards",
            "summary.json",
            "preview.md",
            "build.json",
            *(f"{s}.jsonl" for s in splits),
        ):
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "shards").mkdir(exist_ok=True)
    settings = {
        "seed": seed,
        "mode": mode,
        "splits": splits,
        "shard_size": shard_size,
        "audio_format": audio_format,
        "items": len(ids),
        "source": _describe(source),
        "generator": _describe(generator),
    }
    recorded = out_dir / "build.json"
    if recorded.exists():
        old = json.loads(recorded.read_text())
        changed = sorted(k for k in settings.keys() | old.keys() if settings.get(k) != old.get(k))
        if changed:
            raise ConfigError(
                f"{out_dir} holds a build with other settings ({', '.join(changed)} differ: e.g. "
                f"{changed[0]} was {old.get(changed[0])!r}, now {settings.get(changed[0])!r}); "
                "use overwrite=true or another out"
            )
    else:
        atomic_write_text(recorded, json.dumps(settings, indent=2))
    split_of = assign_splits(ids, splits, seed)
    builder = _Builder(generator, source, out_dir, seed, mode, audio_format, copy_audio)
    parts = [out_dir / "shards" / f"part-{j:05d}-of-{total:05d}.jsonl" for j in range(total)]
    report = BuildReport(out=str(out_dir), shards_total=total)
    for j in range(total) if shard is None else [shard]:
        if parts[j].exists():
            report.shards_resumed.append(j)
            continue
        builder.shard(ids[j * shard_size : (j + 1) * shard_size], split_of, parts[j])
        report.shards_built.append(j)
    if all(p.exists() for p in parts):
        report.samples, report.audio = _merge(
            out_dir, parts, list(splits), settings, source, preview
        )
        report.merged = True
    report.seconds = round(time.perf_counter() - started, 2)
    return report
