from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from tests.pki import NOW, issue

from aicert.cli import main
from aicert.trust import (
    AZURE_ROOT_SHA256,
    ChainError,
    TrustError,
    TrustStore,
    build_path,
    install_named,
    load_named,
)
from aicert.trust.pem import fingerprint, load_pem_bundle


def store_of(*certs: object) -> TrustStore:
    return TrustStore.from_certificates([c.cert for c in certs], "test", dev_level=False)  # type: ignore[attr-defined]


def test_pinned_fingerprint_is_the_shared_azure_root(azure_dir: Path) -> None:
    root = load_pem_bundle((azure_dir / "azure-virtual-tpm-root-ca-2023.crt").read_bytes())[0]
    assert fingerprint(root) == AZURE_ROOT_SHA256


def test_install_azure_only_with_the_pinned_root(azure_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrustError, match="does not hold the Azure Virtual TPM Root CA 2023"):
        install_named("azure", issue("Fake Azure Root").pem, "fake.pem", tmp_path)
    with pytest.raises(TrustError, match="does not hold"):  # an intermediate alone is not the root
        install_named("azure", (azure_dir / "global-virtual-tpm-ca-01.crt").read_bytes(), "ca01", tmp_path)
    assert not (tmp_path / "azure").exists()
    install_named("azure", (azure_dir / "azure-virtual-tpm-root-ca-2023.crt").read_bytes(), "root", tmp_path)
    store = load_named("azure", tmp_path)
    assert [a.max_assurance for a in store.anchors] == ["vtpm"]


def test_installed_azure_store_is_checked_again_on_load(azure_dir: Path, tmp_path: Path) -> None:
    install_named("azure", (azure_dir / "azure-virtual-tpm-root-ca-2023.crt").read_bytes(), "root", tmp_path)
    (tmp_path / "azure" / "bundle.pem").write_bytes(issue("Swapped Root").pem)
    with pytest.raises(TrustError, match="does not hold the Azure"):
        load_named("azure", tmp_path)


def test_dev_store_vouches_for_dev_only(tmp_path: Path) -> None:
    install_named("dev", issue("Dev CA").pem, "dev-ca.pem", tmp_path)
    assert [a.max_assurance for a in load_named("dev", tmp_path).anchors] == ["dev"]


def test_missing_store_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match="aicert trust install azure"):
        load_named("azure", tmp_path)


def test_cli_trust_install(azure_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICERT_TRUST_DIR", str(tmp_path))
    fake = tmp_path / "fake.pem"
    fake.write_bytes(issue("Fake").pem)
    assert main(["trust", "install", "azure", "--from", str(fake)]) == 2
    assert (
        main(["trust", "install", "azure", "--from", str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt")])
        == 0
    )
    assert load_named("azure").anchors


def test_path_through_intermediates_in_any_order() -> None:
    root = issue("Root", path_length=1)
    mid = issue("Mid", root, path_length=0)
    leaf = issue("AK", mid, ca=False)
    path = build_path(leaf.cert, [root.cert, mid.cert], store_of(root), NOW)
    assert [c.subject for c in path.certificates] == [leaf.cert.subject, mid.cert.subject, root.cert.subject]


def test_expired_intermediate_is_named() -> None:
    root = issue("Root")
    mid = issue("Mid", root, not_after=NOW - dt.timedelta(days=1))
    leaf = issue("AK", mid, ca=False)
    with pytest.raises(ChainError, match="CA certificate CN=Mid expired on"):
        build_path(leaf.cert, [mid.cert], store_of(root), NOW)


def test_issuer_that_is_not_a_ca_is_refused() -> None:
    root = issue("Root")
    not_ca = issue("Leafy", root, ca=False, key_usage="none")
    leaf = issue("AK", not_ca, ca=False)
    with pytest.raises(ChainError, match="CN=Leafy issues certificates but is not marked as a CA"):
        build_path(leaf.cert, [not_ca.cert], store_of(root), NOW)


def test_path_length_is_enforced() -> None:
    root = issue("Root", path_length=0)
    mid = issue("Mid", root)
    leaf = issue("AK", mid, ca=False)
    with pytest.raises(ChainError, match="allows 0 intermediate CAs"):
        build_path(leaf.cert, [mid.cert], store_of(root), NOW)


def test_ak_certificate_must_allow_signing() -> None:
    root = issue("Root")
    leaf = issue("AK", root, ca=False, key_usage="certsign-only")
    with pytest.raises(ChainError, match="does not allow digital signatures"):
        build_path(leaf.cert, [], store_of(root), NOW)


def test_ak_certificate_must_not_be_a_ca() -> None:
    root = issue("Root")
    leaf = issue("AK", root, ca=True)
    with pytest.raises(ChainError, match="must not be a CA"):
        build_path(leaf.cert, [], store_of(root), NOW)


def test_forged_issuer_name_is_not_a_path() -> None:
    root = issue("Root")
    impostor = issue("Root")  # same name, other key
    leaf = issue("AK", impostor, ca=False)
    with pytest.raises(ChainError, match="no path"):
        build_path(leaf.cert, [], store_of(root), NOW)
