"""A tiny random model saved once per test process, for the tests that run ``afnext eval``."""

from __future__ import annotations

import pytest

from tests.inference.tiny import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")
