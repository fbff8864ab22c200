"""ImageStore.add_layout: an image copied from another OCI layout keeps its manifest digest, and a
damaged layout (no index, no manifest, a tampered or missing layer) is refused with nothing added."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aicert_localcluster.images import ImageStore, ImageStoreError


def built_store(tmp_path: Path) -> tuple[ImageStore, str]:
    store = ImageStore(tmp_path / "a")
    ref = store.build("registry.local/t/app", {"run.py": b"print(1)"}, entrypoint=["python3"], cmd=None)
    return store, ref


def test_a_layout_copies_into_another_store_under_the_same_digest(tmp_path: Path) -> None:
    source, ref = built_store(tmp_path)
    target = ImageStore(tmp_path / "b")
    copied = target.add_layout(source.layout, "registry.local/t/app")
    assert copied == ref
    assert copied in target
    assert sorted(p.name for p in target.blobs.iterdir()) == sorted(p.name for p in source.blobs.iterdir())
    assert (target.blobs / ref.split(":")[-1]).read_bytes() == (
        source.blobs / ref.split(":")[-1]
    ).read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda layout: (layout / "index.json").unlink(), "not an OCI image layout"),
        (
            lambda layout: (layout / "index.json").write_text('{"manifests": []}'),
            "expected one image manifest",
        ),
        (
            lambda layout: [
                b.write_bytes(b"x") for b in (layout / "blobs/sha256").iterdir() if b.stat().st_size > 1000
            ],
            "does not match its digest",
        ),
        (
            lambda layout: [
                b.unlink() for b in (layout / "blobs/sha256").iterdir() if b.stat().st_size > 1000
            ],
            "is missing",
        ),
    ],
    ids=["no-index", "no-manifest", "tampered-layer", "missing-layer"],
)
def test_a_damaged_layout_is_refused_and_nothing_is_added(tmp_path: Path, damage: Any, message: str) -> None:
    source, ref = built_store(tmp_path)
    damage(source.layout)
    target = ImageStore(tmp_path / "b")
    with pytest.raises(ImageStoreError, match=message):
        target.add_layout(source.layout, "registry.local/t/app")
    assert target.references() == []
    assert ref not in target
