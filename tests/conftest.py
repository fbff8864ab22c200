"""Shared test fixtures: the public reference data in tests/assets; and how `make test` shares the
tests between its pytest-xdist workers (`pytest_collection_modifyitems`)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ASSETS = TESTS / "assets"
# Tests that run real nodes (bridges, iptables and nftables rules, sysctls, /var/lib/kubelet, the one
# NetworkPolicy enforcer a host may have) or compare the host's state before and after them: one
# xdist group, run in collection order by one worker, so that no two stacks of real nodes ever run
# at once and the e2e stack (package scope) is stopped before the integration tier starts its own.
REAL_NODE_GROUP = "real-nodes"
REAL_NODE_PATHS = (
    TESTS / "e2e",
    TESTS / "integration" / "test_real_node.py",
    TESTS / "integration" / "test_registry.py",
    TESTS / "integration" / "test_cri_on_containerd.py",
    TESTS / "integration" / "test_network_policy.py",
)


def xdist_group(path: Path) -> str:
    """The real-node group for the tests above; for every other test its own module, so that a
    module's fixtures (a swtpm, a control plane, a rendered chart) start once, in one worker."""
    if any(path == real or real in path.parents for real in REAL_NODE_PATHS):
        return REAL_NODE_GROUP
    return path.relative_to(TESTS).as_posix()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for `pytest -n 2 --dist loadgroup` (what `make test` runs): the worker that
    takes the real-node group runs it alone while the other runs the rest, most of which needs CPU
    where the real nodes mostly wait. Without xdist the mark changes nothing."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group(item.path)))


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
