"""Shared test fixtures: where the reference data in ../shared lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AICERT_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def azure_dir() -> Path:
    path = SHARED / "azure"
    if not (path / "aicert-proof-sample.json").exists():
        pytest.fail(f"reference data missing: {path} (set AICERT_SHARED_DIR)")
    return path
