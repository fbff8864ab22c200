"""Shared test fixtures: the public reference data in tests/assets."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(scope="session")
def azure_dir() -> Path:
    """The Azure vTPM root and intermediate certificates and a real old AICert proof file."""
    return ASSETS / "azure"
