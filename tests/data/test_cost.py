"""The work estimate shared by the sampler's balancing and the planner, from a model built on ``meta``."""

from __future__ import annotations

import pytest

from afnext.config import build_on_meta, compose_config
from afnext.data.cost import ModelDims, step_flops


@pytest.fixture(scope="module")
def afnext_dims() -> ModelDims:
    return ModelDims.from_model(build_on_meta(compose_config("train", ["experiment=afnext"])))


def test_sizes_come_from_the_built_model(afnext_dims):
    d = afnext_dims
    assert (d.llm_hidden, d.llm_layers, d.llm_heads, d.llm_kv_heads, d.llm_head_dim) == (
        3584,
        28,
        28,
        4,
        128,
    )
    assert (d.vocab, d.llm_intermediate) == (151672, 18944)
    assert (d.encoder_width, d.encoder_layers, d.encoder_positions) == (1280, 32, 1500)
    assert d.tokens_per_window == 750 and d.window_seconds == 30.0
    assert d.windows_for_seconds(1800) == 60 and d.windows_for_seconds(30.01) == 2
    assert d.tokens_for_seconds(1800) == 45000 + 2 + 64


def test_attention_work_grows_with_the_square_of_a_document(afnext_dims):
    one = step_flops(afnext_dims, [45000], 60)
    split = step_flops(afnext_dims, [22500, 22500], 60)
    assert one > split  # same tokens, attention only within documents
    per_token = step_flops(afnext_dims, [1000], 0) / 1000
    assert per_token > 6 * afnext_dims.llm_params  # the matrix products at least
