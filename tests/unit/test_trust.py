from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from tests.pki import NOW, Issued, issue

from aicert.certificate import Assurance
from aicert.cli import main
from aicert.trust import (
    AZURE_ROOT_SHA256,
    TCG_KP_AIK_CERTIFICATE,
    ChainError,
    TrustAnchor,
    TrustError,
    TrustStore,
    ak_certificate_problem,
    build_path,
    install_named,
    load_named,
    load_trust_store,
)
from aicert.trust.pem import fingerprint, load_any, load_pem_bundle
from aicert.verify import Check, VerificationError, Verifier
from aicert_agent.tpm.devca import DevCA

LEGACY_AT = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
ROOT_FILE = "azure-virtual-tpm-root-ca-2023.crt"
INTERMEDIATE_FILE = "global-virtual-tpm-ca-01.crt"


def store_of(*certs: object) -> TrustStore:
    return TrustStore.from_certificates([c.cert for c in certs], "test", dev_level=False)  # type: ignore[attr-defined]


def ak(
    issuer: Issued, *, usages: Sequence[ObjectIdentifier] | None = (TCG_KP_AIK_CERTIFICATE,)
) -> x509.Certificate:
    """An AK certificate as a TPM vendor issues it: CA:false, digitalSignature, the given EKUs."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AK")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def der_copy(source: Path, target: Path) -> Path:
    target.write_bytes(load_pem_bundle(source.read_bytes())[0].public_bytes(Encoding.DER))
    return target


def legacy_leaf(azure_dir: Path) -> x509.Certificate:
    proof = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    return load_any(proof["remote_attestation"]["cert_chain"][0]["base64"].encode())


def proof_with_leaf_only(azure_dir: Path, target: Path) -> Path:
    """The old proof without its intermediate and root: only the AK certificate."""
    proof: dict[str, Any] = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    proof["remote_attestation"]["cert_chain"] = proof["remote_attestation"]["cert_chain"][:1]
    target.write_text(json.dumps(proof))
    return target


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
    leaf = ak(mid)
    path = build_path(leaf, [root.cert, mid.cert], store_of(root), NOW)
    assert path.certificates == (leaf, mid.cert, root.cert)


def test_expired_intermediate_is_named() -> None:
    root = issue("Root")
    mid = issue("Mid", root, not_after=NOW - dt.timedelta(days=1))
    with pytest.raises(ChainError, match="CA certificate CN=Mid expired on"):
        build_path(ak(mid), [mid.cert], store_of(root), NOW)


def test_issuer_that_is_not_a_ca_is_refused() -> None:
    root = issue("Root")
    not_ca = issue("Leafy", root, ca=False, key_usage="none")
    with pytest.raises(ChainError, match="CN=Leafy issues certificates but is not marked as a CA"):
        build_path(ak(not_ca), [not_ca.cert], store_of(root), NOW)


def test_path_length_is_enforced() -> None:
    root = issue("Root", path_length=0)
    mid = issue("Mid", root)
    with pytest.raises(ChainError, match="allows 0 intermediate CAs"):
        build_path(ak(mid), [mid.cert], store_of(root), NOW)


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
    with pytest.raises(ChainError, match="no path"):
        build_path(ak(impostor), [], store_of(root), NOW)


# -- the AK certificate's extended key usage: the AIK EKU, Microsoft's, or none at all ---------------

MICROSOFT_AK = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")


def test_real_azure_ak_certificate_carries_microsofts_and_the_aik_eku(azure_dir: Path) -> None:
    leaf = legacy_leaf(azure_dir)
    usages = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [MICROSOFT_AK, TCG_KP_AIK_CERTIFICATE]  # what docs/verification.md says it carries
    assert ak_certificate_problem(leaf, LEGACY_AT) is None


@pytest.mark.parametrize("level", ["vtpm", "dev"])
@pytest.mark.parametrize(
    "usages",
    [None, [TCG_KP_AIK_CERTIFICATE], [MICROSOFT_AK], [MICROSOFT_AK, TCG_KP_AIK_CERTIFICATE]],
    ids=["no-eku-extension", "aik-only", "microsoft-only", "microsoft-and-aik"],
)
def test_ak_certificate_eku_forms_azure_issued_are_accepted(
    level: Assurance, usages: Sequence[ObjectIdentifier] | None
) -> None:
    root = issue("Root")
    store = TrustStore((TrustAnchor(root.cert, level, "test"),))
    leaf = ak(root, usages=usages)
    assert build_path(leaf, [], store, NOW).certificates == (leaf, root.cert)


@pytest.mark.parametrize("level", ["vtpm", "dev"])
@pytest.mark.parametrize(
    "usages",
    [
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
        [ObjectIdentifier("2.23.133.8.1")],  # the TCG EK EKU: an endorsement key, not an AK
    ],
    ids=["tls-server-only", "tls-server-and-client", "any-eku", "tcg-ek-eku"],
)
def test_ak_certificate_with_another_eku_set_is_refused(
    level: Assurance, usages: Sequence[ObjectIdentifier]
) -> None:
    root = issue("Root")
    store = TrustStore((TrustAnchor(root.cert, level, "test"),))
    with pytest.raises(ChainError) as err:
        build_path(ak(root, usages=usages), [], store, NOW)
    listed = ", ".join(u.dotted_string for u in usages)
    assert str(err.value) == (
        f"the AK certificate's extended key usage ({listed}) lists neither the TCG AIK usage "
        "(tcg-kp-AIKCertificate, 2.23.133.8.3) nor Microsoft's AK usage (1.3.6.1.4.1.311.10.3.12)"
    )


def test_foreign_eku_fails_the_ak_chain_check(azure_dir: Path) -> None:
    root = issue("Root")
    proof: dict[str, Any] = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    leaf = ak(root, usages=[ExtendedKeyUsageOID.SERVER_AUTH])
    proof["remote_attestation"]["cert_chain"] = [
        {"base64": base64.b64encode(leaf.public_bytes(Encoding.DER)).decode()}
    ]
    with pytest.raises(VerificationError, match="lists neither the TCG AIK usage") as err:
        Verifier(store_of(root)).verify(json.dumps(proof), at=NOW)
    assert err.value.check is Check.AK_CHAIN


def test_dev_ca_issues_the_aik_eku() -> None:
    ca = DevCA.create(now=NOW)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    certificate = ca.issue_ak_certificate(key, "aicert dev AK test", now=NOW)
    dev = TrustStore.from_certificates([ca.certificate], "dev", dev_level=True)
    assert build_path(certificate, [], dev, NOW).certificates == (certificate, ca.certificate)


# -- DER wherever PEM is accepted -------------------------------------------------------------------


def test_install_azure_from_der(azure_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICERT_TRUST_DIR", str(tmp_path / "trust"))
    der = der_copy(azure_dir / ROOT_FILE, tmp_path / "root.crt")
    assert main(["trust", "install", "azure", "--from", str(der)]) == 0
    assert [a.max_assurance for a in load_named("azure").anchors] == ["vtpm"]
    assert (
        (tmp_path / "trust" / "azure" / "bundle.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    )


def test_trust_bundle_in_der(azure_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    der = der_copy(azure_dir / ROOT_FILE, tmp_path / "root.crt")
    proof = str(azure_dir / "aicert-proof-sample.json")
    assert main(["verify", proof, "--trust-bundle", str(der), "--at", "2024-06-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out.startswith("VERIFIED  ")


def test_a_file_neither_pem_nor_der_is_refused(
    azure_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"not a certificate")
    assert main(["verify", str(azure_dir / "aicert-proof-sample.json"), "--trust-bundle", str(junk)]) == 2
    assert "neither PEM certificates nor a DER certificate" in capsys.readouterr().err
    damaged = tmp_path / "damaged.crt"
    damaged.write_bytes(b"\x30\x03abc")
    with pytest.raises(TrustError, match="not a readable DER certificate"):
        TrustStore.from_bundle_file(damaged)


# -- bundle files are judged together ---------------------------------------------------------------


def test_root_and_intermediate_in_separate_bundles(
    azure_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = proof_with_leaf_only(azure_dir, tmp_path / "proof.json")
    intermediate = der_copy(azure_dir / INTERMEDIATE_FILE, tmp_path / "ca01.crt")
    args = ["verify", str(proof), "--at", "2024-06-01T00:00:00Z"]
    bundles = ["--trust-bundle", str(intermediate), "--trust-bundle", str(azure_dir / ROOT_FILE)]
    assert main([*args, *bundles]) == 0
    assert capsys.readouterr().out.startswith("VERIFIED  ")
    assert main([*args, "--trust-bundle", str(azure_dir / ROOT_FILE)]) == 1  # the intermediate is needed
    assert "check ak-chain failed: no path" in capsys.readouterr().err


def test_bundles_without_any_root_are_refused(azure_dir: Path, tmp_path: Path) -> None:
    only_intermediates = [
        azure_dir / INTERMEDIATE_FILE,
        der_copy(azure_dir / INTERMEDIATE_FILE, tmp_path / "c.crt"),
    ]
    with pytest.raises(TrustError, match=r"the trust bundles \(.*ca-01.crt, .*c.crt\) hold no root"):
        load_trust_store([], only_intermediates, tmp_path)


def test_intermediate_bundle_may_complete_a_named_store(azure_dir: Path, tmp_path: Path) -> None:
    install_named("azure", (azure_dir / ROOT_FILE).read_bytes(), "root", tmp_path)
    store = load_trust_store(["azure"], [azure_dir / INTERMEDIATE_FILE], tmp_path)
    path = build_path(legacy_leaf(azure_dir), [], store, LEGACY_AT)
    assert path.anchor.max_assurance == "vtpm" and len(path.certificates) == 3


def test_no_flag_trusts_the_azure_store_only(azure_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrustError, match="'azure' trust store is not installed"):
        load_trust_store([], [], tmp_path)
    install_named("dev", issue("Dev CA").pem, "dev-ca.pem", tmp_path)
    install_named("azure", (azure_dir / ROOT_FILE).read_bytes(), "root", tmp_path)
    assert [a.max_assurance for a in load_trust_store([], [], tmp_path).anchors] == ["vtpm"]
