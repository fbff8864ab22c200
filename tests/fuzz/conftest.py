"""Fixtures for the fuzz tests: the genuine documents, the oracle, a trust bundle for the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from aicert.trust.pem import load_certificates
from tests.fuzz.genuine import ASSETS, Oracle, Seed, ca_certificate, genuine_seeds, tsa_identity


@pytest.fixture(scope="session")
def seeds() -> list[Seed]:
    return genuine_seeds()


@pytest.fixture(scope="session")
def oracle(seeds: list[Seed]) -> Oracle:
    return Oracle(seeds)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA and the Azure root in one PEM file, for `aicert verify --trust-bundle`."""
    azure = load_certificates((ASSETS / "azure-virtual-tpm-root-ca-2023.crt").read_bytes())
    path = tmp_path_factory.mktemp("trust") / "bundle.pem"
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in [ca_certificate(), *azure]))
    return path


@pytest.fixture(scope="session")
def tsa_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeds' TSA root, for `aicert verify --tsa-bundle` (the oracle trusts it too)."""
    path = tmp_path_factory.mktemp("tsa") / "tsa-root.pem"
    path.write_bytes(tsa_identity().root.public_bytes(Encoding.PEM))
    return path
