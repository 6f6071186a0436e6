"""ManifestDataset samples (equal to the processor's own output), bad-sample policy, and the Collator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from afnext.data.collate import Collator
from afnext.data.dataset import ManifestDataset, Skipped
from afnext.data.processor import IGNORE_INDEX, AudioProcessor
from afnext.errors import ConfigError, DataError

SR = 16000


@pytest.fixture(scope="module")
def processor() -> AudioProcessor:
    """The real processor of the tiny preset (AF-Whisper token counts, the bundled tiny tokenizer)."""
    from transformers import AutoTokenizer

    from afnext.encoders.whisper import AFWhisperEncoder
    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    return AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths, padding_side="right")


def write_tone(path: Path, seconds: float, freq: float = 440.0) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": value} for who, value in pairs]


def write_corpus(root: Path, name: str = "m.jsonl") -> Path:
    """A manifest with one sample of every kind; line k (1-based) is described in ``CORPUS``."""
    write_tone(root / "audio" / "good.wav", 1.0)
    write_tone(root / "audio" / "two.wav", 2.0, 330.0)
    write_tone(root / "audio" / "four.wav", 4.0, 550.0)
    (root / "audio" / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    qa = _turns(("human", "<sound>\nWhat is it?"), ("gpt", "a tone"))
    lines = [
        json.dumps({"id": "good", "sound": "audio/good.wav", "duration": 1.0, "conversations": qa}),
        json.dumps({"id": "missing", "sound": "audio/nope.wav", "conversations": qa}),
        json.dumps({"id": "corrupt", "sound": "audio/corrupt.wav", "conversations": qa}),
        '{"id": "malformed", "sound": "audio/good.wav", "conversations": [',
        json.dumps(
            {
                "id": "mismatch",
                "sound": "audio/good.wav",
                "conversations": _turns(("human", "<sound> and <sound>?"), ("gpt", "x")),
            }
        ),
        json.dumps({"id": "text", "conversations": _turns(("human", "Say hi"), ("gpt", "hi"))}),
        json.dumps(
            {
                "id": "multi",
                "sound": "audio/two.wav",
                "conversations": _turns(
                    ("human", "<sound>\nFirst?"),
                    ("gpt", "answer one"),
                    ("human", "Second?"),
                    ("gpt", "answer two"),
                ),
            }
        ),
        json.dumps(
            {
                "id": "pair",
                "sound": ["audio/good.wav", str(root / "audio" / "four.wav")],
                "conversations": _turns(("human", "<sound> then <sound>: same?"), ("gpt", "no")),
            }
        ),
    ]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


CORPUS = ["good", "missing", "corrupt", "malformed", "mismatch", "text", "multi", "pair"]
BAD = {
    "missing": "missing_file",
    "corrupt": "unreadable_audio",
    "malformed": "malformed_json",
    "mismatch": "placeholder_mismatch",
}


def _messages(turns):
    role = {"human": "user", "gpt": "assistant"}
    return [{"role": role[t["from"]], "content": t["value"]} for t in turns]


def test_samples_equal_the_processor_output(tmp_path, processor):
    manifest = write_corpus(tmp_path)
    ds = ManifestDataset(manifest, processor)
    assert len(ds) == 8
    assert ds.durations == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 5.0]  # field, else soundfile headers
    lines = manifest.read_text().splitlines()
    for name in ("good", "multi", "pair"):
        k = CORPUS.index(name)
        sample = ds[k]
        raw = json.loads(lines[k])
        sounds = raw["sound"] if isinstance(raw["sound"], list) else [raw["sound"]]
        ref = processor(
            [_messages(raw["conversations"])],
            audio=[[str(Path(s) if Path(s).is_absolute() else tmp_path / s) for s in sounds]],
            return_labels=True,
            padding_side="right",
        )
        assert torch.equal(sample["input_ids"], ref["input_ids"][0])
        assert torch.equal(sample["labels"], ref["labels"][0])
        assert torch.equal(sample["input_features"], ref["input_features"])
        assert torch.equal(sample["input_features_mask"], ref["input_features_mask"])
        assert sample["num_tokens"] == sample["input_ids"].shape[0]
        assert sample["id"] == name and sample["where"] == f"{manifest}:{k + 1}"
    good = ds[0]
    assert good["input_features"].shape == (1, 128, 3000)
    assert (
        int((good["input_ids"] == processor.audio_token_id).sum()) == 25
    )  # 1 s -> 25 tokens at 25 Hz
    assert good["audio_seconds"] == pytest.approx(1.0)
    pair = ds[CORPUS.index("pair")]
    assert pair["input_features"].shape[0] == 2
    assert int((pair["input_ids"] == processor.audio_bos_id).sum()) == 2
    assert pair["audio_seconds"] == pytest.approx(5.0)
    multi = ds[CORPUS.index("multi")]
    kept = processor.tokenizer.decode(multi["input_ids"][multi["labels"] != IGNORE_INDEX])
    assert kept == "answer one<|im_end|>answer two<|im_end|>"


def test_text_only_sample_has_zero_windows(tmp_path, processor):
    ds = ManifestDataset(write_corpus(tmp_path), processor)
    text = ds[CORPUS.index("text")]
    assert text["input_features"].shape == (0, 128, 3000)
    assert text["input_features_mask"].shape == (0, 3000)
    assert text["audio_seconds"] == 0.0
    assert not (text["input_ids"] == processor.audio_token_id).any()
    assert (
        processor.tokenizer.decode(text["input_ids"][text["labels"] != IGNORE_INDEX])
        == "hi<|im_end|>"
    )


def test_skip_mode_returns_a_marker_with_file_line_and_reason(tmp_path, processor):
    manifest = write_corpus(tmp_path)
    ds = ManifestDataset(manifest, processor, on_error="skip")
    for name, reason in BAD.items():
        k = CORPUS.index(name)
        item = ds[k]
        assert isinstance(item, Skipped), name
        assert item.reason == reason
        assert item.where == f"{manifest}:{k + 1}"
    assert "nope.wav" in ds[CORPUS.index("missing")].message
    assert "corrupt.wav" in ds[CORPUS.index("corrupt")].message


def test_too_short_audio_is_skipped_but_bad_settings_stop(tmp_path, processor):
    """Audio too short for a token is this sample's problem (skipped, named); a bad window length is the
    run's (a ConfigError for every sample, so it is raised, not counted as bad audio)."""
    write_tone(tmp_path / "audio" / "click.wav", 0.015)
    qa = _turns(("human", "<sound>\nWhat is it?"), ("gpt", "a click"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "click", "sound": "audio/click.wav", "conversations": qa}) + "\n"
    )
    item = ManifestDataset(manifest, processor, on_error="skip")[0]
    assert (
        isinstance(item, Skipped) and "click.wav" in item.message and "no LLM token" in item.message
    )
    from transformers import AutoTokenizer

    from afnext.encoders.whisper import AFWhisperEncoder
    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    odd = AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths, window_seconds=1e-5)
    with pytest.raises(ConfigError, match="window_seconds"):
        ManifestDataset(manifest, odd, on_error="skip")[0]


def test_limits_skip_long_audio_and_long_samples(tmp_path, processor):
    manifest = write_corpus(tmp_path)
    ds = ManifestDataset(manifest, processor, max_audio_seconds=1.5)
    assert not isinstance(ds[0], Skipped)
    assert ds[CORPUS.index("multi")].reason == "audio_too_long"  # measured after decoding
    assert ds[CORPUS.index("pair")].reason == "audio_too_long"
    short = ManifestDataset(manifest, processor, max_length=20)
    item = short[0]
    assert item.reason == "too_many_tokens" and "max_length=20" in item.message


def test_raise_mode_names_file_and_line(tmp_path, processor):
    manifest = write_corpus(tmp_path)
    with pytest.raises(DataError, match=r"m\.jsonl:4: not valid JSON"):
        ManifestDataset(manifest, processor, on_error="raise")
    lines = manifest.read_text().splitlines()
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join([lines[0], lines[1], lines[2]]) + "\n")
    ds = ManifestDataset(clean, processor, on_error="raise")
    assert ds[0]["id"] == "good"
    with pytest.raises(DataError, match=r"clean\.jsonl:2: audio file not found: .*nope\.wav"):
        ds[1]
    with pytest.raises(DataError, match=r"clean\.jsonl:3: cannot use audio"):
        ds[2]
    with pytest.raises(ConfigError, match="on_error"):
        ManifestDataset(clean, processor, on_error="ignore")
    with pytest.raises(ConfigError, match="attach_processor"):
        ManifestDataset(clean)[0]


def test_collator_pads_right_and_concatenates_windows(tmp_path, processor):
    ds = ManifestDataset(write_corpus(tmp_path), processor)
    items = [ds[CORPUS.index(n)] for n in ("good", "missing", "text", "pair")]
    batch = Collator(processor.pad_token_id)(items)
    samples = [items[0], items[2], items[3]]
    lengths = [s["num_tokens"] for s in samples]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for row, s in enumerate(samples):
        n = s["num_tokens"]
        assert torch.equal(batch["input_ids"][row, :n], s["input_ids"])
        assert torch.equal(batch["labels"][row, :n], s["labels"])
        assert (batch["input_ids"][row, n:] == processor.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
    assert torch.equal(
        batch["input_features"], torch.cat([items[0]["input_features"], items[3]["input_features"]])
    )
    assert batch["input_features_mask"].shape == (3, 3000)
    assert batch["audio_seconds"] == pytest.approx(6.0)
    assert batch["num_tokens"] == sum(lengths) and batch["num_samples"] == 3
    assert batch["ids"] == ["good", "text", "pair"]
    # What a validation answer is shown and scored with: first sound, the question, the options.
    assert batch["sounds"] == [
        str(tmp_path / "audio" / "good.wav"),
        None,
        str(tmp_path / "audio" / "good.wav"),
    ]
    assert batch["questions"] == ["<sound>\nWhat is it?", "Say hi", "<sound> then <sound>: same?"]
    assert batch["choices"] == [[], [], []]
    assert [(s.where.rsplit(":", 1)[1], s.reason) for s in batch["skipped"]] == [
        ("2", "missing_file")
    ]

    empty = Collator(processor.pad_token_id)([items[1]])
    assert empty["num_samples"] == 0 and empty["input_ids"].shape == (0, 0)
    assert "input_features" not in empty and len(empty["skipped"]) == 1


def test_collator_packs_rows_with_restarting_positions(tmp_path, processor):
    ds = ManifestDataset(write_corpus(tmp_path), processor)
    samples = [ds[CORPUS.index(n)] for n in ("good", "text", "multi", "pair")]
    lengths = [s["num_tokens"] for s in samples]
    max_length = max(*lengths, lengths[0] + lengths[1])  # at least good + text share a row
    batch = Collator(processor.pad_token_id, pack=True, max_length=max_length)(samples)
    assert batch["input_ids"].shape[1] <= max_length
    assert batch["input_ids"].shape[0] < len(samples)
    assert (batch["attention_mask"] == 1).all()
    by_id = {s["id"]: s for s in samples}
    ids, positions = batch["input_ids"], batch["position_ids"]
    width = ids.shape[1]
    queue = list(batch["ids"])
    windows = []
    for row in range(ids.shape[0]):
        col = 0
        while queue and col + by_id[queue[0]]["num_tokens"] <= width:
            s = by_id[queue[0]]
            n = s["num_tokens"]
            if not torch.equal(ids[row, col : col + n], s["input_ids"]):
                break
            assert torch.equal(positions[row, col : col + n], torch.arange(n))
            assert batch["labels"][row, col] == IGNORE_INDEX
            windows.append(s["input_features"])
            queue.pop(0)
            col += n
        assert col > 0 and (ids[row, col:] == processor.pad_token_id).all()
        assert torch.equal(positions[row, col:], torch.arange(width - col))
    assert not queue  # every sample found whole, in row order
    assert torch.equal(
        batch["input_features"], torch.cat(windows)
    )  # windows follow the packed order
    assert (positions[:, 0] == 0).all()
    with pytest.raises(ConfigError, match="max_length"):
        Collator(processor.pad_token_id, pack=True)
