"""``afnext export --format hf``: a folder that transformers' and vLLM's AF3 / Music Flamingo classes load.

``model.save_pretrained(out, format="hf")`` writes the weights, ``config.json`` (``architectures``:
``AudioFlamingo3ForConditionalGeneration`` without a time embedding, ``MusicFlamingoForConditionalGeneration``
with RoTE, as AF-Next), the tokenizer with its chat template and the processor. Serving engines need two more
things, written here:

* ``processor_config.json`` ``max_audio_len``: vLLM sizes its encoder cache from dummy inputs of this length
  (``AudioFlamingo3DummyInputsBuilder``), so it must be the longest audio the model takes (AF-Next: 1800 s;
  transformers' Music Flamingo processor defaults to 1200);
* ``generation_config.json``: the chat format's end-of-turn tokens as ``eos_token_id`` (vLLM and transformers
  stop there, as afnext's ``generate`` does) and the variant's decoding defaults (a preset of
  ``conf/generation/``: repetition penalty, max new tokens, greedy), which vLLM applies to requests that do
  not set them.

The folder is then loaded back with transformers' ``AutoConfig`` and ``AutoProcessor`` as a check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from afnext.errors import CheckpointError
from afnext.inference.generation import GenerationSettings

__all__ = ["export_hf"]

AF_NEXT_MAX_SECONDS = 1800.0


def export_hf(
    model: Any,
    out: str | Path,
    *,
    generation: GenerationSettings | None = None,
    max_audio_seconds: float | None = None,
) -> Path:
    """Write ``model`` as a transformers / vLLM folder.

    Args:
        model: An :class:`afnext.model.AudioLanguageModel` whose parts have a transformers counterpart
            (AF-Whisper encoder, AF3 MLP projector, RoTE or none, a Qwen2-family LLM).
        out: Target folder (replaced atomically).
        generation: Decoding defaults for ``generation_config.json`` (``None``: greedy, no penalty).
        max_audio_seconds: Longest audio (``processor_config.json`` ``max_audio_len``); ``None``: 1800 s for
            AF-Next / Music Flamingo folders, transformers' default for AF3.

    Returns:
        The folder.

    Raises:
        CheckpointError: The model has no transformers counterpart (names the part), or the written folder
            does not load back.
    """
    out = Path(out)
    model.save_pretrained(out, format="hf")
    settings = generation or GenerationSettings()
    config_path = out / "generation_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.pop("_from_model_config", None)
    stop = list(model.llm.stop_token_ids())
    config.update(
        eos_token_id=stop,
        pad_token_id=model.llm.tokenizer.pad_token_id,
        do_sample=settings.do_sample,
        max_new_tokens=settings.max_new_tokens,
        repetition_penalty=settings.repetition_penalty,
    )
    if settings.do_sample:
        config.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    processor_path = out / "processor_config.json"
    processor = json.loads(processor_path.read_text())
    if max_audio_seconds is None and model.time_embedding is not None:
        max_audio_seconds = AF_NEXT_MAX_SECONDS
    if max_audio_seconds is not None:
        processor["max_audio_len"] = int(max_audio_seconds)
    processor_path.write_text(json.dumps(processor, indent=2) + "\n")
    _check(out)
    return out


def _check(out: Path) -> None:
    """Load the folder back with transformers' auto classes."""
    from transformers import AutoConfig, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(out)
        processor = AutoProcessor.from_pretrained(out)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{out}: the exported folder does not load with transformers ({exc})"
        ) from exc
    expected = config.architectures[0].replace("ForConditionalGeneration", "Processor")
    if type(processor).__name__ != expected or not getattr(
        processor.tokenizer, "chat_template", None
    ):
        raise CheckpointError(
            f"{out}: transformers loads {type(processor).__name__} (expected {expected} with a chat template)"
        )
