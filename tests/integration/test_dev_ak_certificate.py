"""Dev provisioning replaces an AK certificate of its own that verifiers would refuse, keeping the AK,
and still refuses to touch a certificate that is not its own (against a real swtpm)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration.conftest import ProvisionedTpm

from aicert.trust import TCG_KP_AIK_CERTIFICATE, TrustStore, ak_certificate_problem, build_path
from aicert_agent.tpm import provision
from aicert_agent.tpm.devca import CA_KEY_FILE
from aicert_agent.tpm.provision import ak_common_name, dev_provision, store_ak_certificate


def old_style_certificate(
    provisioned: ProvisionedTpm, ca_key_file: Path, *, with_aik_eku: bool, not_after: dt.datetime
) -> x509.Certificate:
    """What the dev CA would have issued for this AK without the AIK EKU, or with another validity."""
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ak_pem = provisioned.result.ak_public_pem
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, ak_common_name(ak_pem))]))
        .issuer_name(provisioned.ca.certificate.subject)
        .public_key(serialization.load_pem_public_key(ak_pem.encode()))  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    )
    if with_aik_eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def reprovision_replaces(provisioned: ProvisionedTpm, stale: x509.Certificate, why: str) -> None:
    now = dt.datetime.now(dt.UTC)
    problem = provision._current_form_problem(stale)
    assert problem is not None and why in problem  # not in the form the dev CA issues today
    with provisioned.open() as tpm:
        store_ak_certificate(tpm, stale.public_bytes(serialization.Encoding.DER), replace=True)
        again = dev_provision(tpm, provisioned.ca)
        assert tpm.ak_certificate_der() == again.certificate_der
    assert not again.created_ak and again.issued_certificate
    assert again.ak_public_pem == provisioned.result.ak_public_pem
    dev = TrustStore.from_certificates([provisioned.ca.certificate], "dev", dev_level=True)
    assert build_path(again.certificate, [], dev, now).certificates[0] == again.certificate


def test_own_certificate_without_aik_eku_is_reissued(provisioned_tpm: ProvisionedTpm, tmp_path: Path) -> None:
    stale = old_style_certificate(
        provisioned_tpm,
        tmp_path / "dev-ca" / CA_KEY_FILE,
        with_aik_eku=False,
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=300),
    )
    assert (
        ak_certificate_problem(stale, dt.datetime.now(dt.UTC)) is None
    )  # verifiers accept no EKU (Azure 2023)
    reprovision_replaces(provisioned_tpm, stale, "lacks the TCG AIK extended key usage")


def test_own_expired_certificate_is_reissued(provisioned_tpm: ProvisionedTpm, tmp_path: Path) -> None:
    stale = old_style_certificate(
        provisioned_tpm,
        tmp_path / "dev-ca" / CA_KEY_FILE,
        with_aik_eku=True,
        not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    )
    reprovision_replaces(provisioned_tpm, stale, "expired on")
