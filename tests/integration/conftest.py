"""Fixtures for tests that need a TPM: a fresh swtpm per test, a dev CA, a provisioned swtpm; and
the chart helm/aicert's identities and policies, rendered once by the pinned helm."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import ProvisionResult, dev_provision
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster import helm


@dataclass(frozen=True)
class ProvisionedTpm:
    """A running swtpm provisioned like an Azure vTPM, and what provisioning returned.

    swtpm serves one client at a time: close the `Tpm` from `open()` before running tpm2-tools.
    """

    swtpm: Swtpm
    ca: DevCA
    result: ProvisionResult

    @property
    def spec(self) -> str:
        return self.swtpm.spec

    def open(self) -> Tpm:
        return Tpm(self.swtpm.spec)


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    """A running swtpm with fresh state (function scope); stopped after the test."""
    instance = Swtpm(tmp_path / "swtpm-state")
    instance.start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def dev_ca(tmp_path: Path) -> DevCA:
    """A dev CA kept in a temporary directory."""
    return DevCA.load_or_create(tmp_path / "dev-ca")


@pytest.fixture
def provisioned_tpm(swtpm: Swtpm, dev_ca: DevCA) -> ProvisionedTpm:
    """The `swtpm` fixture after `dev_provision` (ECC AK at 0x81000003, cert in NV 0x01C101D0)."""
    with Tpm(swtpm.spec) as tpm:
        result = dev_provision(tpm, dev_ca)
    return ProvisionedTpm(swtpm=swtpm, ca=dev_ca, result=result)


@pytest.fixture(scope="module")
def tpm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """A running swtpm shared by the tests of one module (module scope); stopped after them."""
    server = Swtpm(tmp_path_factory.mktemp("swtpm"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Helm's cache, config and data directories for this test session (not the user's)."""
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="session")
def chart_policies(helm_home: Path) -> list[dict[str, Any]]:
    """What the e2e stack applies: the chart's ServiceAccounts, RBAC, tenant roles and admission
    policies as release "aicert" in aicert-system, rendered once by `helm template` (the first
    use builds helm, a few minutes)."""
    return [doc for doc in yaml.safe_load_all(helm.policy_manifest(home=helm_home)) if doc]
