"""Shared test fixtures: the public reference data in tests/assets."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(scope="session")
def azure_dir() -> Path:
    """The Azure vTPM root and intermediate certificates and a real old AICert proof file."""
    return ASSETS / "azure"


@pytest.fixture(scope="session")
def product_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The operator and agent images of this checkout, built as `make images` builds them (the
    builder's cache, ~/.cache/aicert/images, makes this about half a minute after the first build):
    each image's OCI layout directory by name (aicert-operator, aicert-agent)."""
    from aicert_images.cli import build
    from aicert_images.repository import DOCKERFILES

    out = tmp_path_factory.mktemp("product-images")
    return {layout.name: layout.path for layout in (build(dockerfile, out) for dockerfile in DOCKERFILES)}
