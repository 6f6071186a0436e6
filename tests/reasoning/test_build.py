"""The dataset builder: manifests, splits without shared audio, determinism, resuming, shards."""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from afnext.errors import ConfigError
from afnext.reasoning.build import assign_splits, build_dataset
from afnext.reasoning.generators.template import TemplateGenerator
from afnext.reasoning.sources import AnnotatedSource, SyntheticSource

SPLITS = ("train", "val", "test")


def _source(n: int = 12, **kwargs: object) -> SyntheticSource:
    return SyntheticSource(
        num_scenes=n, seed=5, speech="off", min_duration=3, max_duration=6, **kwargs
    )


def _lines(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def test_build_writes_the_contract(tmp_path: Path, check_manifest: Callable) -> None:
    report = build_dataset(TemplateGenerator(), _source(), str(tmp_path), seed=3)
    assert report.merged and report.shards_built == [0]
    lines = check_manifest(tmp_path)
    assert report.audio == {"train": 10, "val": 1, "test": 1}
    assert report.samples == {split: len(ls) for split, ls in lines.items()}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["samples"] == report.samples
    counted = sum(sum(t.values()) for t in summary["question_types"].values())
    assert counted == sum(report.samples.values())
    assert summary["source"] == {"kind": "synthetic", "scenes": 12, "speech": "off"}
    preview = (tmp_path / "preview.md").read_text()
    assert preview.startswith("# Dataset preview") and "<think>" in preview
    assert len(list((tmp_path / "audio").iterdir())) == 12


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = build_dataset(TemplateGenerator(), _source(), str(tmp_path / "a"), seed=3)
    b = build_dataset(TemplateGenerator(), _source(), str(tmp_path / "b"), seed=3, shard_size=5)
    assert a.samples == b.samples
    for split in SPLITS:
        assert (tmp_path / "a" / f"{split}.jsonl").read_text() == (
            tmp_path / "b" / f"{split}.jsonl"
        ).read_text()
    for path in (tmp_path / "a" / "audio").iterdir():
        np.testing.assert_array_equal(
            sf.read(path)[0], sf.read(tmp_path / "b" / "audio" / path.name)[0]
        )
    c = build_dataset(
        TemplateGenerator(),
        SyntheticSource(num_scenes=12, seed=4, speech="off", min_duration=3, max_duration=6),
        str(tmp_path / "c"),
        seed=4,
    )
    assert (tmp_path / "a" / "train.jsonl").read_text() != (
        tmp_path / "c" / "train.jsonl"
    ).read_text()
    assert c.merged


def test_shards_and_resume(tmp_path: Path) -> None:
    reference = tmp_path / "ref"
    build_dataset(TemplateGenerator(), _source(), str(reference), seed=3)
    out = tmp_path / "out"
    first = build_dataset(TemplateGenerator(), _source(), str(out), seed=3, shard_size=4, shard=1)
    assert (first.shards_total, first.shards_built, first.merged) == (3, [1], False)
    assert not (out / "train.jsonl").exists()
    # a killed run: shard 0 done, shard 2 left half-written audio behind
    build_dataset(TemplateGenerator(), _source(), str(out), seed=3, shard_size=4, shard=0)
    (out / "audio" / "scene_000009.wav.partial").write_bytes(b"junk")
    rest = build_dataset(TemplateGenerator(), _source(), str(out), seed=3, shard_size=4)
    assert (rest.shards_resumed, rest.shards_built, rest.merged) == ([0, 1], [2], True)
    for split in SPLITS:
        assert (out / f"{split}.jsonl").read_text() == (reference / f"{split}.jsonl").read_text()
    again = build_dataset(TemplateGenerator(), _source(), str(out), seed=3, shard_size=4)
    assert again.shards_built == [] and again.merged


def test_other_settings_refuse_to_resume(tmp_path: Path) -> None:
    build_dataset(TemplateGenerator(), _source(4), str(tmp_path), seed=3)
    with pytest.raises(
        ConfigError, match=r"holds a build with other settings \(generator differ.*overwrite=true"
    ):
        build_dataset(TemplateGenerator(choices=2), _source(4), str(tmp_path), seed=3)
    report = build_dataset(
        TemplateGenerator(choices=2), _source(4), str(tmp_path), seed=3, overwrite=True
    )
    assert report.shards_built == [0]
    assert all(len(line["choices"]) <= 2 for split in SPLITS for line in _lines(tmp_path, split))


@pytest.mark.parametrize("mode", ["instruct", "both"])
def test_modes(tmp_path: Path, mode: str, check_manifest: Callable) -> None:
    build_dataset(
        TemplateGenerator(), _source(6), str(tmp_path), seed=1, mode=mode, audio_format="flac"
    )
    lines = check_manifest(tmp_path, mode)
    if mode == "both":
        ids = [line["id"] for ls in lines.values() for line in ls]
        assert (
            sum(i.endswith("-think") for i in ids) == sum(i.endswith("-instruct") for i in ids) > 0
        )


def test_assign_splits_is_exact_and_never_empty() -> None:
    ids = [f"x{i}" for i in range(11)]
    split_of = assign_splits(ids, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    counts = {s: list(split_of.values()).count(s) for s in SPLITS}
    assert counts == {"train": 9, "val": 1, "test": 1}
    assert assign_splits(ids[:3], {"train": 0.9, "val": 0.05, "test": 0.05}, seed=0).keys() == set(
        ids[:3]
    )
    assert sorted(
        assign_splits(ids[:3], {"train": 0.9, "val": 0.05, "test": 0.05}, seed=0).values()
    ) == ["test", "train", "val"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "chat"}, "mode must be one of"),
        ({"splits": {"train": 0.5, "test": 0.2}}, "summing to 1"),
        ({"audio_format": "mp3"}, "audio_format"),
        ({"shard": 7}, r"shard=7 is out of range: this build has 1 shards"),
    ],
)
def test_bad_build_settings(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_dataset(TemplateGenerator(), _source(3), str(tmp_path), **kwargs)


def _wav(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(np.zeros(int(seconds * 16000), dtype=np.int16).tobytes())


def test_annotated_source(tmp_path: Path, check_manifest: Callable) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a", "b", "c", "d"):
        _wav(audio / f"{name}.wav", 10)
    (tmp_path / "events.tsv").write_text(
        "filename\tonset\toffset\tevent_label\n"
        "a.wav\t0.5\t2.0\tDog\na.wav\t4.0\t6.5\tCat\nb.wav\t1.0\t3.0\tCat\nb.wav\t5.0\t5.5\tDog\n"
        "zz.wav\t1\t2\tDog\n"
    )
    transcripts = tmp_path / "asr"
    transcripts.mkdir()
    (transcripts / "c.srt").write_text(
        "1\n00:00:01,000 --> 00:00:03,000\nopen the door\n\n"
        "2\n00:00:05,000 --> 00:00:07,000\nclose it\n"
    )
    (tmp_path / "c.rttm").write_text(
        "SPEAKER c 1 0.9 2.2 <NA> <NA> Ann <NA> <NA>\nSPEAKER c 1 4.8 2.4 <NA> <NA> Bob <NA> <NA>\n"
    )
    source = AnnotatedSource(
        str(audio),
        events_tsv=str(tmp_path / "events.tsv"),
        transcripts_dir=str(transcripts),
        rttm=str(tmp_path / "c.rttm"),
    )
    assert source.ids() == ["a", "b", "c"]
    assert source.report() == {
        "kind": "annotated",
        "items": 3,
        "audio_without_annotation": 1,
        "annotations_without_audio": 1,
    }
    speech = source.load("c").timeline.events
    assert [(e.speaker, e.text) for e in speech] == [("Ann", "open the door"), ("Bob", "close it")]
    out = tmp_path / "out"
    generator = TemplateGenerator(question_types=["count", "order", "speaker"], choices=2)
    report = build_dataset(
        generator,
        source,
        str(out),
        seed=0,
        splits={"train": 1 / 3, "val": 1 / 3, "test": 1 / 3},
        copy_audio=False,
    )
    assert report.audio == {"train": 1, "val": 1, "test": 1}
    lines = check_manifest(out)
    assert (out / "audio" / "a.wav").is_symlink()
    speaker_lines = [
        line for ls in lines.values() for line in ls if line["question_type"] == "speaker"
    ]
    assert speaker_lines and speaker_lines[0]["answer"] in (
        "(A) Ann",
        "(B) Ann",
        "(A) Bob",
        "(B) Bob",
    )
