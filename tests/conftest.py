"""Shared fixtures: random-weight checkpoints built once per session (see checkpoints.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from checkpoints import FIXTURES, SPECS, build


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(name) -> Path of a saved random checkpoint from checkpoints.SPECS, built on first use."""
    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build(SPECS[name], root / name)
        return built[name]

    return get


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
