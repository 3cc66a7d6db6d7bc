"""The official fixture's files, read once per test session (``load_official`` fails when they are absent)."""

from __future__ import annotations

from typing import Dict

import pytest


@pytest.fixture(scope="session")
def inputs(load_official) -> Dict:
    """``inputs.pt``: the frames, features and state the official code started from."""
    return load_official("inputs.pt")


@pytest.fixture(scope="session")
def outputs(load_official) -> Dict:
    """``outputs.pt``: what every official learned module computed from them."""
    return load_official("outputs.pt")


@pytest.fixture(scope="session")
def tm(load_official) -> Dict:
    """``target_model.pt``: the official target model's initialisation and update."""
    return load_official("target_model.pt")
