"""Checkpoints keep each component's spec and rebuild only afnext / plugin component classes from it.

Crafted folders name a function, a class that is no component, a module outside afnext and its plugins, and an
argument the class does not take: each is a CheckpointError raised before anything it names runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import CheckpointError
from afnext.llms.hf import HFCausalLM
from afnext.specs import component_spec, recorded_spec
from tests.helpers import TINY_LLM


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    encoder = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    model = AudioLanguageModel.build(
        encoder, MLPConnector, HFCausalLM(config=TINY_LLM), RotaryTimeEmbedding
    )
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(folder)
    return folder


def _crafted(saved: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "crafted"
    folder.mkdir()
    for item in saved.iterdir():
        target = folder / item.name
        (target.symlink_to(item, target_is_directory=item.is_dir()))
    (folder / "afnext_config.json").unlink()
    config = json.loads((saved / "afnext_config.json").read_text())
    edit(config)
    (folder / "afnext_config.json").write_text(json.dumps(config))
    return folder


def test_every_component_is_saved_as_its_class_and_all_its_arguments(saved):
    components = json.loads((saved / "afnext_config.json").read_text())["components"]
    assert components["encoder"]["_target_"] == "afnext.encoders.whisper.AFWhisperEncoder"
    assert (
        components["encoder"]["d_model"] == 40
        and components["encoder"]["attn_implementation"] == "sdpa"
    )
    assert components["connector"] == {
        "_target_": "afnext.connectors.mlp.MLPConnector",
        "in_dim": 40,
        "out_dim": 32,
        "hidden_dim": None,
        "act": "gelu",
        "bias": True,
    }
    assert components["time_embedding"]["_target_"] == "afnext.connectors.rote.RotaryTimeEmbedding"
    assert components["llm"]["config"]["model_type"] == "qwen2" and "path" not in components["llm"]
    back = AudioLanguageModel.from_pretrained(saved)
    assert isinstance(back.connector, MLPConnector) and back.connector.out_dim == 32


def test_a_function_as_a_component_class_is_refused_and_not_called(saved, tmp_path):
    """The attack that worked before: a writer function with a target path and data as its arguments."""
    victim = tmp_path / "written.json"

    def edit(config):
        config["components"]["connector"] = {
            "_target_": "afnext.storage.write_json",
            "target": str(victim),
            "data": {"pwned": True},
        }

    with pytest.raises(CheckpointError, match="not a connector component"):
        AudioLanguageModel.from_pretrained(_crafted(saved, tmp_path, edit))
    assert not victim.exists()


def test_a_class_that_is_no_component_is_refused(saved, tmp_path):
    def edit(config):
        config["components"]["connector"] = {"_target_": "afnext.model.AudioLanguageModel"}

    with pytest.raises(CheckpointError, match="not a connector component"):
        AudioLanguageModel.from_pretrained(_crafted(saved, tmp_path, edit))


def test_a_module_outside_afnext_and_its_plugins_is_never_imported(saved, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    package = tmp_path / "site"
    package.mkdir()
    (package / "evil_components.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nimport torch\nclass Enc(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package))

    def edit(config):
        config["components"]["encoder"] = {"_target_": "evil_components.Enc"}

    with pytest.raises(CheckpointError, match="outside afnext and its installed plugins"):
        AudioLanguageModel.from_pretrained(_crafted(saved, tmp_path, edit))
    assert not marker.exists() and "evil_components" not in sys.modules


def test_an_argument_the_class_does_not_take_is_refused_before_it_is_built(
    saved, tmp_path, monkeypatch
):
    import functools

    built = []
    original = MLPConnector.__init__

    @functools.wraps(original)  # same signature: only records that the class was built
    def spy(self, *args, **kwargs):
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(MLPConnector, "__init__", spy)

    def edit(config):
        config["components"]["connector"]["shell"] = "rm -rf /"

    with pytest.raises(CheckpointError, match=r"takes no argument \['shell'\]"):
        AudioLanguageModel.from_pretrained(_crafted(saved, tmp_path, edit))
    assert built == []


def test_an_argument_that_builds_an_object_is_refused(saved, tmp_path):
    def edit(config):
        config["components"]["connector"]["act"] = {"_target_": "os.system", "command": "true"}

    with pytest.raises(CheckpointError, match="names an object to build"):
        AudioLanguageModel.from_pretrained(_crafted(saved, tmp_path, edit))


def test_folders_of_the_first_format_still_load(saved, tmp_path):
    def edit(config):
        config["format_version"] = 1
        config["components"] = {
            name: None if spec is None else {"class": spec.pop("_target_"), "kwargs": spec}
            for name, spec in config["components"].items()
        }

    back = AudioLanguageModel.from_pretrained(_crafted(saved, tmp_path, edit))
    original = AudioLanguageModel.from_pretrained(saved)
    for (name, a), (_, b) in zip(back.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_component_built_from_a_partial_records_what_finished_it():
    """A plugin's connector (no metaclass of afnext's) given as a Hydra partial: the model records the partial's
    class and arguments with the sizes it filled in."""
    import functools

    class PlainConnector(torch.nn.Module):
        def __init__(self, in_dim: int, out_dim: int, scale: float = 1.0) -> None:
            super().__init__()
            self.in_dim, self.out_dim, self.proj = in_dim, out_dim, torch.nn.Linear(in_dim, out_dim)

        def output_lengths(self, lengths):
            return lengths

        def forward(self, hidden, mask):
            return self.proj(hidden), mask

    encoder = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    model = AudioLanguageModel.build(
        encoder, functools.partial(PlainConnector, scale=2.0), HFCausalLM(config=TINY_LLM)
    )
    spec = recorded_spec(model.connector)
    assert spec["_target_"].endswith("PlainConnector")
    assert {k: v for k, v in spec.items() if k != "_target_"} == {
        "scale": 2.0,
        "in_dim": 40,
        "out_dim": 32,
    }
    assert component_spec("connector", model.connector)["in_dim"] == 40


def test_a_component_built_without_a_spec_cannot_be_saved_and_says_how(tmp_path):
    class Bare(torch.nn.Module):
        pass

    with pytest.raises(CheckpointError, match="record_spec"):
        component_spec("encoder", Bare())
