"""AudioDataModule: skip counting and printing, workers, mixtures, resume (plain and through Lightning), configs."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from afnext.data.datamodule import AudioDataModule
from afnext.data.processor import AudioProcessor
from afnext.errors import ConfigError, DataError
from tests.data.test_dataset import write_corpus, write_tone


@pytest.fixture(scope="module")
def processor() -> AudioProcessor:
    from transformers import AutoTokenizer

    from afnext.encoders.whisper import AFWhisperEncoder
    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    return AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths, padding_side="right")


def _clean_manifest(root: Path, name: str, n: int, *, audio_every: int = 3) -> Path:
    """``n`` good samples: every ``audio_every``-th one with a 1 s tone (0: none), the rest text-only."""
    write_tone(root / "tone.wav", 1.0)
    lines = []
    for k in range(n):
        if audio_every and k % audio_every == 0:
            turns = [
                {"from": "human", "value": f"<sound>\nq{k}"},
                {"from": "gpt", "value": f"a{k}"},
            ]
            lines.append(
                {"id": f"{name}-{k}", "sound": "tone.wav", "duration": 1.0, "conversations": turns}
            )
        else:
            turns = [{"from": "human", "value": f"q{k}"}, {"from": "gpt", "value": f"a{k}"}]
            lines.append({"id": f"{name}-{k}", "conversations": turns})
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _module(processor, **kwargs) -> AudioDataModule:
    dm = AudioDataModule(**kwargs)
    dm.attach_processor(processor)
    dm.setup("fit")
    return dm


def _epoch(dm: AudioDataModule, limit: int | None = None) -> list[dict]:
    batches = []
    for batch in dm.train_dataloader():
        dm.record(batch)
        batches.append(batch)
        if limit is not None and len(batches) == limit:
            break
    return batches


def test_skips_are_counted_and_the_first_n_printed(tmp_path, processor, caplog):
    manifest = write_corpus(tmp_path)
    dm = _module(processor, train=[str(manifest)], batch_size=3, max_errors_printed=2)
    with caplog.at_level(logging.WARNING, logger="afnext.data.datamodule"):
        batches = _epoch(dm)
    ids = sorted(i for b in batches for i in b["ids"])
    assert ids == ["good", "multi", "pair", "text"]
    assert dm.skipped_counts() == {
        "missing_file": 1,
        "unreadable_audio": 1,
        "malformed_json": 1,
        "placeholder_mismatch": 1,
    }
    printed = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped sample")
    ]
    assert len(printed) == 2
    for message in printed:
        line = int(message.split(" ")[2].rsplit(":", 1)[1])
        assert message.startswith(f"skipped sample {manifest}:{line} (train, ")
        assert line in (2, 3, 4, 5)
    assert any("max_errors_printed=2" in r.getMessage() for r in caplog.records)
    assert dm.state_dict()["skipped"] == {"train": dm.skipped_counts()}


def test_two_workers_give_the_same_batches_as_none(tmp_path, processor):
    manifest = write_corpus(tmp_path)
    runs = [
        _epoch(_module(processor, train=[str(manifest)], batch_size=2, num_workers=w, seed=5))
        for w in (0, 2)
    ]
    assert [b["ids"] for b in runs[0]] == [b["ids"] for b in runs[1]]
    assert [b["skipped"] for b in runs[0]] == [b["skipped"] for b in runs[1]]
    for a, b in zip(*runs):
        for key in (
            "input_ids",
            "labels",
            "attention_mask",
            "input_features",
            "input_features_mask",
        ):
            assert (key in a) == (key in b)
            if key in a:
                assert torch.equal(a[key], b[key]), key


def test_resume_continues_after_the_last_consumed_batch(tmp_path, processor):
    manifest = _clean_manifest(tmp_path, "train", 10)

    def make() -> AudioDataModule:
        return _module(
            processor, train=[{"path": str(manifest)}], batch_size=2, num_workers=1, seed=1
        )

    full = [b["ids"] for b in _epoch(make())]
    first = make()
    head = [b["ids"] for b in _epoch(first, limit=3)]  # the worker has prefetched further
    state = first.state_dict()
    assert state["train_sampler"]["position"] == 3
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b["ids"] for b in _epoch(resumed)]
    assert head + rest == full


def test_manifest_weights_form_the_mixture(tmp_path, processor):
    a = _clean_manifest(tmp_path, "a", 4, audio_every=0)
    b = _clean_manifest(tmp_path, "b", 4, audio_every=0)
    dm = _module(
        processor,
        train=[{"path": str(a), "weight": 3.0}, {"path": str(b), "weight": 1.0}],
        batch_size=50,
        samples_per_epoch=100,
    )
    ids = [i for batch in _epoch(dm) for i in batch["ids"]]
    assert len(ids) == 100
    share = sum(i.startswith("a-") for i in ids) / len(ids)
    assert 0.6 < share < 0.9  # 3:1 -> 0.75 (the statistics are in test_sampler)


def test_raise_mode_stops_naming_file_and_line(tmp_path, processor):
    write_tone(tmp_path / "tone.wav", 1.0)
    turns = [{"from": "human", "value": "<sound>q"}, {"from": "gpt", "value": "a"}]
    manifest = tmp_path / "r.jsonl"
    manifest.write_text(
        json.dumps({"sound": "tone.wav", "conversations": turns})
        + "\n"
        + json.dumps({"sound": "gone.wav", "conversations": turns})
        + "\n"
    )
    dm = _module(processor, train=[str(manifest)], batch_size=4, on_error="raise")
    with pytest.raises(DataError, match=r"r\.jsonl:2: audio file not found"):
        _epoch(dm)
    with pytest.raises(ConfigError, match="attach_processor"):
        AudioDataModule(train=[str(manifest)]).train_dataloader()
    with pytest.raises(ConfigError, match=r"data\.train\[0\]"):
        AudioDataModule(train=[{"weight": 1.0}])


def test_lightning_resume_sees_the_rest_of_the_epoch(tmp_path, processor):
    import lightning.pytorch as pl

    manifest = _clean_manifest(tmp_path, "train", 12)

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[str]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch["ids"])
            return (self.w - batch["input_ids"].float().mean()).pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def run(ckpt: str | None = None, callbacks: list | None = None) -> Recorder:
        dm = AudioDataModule(train=[str(manifest)], batch_size=2, num_workers=0, seed=2)
        dm.attach_processor(processor)
        model = Recorder()
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=callbacks or [],
            enable_checkpointing=bool(callbacks),
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        assert dm.state_dict()["train_sampler"]["position"] == 6  # every batch was consumed
        return model

    every_2 = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, save_last=False
    )
    full = run(callbacks=[every_2])
    assert len(full.seen) == 6  # 12 samples, 2 per batch
    mid = tmp_path / "ckpt" / "epoch=0-step=2.ckpt"
    saved = torch.load(mid, weights_only=False)
    assert saved["AudioDataModule"]["train_sampler"] == {"epoch": 0, "position": 2, "seed": 2}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dataloader is not resumable.*")
        tail = run(str(mid))
    assert tail.seen == full.seen[2:]


def test_shipped_configs_build_the_datamodule(tmp_path):
    from hydra.utils import instantiate

    from afnext.config import compose_config

    cfg = compose_config("train", ["data=tacot_scenes", f"paths.data_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, AudioDataModule)
    assert dm.specs["train"] == [(f"{tmp_path}/tiny_scenes/train.jsonl", 1.0)]
    assert dm.specs["val"] == [(f"{tmp_path}/tiny_scenes/val.jsonl", 1.0)]
    cfg = compose_config("train", ["data=manifest", "data.train=[a.jsonl]", "data.val=[b.jsonl]"])
    dm = instantiate(cfg.data)
    assert dm.specs["train"] == [("a.jsonl", 1.0)] and dm.on_error == "skip"
