"""Shared fixtures: tiny offline models are built once per session (and cached on disk across sessions)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dir():
    """Path of a tiny model directory for an architecture ("qwen2", "llama", "bloom"), built on first use."""
    from helpers.tiny import build_tiny_model

    built = {}

    def get(arch: str = "qwen2"):
        if arch not in built:
            built[arch] = build_tiny_model(arch)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def smoke_examples():
    """The first 32 sample instructions, validated."""
    from helpers.data import load_training_data

    examples, _ = load_training_data("data_samples/instructions_zh.json", limit=32)
    return examples
