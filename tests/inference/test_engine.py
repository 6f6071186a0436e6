"""The inference engine: batched answers equal one-at-a-time ones, per-request errors, planning, streaming,
generation settings and presets."""

from __future__ import annotations

import pytest
import torch

from afnext.data.processor import AudioProcessor
from afnext.errors import AudioError, ConfigError
from afnext.inference.engine import InferenceEngine, Request
from afnext.inference.generation import GenerationSettings
from tests.helpers import tone_mix
from tests.inference.tiny import build_tiny_model


@pytest.fixture(scope="module")
def engine():
    model = build_tiny_model()
    processor = AudioProcessor.from_model(model, max_seconds=20.0)
    return InferenceEngine(model, processor, settings=GenerationSettings(max_new_tokens=12))


def _request(i: int, seconds: float, **settings) -> Request:
    return Request(
        [{"role": "user", "content": f"<sound>\nWhat happens in clip {i}?" + " really" * (i % 3)}],
        [tone_mix(seconds, i)],
        GenerationSettings(max_new_tokens=12, **settings),
        id=str(i),
    )


@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_batched_answers_equal_one_at_a_time(engine, penalty):
    """Mixed lengths in one left-padded batch (and the repetition penalty, which sees the padding) give each
    request the tokens it gets alone."""
    requests = [_request(i, 0.5 + 0.9 * i, repetition_penalty=penalty) for i in range(8)]
    alone = [engine.generate([r])[0] for r in requests]
    together = engine.generate(requests)
    assert [r.timings["batch_size"] for r in together] == [8.0] * 8
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(r.ok and r.completion_tokens > 0 for r in together)
    assert len({r.text for r in together}) > 1  # the answers depend on the audio


def test_left_padding_is_invisible_to_the_repetition_penalty(engine):
    """A penalty that counted a row's padding would penalise the pad token (here also a stop token) batched but
    not alone. At the third new token the pad token is made the narrow favourite (10% over the best logit):
    alone every request stops there, and batched too (transformers 5.25 leaves left padding out of the penalty;
    the engine also pads each row with its own first token, for versions that count it)."""
    pad = engine.processor.pad_token_id
    assert pad in engine.stop_ids
    calls = []

    def favour_pad(_module, _inputs, logits):
        calls.append(1)
        if len(calls) == 3:
            best = logits[..., :].amax(-1)
            logits[..., pad] = torch.where(best > 0, best * 1.1, best * 0.9)

    requests = [_request(i, 0.5 + 0.9 * i, repetition_penalty=1.2) for i in range(6)]
    handle = engine.model.llm.base.lm_head.register_forward_hook(favour_pad)
    try:
        alone = []
        for r in requests:
            calls.clear()
            alone.append(engine.generate([r])[0])
        calls.clear()
        together = engine.generate(requests)
    finally:
        handle.remove()
    assert all(r.finish_reason == "stop" and r.completion_tokens == 3 for r in alone)
    assert [(r.text, r.finish_reason) for r in together] == [
        (r.text, r.finish_reason) for r in alone
    ]


def test_bad_audio_fails_its_request_only(engine):
    requests = [_request(0, 1.0), _request(1, 1.0), _request(2, 2.0)]
    requests[1].audio = [b"this is not audio"]
    requests.append(Request([{"role": "user", "content": "no placeholder"}], [tone_mix(1.0)]))
    results = engine.generate(requests)
    assert (
        results[0].ok
        and results[2].ok
        and results[0].text == engine.generate([requests[0]])[0].text
    )
    assert not results[1].ok and "could not decode audio" in results[1].error
    assert results[3].error is not None and "placeholder" in results[3].error
    long = _request(4, 21.0)
    assert "over the limit of 20 s" in engine.generate([long])[0].error


def test_a_failing_batch_is_rerun_request_by_request(engine, monkeypatch):
    """A batch that fails as a whole (out of memory, say) after streaming some text runs again one request at
    a time: the request at fault reports the error, the others their answers, streamed text is not repeated."""
    requests = [_request(i, 1.0 + i) for i in range(3)]
    expected = [r.text for r in engine.generate(requests)]
    real = engine._generate

    def flaky(prepared, listeners):
        if len(prepared) > 1 or prepared[0].request.id == "1":
            for listener in listeners:
                if listener is not None:
                    listener(expected[0][:3] if listener is listeners[0] else "")
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(prepared, listeners)

    monkeypatch.setattr(engine, "_generate", flaky)
    pieces: list[str] = []
    results = engine.run([engine.prepare(r) for r in requests], [pieces.append, None, None])
    assert results[0].text == expected[0] and "".join(pieces) == expected[0]
    assert "out of memory" in results[1].error and results[2].text == expected[2]


def test_plan_groups_settings_and_respects_the_caps(engine):
    greedy, sampled = GenerationSettings(max_new_tokens=10), GenerationSettings(do_sample=True)
    lengths = [100, 5, 60, 70, 80, 90, 10, 20]
    settings = [greedy] * 6 + [sampled] * 2
    engine.max_batch_size, engine.token_budget = 3, 400
    try:
        plan = engine.plan(lengths, settings)
    finally:
        engine.max_batch_size, engine.token_budget = 32, 65536
    assert sorted(i for batch in plan for i in batch) == list(range(8))
    for batch in plan:
        assert len({settings[i] for i in batch}) == 1 and len(batch) <= 3
        cost = len(batch) * (max(lengths[i] for i in batch) + settings[batch[0]].max_new_tokens)
        assert cost <= 400 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    assert plan[0][0] == 0  # the longest prompt first
    with pytest.raises(ConfigError, match="max_batch_size=0"):
        InferenceEngine(engine.model, engine.processor, max_batch_size=0)


def test_estimated_prompt_tokens_are_exact_for_known_lengths(engine):
    for i, seconds in enumerate([0.3, 1.0, 7.99, 8.0, 12.5]):
        request = _request(i, seconds)
        assert engine.estimate_tokens(request, [seconds]) == engine.prepare(request).prompt_tokens


def test_stream_pieces_join_to_the_answer(engine):
    request = _request(3, 2.5, repetition_penalty=1.2)
    pieces = list(engine.stream(request))
    assert len(pieces) > 1 and "".join(pieces) == engine.generate([request])[0].text
    bad = _request(1, 1.0)
    bad.audio = [b"RIFF...."]
    with pytest.raises(AudioError, match="could not decode audio"):
        list(engine.stream(bad))


def test_finish_reason_and_token_counts(engine):
    result = engine.generate([_request(0, 1.0)])[0]
    assert result.finish_reason == "length" and result.completion_tokens == 12
    stop = engine.stop_ids[0]

    def force_stop(_module, _inputs, logits):
        logits[..., stop] = 1e4  # the first new token ends the turn

    handle = engine.model.llm.base.lm_head.register_forward_hook(force_stop)
    try:
        stopped = engine.generate([_request(0, 1.0)])[0]
    finally:
        handle.remove()
    assert stopped.finish_reason == "stop" and stopped.text == "" and stopped.completion_tokens == 1
    assert stopped.prompt_tokens == result.prompt_tokens > 0


def test_generation_settings_check_names_the_key():
    with pytest.raises(ConfigError, match=r"benchmark mmau.generation.beams: unknown"):
        GenerationSettings.from_mapping({"beams": 4}, where="benchmark mmau.generation")
    with pytest.raises(ConfigError, match=r"top_p=1\.5"):
        GenerationSettings(top_p=1.5)
    merged = GenerationSettings.from_mapping(
        {"max_new_tokens": 4096, "repetition_penalty": 1.2}, {"max_new_tokens": 12, "top_k": None}
    )
    assert merged == GenerationSettings(max_new_tokens=12, repetition_penalty=1.2)
    kwargs = merged.generate_kwargs()
    assert kwargs["do_sample"] is False and kwargs["temperature"] is None


@pytest.mark.parametrize(
    ("preset", "tokens", "penalty"),
    [
        ("greedy", 1024, 1.0),
        ("instruct", 1024, 1.2),
        ("captioner", 2048, 1.2),
        ("think", 4096, 1.2),
    ],
)
def test_presets_hold_the_model_cards_settings(preset, tokens, penalty):
    """conf/generation/: the AF-Next cards' repetition penalty and lengths, all greedy (reproducible)."""
    from omegaconf import OmegaConf

    from afnext.config import compose_config

    node = compose_config("eval", ["benchmark=mmau", f"generation={preset}"]).generation
    settings = GenerationSettings.from_mapping(OmegaConf.to_container(node))
    assert (settings.max_new_tokens, settings.repetition_penalty) == (tokens, penalty)
    assert not settings.do_sample


def test_sampling_with_a_seed_is_repeatable(engine):
    request = _request(2, 1.5, do_sample=True, temperature=1.0, seed=7)
    assert engine.generate([request])[0].text == engine.generate([request])[0].text
    torch.manual_seed(0)
