"""A server on a tiny random model, in a thread on a free port, for the tests that talk to it."""

from __future__ import annotations

import pytest

from tests.inference.tiny import save_tiny_model

SERVE = {
    "model_name": "tiny",
    "generation": {"max_new_tokens": 12, "repetition_penalty": 1.2},
    "max_audio_seconds": 10.0,
    "max_new_tokens": 64,
    "max_batch_size": 16,
    "batch_wait_ms": 20.0,
    "max_body_mb": 1.0,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("served_audio")


@pytest.fixture(scope="module")
def server(tiny_model_dir, audio_dir):
    from afnext.serving.server import ServerThread, build_app

    app = build_app(tiny_model_dir, audio_dir=audio_dir, **SERVE)
    with ServerThread(app) as running:
        yield running
