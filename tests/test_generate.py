"""``AudioLanguageModel.generate`` against transformers' ``AudioFlamingo3ForConditionalGeneration.generate``.

A tiny random AF3 checkpoint (1 s windows: ``max_source_positions=50``, so it runs in seconds) is saved with
transformers' ``save_pretrained`` and loaded by afnext. Sampling under a seed, the repetition penalty, the
KV cache and the stop tokens must behave exactly as transformers' own model does on the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.data.processor import AudioProcessor
from tests.helpers import tiny_hf_configs, tone_mix

MAX_NEW = 6


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers AF3 model, afnext model loaded from its folder, a left-padded batch of two)."""
    from transformers import AudioFlamingo3ForConditionalGeneration, AutoTokenizer

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    folder = tmp_path_factory.mktemp("tiny_af3")
    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    config = tiny_hf_configs(tokenizer, "af3")
    config.audio_config.max_source_positions = 50  # 1 s windows of 100 log-mel frames
    torch.manual_seed(0)
    ref = AudioFlamingo3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random init gives near-uniform next-token logits (std ~0.1), where temperature and top-p hardly
        # change a seeded draw; a sharper head (std ~3) makes each sampling setting matter.
        ref.lm_head.weight.mul_(30.0)
    ref.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ours = AudioLanguageModel.from_pretrained(folder).eval()
    proc = AudioProcessor.from_model(ours)
    convs = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "audio": tone_mix(0.8, 1)},
                    {"type": "text", "text": "Q?"},
                ],
            }
        ],
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "audio",
                        "audio": tone_mix(1.7, 2),
                    },  # two windows, the last one padded
                    {"type": "text", "text": "A longer question?"},
                ],
            }
        ],
    ]
    inputs = proc(convs)
    assert (inputs["attention_mask"][0] == 0).any()  # left padding in the batch
    return ref, ours, inputs


def _ref_stops(ours: AudioLanguageModel) -> dict:
    """The stop and pad ids afnext uses by default, spelled out for transformers' model (which has none)."""
    return {
        "eos_token_id": ours.llm.stop_token_ids(),
        "pad_token_id": ours.llm.tokenizer.pad_token_id,
    }


@contextmanager
def logits_edit(*heads: torch.nn.Module, edit) -> Iterator[list[int]]:
    """Apply ``edit(logits, step)`` to the output of each LM head; yields the per-head call counts."""
    counts = [0] * len(heads)
    handles = []
    for i, head in enumerate(heads):

        def hook(_module, _inputs, logits, i=i):
            edit(logits, counts[i])
            counts[i] += 1
            return logits

        handles.append(head.register_forward_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------------
# (a) seeded sampling
# --------------------------------------------------------------------------------------------------
SAMPLING = {
    "temperature": {"temperature": 0.7},
    "top_k": {"top_k": 3},
    "top_p": {"top_p": 0.5, "temperature": 1.3},
    "all": {"temperature": 0.9, "top_p": 0.9, "top_k": 20},
}


@pytest.mark.parametrize("settings", SAMPLING.values(), ids=SAMPLING.keys())
def test_seeded_sampling_matches_transformers(pair, settings):
    ref, ours, inputs = pair
    kw = {"max_new_tokens": MAX_NEW, "do_sample": True, **settings}
    torch.manual_seed(123)
    expected = ref.generate(**inputs, **kw, **_ref_stops(ours))
    torch.manual_seed(123)
    got = ours.generate(**inputs, **kw)
    assert torch.equal(got, expected)


def test_sampling_is_seeded_and_not_greedy(pair):
    _, ours, inputs = pair
    kw = {"max_new_tokens": MAX_NEW, "do_sample": True, "temperature": 1.0, "top_k": 50}

    def sample(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return ours.generate(**inputs, **kw)

    first, again, other = sample(7), sample(7), sample(8)
    greedy = ours.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, greedy)
    # The settings reach the sampler: each gives other tokens under the same seed.
    outs = []
    for settings in SAMPLING.values():
        torch.manual_seed(123)
        outs.append(ours.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=True, **settings))
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.equal(outs[i], outs[j]), (i, j)


# --------------------------------------------------------------------------------------------------
# (b) repetition penalty
# --------------------------------------------------------------------------------------------------
def test_repetition_penalty_changes_output_and_matches_transformers(pair):
    """A prompt token is made the favourite (20% over the best logit); a penalty of 1.5 must push it
    below the best again. transformers penalises every token of ``input_ids``, prompt included, so this
    also checks that afnext hands the prompt ids (not only its embeddings) to ``generate``."""
    ref, ours, inputs = pair
    favourite = int(inputs["input_ids"][0, -2])  # "assistant", in the prompt of both rows
    assert (inputs["input_ids"][1] == favourite).any()

    def favour(logits, _step):
        best = logits.amax(-1)
        assert (best > 0).all()
        logits[..., favourite] = 1.2 * best

    kw = {"max_new_tokens": MAX_NEW, "do_sample": False}
    L = inputs["input_ids"].shape[1]
    with logits_edit(ours.llm.base.lm_head, ref.lm_head, edit=favour):
        plain = ours.generate(**inputs, **kw)
        penalised = ours.generate(**inputs, **kw, repetition_penalty=1.5)
        expected = ref.generate(**inputs, **kw, repetition_penalty=1.5, **_ref_stops(ours))
    assert (plain[:, L:] == favourite).all()
    assert not (penalised[:, L:] == favourite).any()
    assert torch.equal(penalised, expected)


# --------------------------------------------------------------------------------------------------
# (c) KV cache
# --------------------------------------------------------------------------------------------------
def test_generate_uses_the_kv_cache(pair):
    """The first LLM call takes the whole spliced prompt as embeddings; every later call one new token id
    and a cache holding everything before it."""
    _, ours, inputs = pair
    B, L = inputs["input_ids"].shape
    calls = []

    def record(_module, _args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        calls.append(
            {
                "ids": None if ids is None else tuple(ids.shape),
                "embeds": None if embeds is None else tuple(embeds.shape),
                "cached": 0 if cache is None else int(cache.get_seq_length()),
            }
        )

    handle = ours.llm.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        ours.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    finally:
        handle.remove()
    assert len(calls) == 4
    assert calls[0] == {"ids": None, "embeds": (B, L, ours.llm.hidden_size), "cached": 0}
    for step, call in enumerate(calls[1:], start=1):
        assert call == {"ids": (B, 1), "embeds": None, "cached": L + step - 1}


def test_cached_generation_equals_full_recompute(pair):
    """Greedy tokens with the cache equal a loop that re-runs the whole sequence (audio included) each step."""
    _, ours, inputs = pair
    L = inputs["input_ids"].shape[1]
    got = ours.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        for _ in range(MAX_NEW):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding, as generate does
            logits = ours(
                input_ids=ids,
                attention_mask=mask,
                input_features=inputs["input_features"],
                input_features_mask=inputs["input_features_mask"],
                position_ids=position_ids,
                use_cache=False,
            ).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    assert got.shape == (ids.shape[0], L + MAX_NEW)
    assert torch.equal(got, ids)


# --------------------------------------------------------------------------------------------------
# (d) stopping
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", ["<|im_end|>", "<|endoftext|>"])
def test_stops_per_row_on_stop_tokens_and_pads(pair, stop):
    """Row 0 is forced to emit ``stop`` at its 3rd new token: it ends there and is padded; row 1 runs on."""
    ref, ours, inputs = pair
    stop_id = ours.llm.token_id(stop)
    pad = ours.llm.tokenizer.pad_token_id
    L = inputs["input_ids"].shape[1]

    def force(logits, step):
        if step == 2:
            logits[0, -1, stop_id] = logits[0, -1].amax() + 100.0

    with logits_edit(ours.llm.base.lm_head, ref.lm_head, edit=force):
        got = ours.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    with logits_edit(ours.llm.base.lm_head, ref.lm_head, edit=force):
        expected = ref.generate(
            **inputs, max_new_tokens=MAX_NEW, do_sample=False, **_ref_stops(ours)
        )
    assert got.shape == (2, L + MAX_NEW)
    assert got[0, L + 2] == stop_id
    assert (got[0, L + 3 :] == pad).all()
    assert not torch.isin(got[1, L:], torch.tensor(ours.llm.stop_token_ids())).any()
    assert torch.equal(got, expected)


def test_all_rows_stopped_ends_generation_and_eos_override(pair):
    _, ours, inputs = pair
    im_end = ours.llm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    L = inputs["input_ids"].shape[1]

    def force(logits, step):
        if step == 1:
            logits[:, -1, im_end] = logits[:, -1].amax(-1) + 100.0

    with logits_edit(ours.llm.base.lm_head, edit=force):
        stopped = ours.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    assert stopped.shape == (2, L + 2) and (stopped[:, -1] == im_end).all()
    # An explicit eos_token_id replaces the default: <|im_end|> no longer stops.
    endoftext = ours.llm.token_id("<|endoftext|>")
    with logits_edit(ours.llm.base.lm_head, edit=force):
        ran_on = ours.generate(
            **inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=endoftext
        )
    assert ran_on.shape == (2, L + MAX_NEW)
    assert (ran_on[:, L + 1] == im_end).all()
    assert not (ran_on[:, L + 2 :] == ours.llm.tokenizer.pad_token_id).all()
