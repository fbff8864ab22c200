"""Shared test fixtures: the public reference data in tests/assets; and how `make test` shares the
tests between its two pytest-xdist workers (`pytest_xdist_make_scheduler`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ASSETS = Path(__file__).resolve().parent / "assets"
# Tests that run real nodes (bridges, iptables and nftables rules, sysctls, /var/lib/kubelet, the one
# NetworkPolicy enforcer a host may have) or compare the host's state before and after them, by their
# node ids' prefixes: one unit of work, run in collection order by one worker, so that no two stacks
# of real nodes ever run at once and the e2e stack (package scope) is stopped before the integration
# tier starts its own real nodes.
REAL_NODE_GROUP = "real-nodes"
REAL_NODE_TESTS = (
    "tests/e2e/",
    "tests/integration/test_real_node.py",
    "tests/integration/test_registry.py",
    "tests/integration/test_cri_on_containerd.py",
    "tests/integration/test_network_policy.py",
)


def work_unit(nodeid: str) -> str:
    """The real-node group for the tests above; for every other test its module, so that a
    module's fixtures (a swtpm, a control plane, a rendered chart) start once, in one worker."""
    module = nodeid.split("::", 1)[0]
    return REAL_NODE_GROUP if module.startswith(REAL_NODE_TESTS) else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `--dist loadscope` (what `make test` runs on two workers): xdist's scheduling by scope,
    with `work_unit` as the scope. The worker that takes the real-node group (first in collection
    order, as tests/e2e comes first) runs it while the other runs the rest, most of which needs the
    CPU where real nodes mostly wait; a worker that runs out takes the next module left."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RealNodeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return RealNodeScheduling(config, log)


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
