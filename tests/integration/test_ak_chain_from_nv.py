"""The agent's start against a real swtpm: the AK certificate read from NV 0x01C101D0, issued by an
Azure-shaped intermediate that only its AIA URL serves (a real http.server on 127.0.0.1), is chained
to the root and the intermediates are what the agent embeds; the certificate in NV is the AK's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import Encoding
from tests.integration.conftest import ProvisionedTpm
from tests.pki import NOW, Issued, issue
from tests.unit.test_ak_hierarchies import (
    CA_USAGES,
    MICROSOFT_AK,
    AiaServer,
    aia_server,
    only_root,
    root_2023,
)

from aicert.trust import TCG_KP_AIK_CERTIFICATE
from aicert_agent.ak_chain import chain_at_start
from aicert_agent.local_run import ak_identity
from aicert_agent.tpm.provision import store_ak_certificate

__all__ = ["aia_server"]  # the fixture, used by name


def certificate_for_the_tpms_ak(provisioned: ProvisionedTpm, issuer: Issued, ca_issuers_url: str) -> bytes:
    key = serialization.load_pem_public_key(provisioned.result.ak_public_pem.encode())
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "vm.TrustedVM.Azure.Microsoft")])
        )
        .issuer_name(issuer.cert.subject)
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([MICROSOFT_AK, TCG_KP_AIK_CERTIFICATE]), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url),
                    )
                ]
            ),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )


def test_ak_from_nv_chains_by_aia_four_deep(
    provisioned_tpm: ProvisionedTpm, aia_server: AiaServer, tmp_path: Path
) -> None:
    root = root_2023()
    ca2025 = issue("Azure Cloud Virtual TPM CA 2025", root, path_length=1, usages=CA_USAGES, key_ids=True)
    ca11 = issue(
        "Azure Cloud Virtual TPM CA - 11",
        ca2025,
        path_length=0,
        usages=CA_USAGES,
        key_ids=True,
        ca_issuers_url=aia_server.url("/ca-2025.crt"),
    )
    aia_server.routes.update({"/ca-11.crt": ca11.cert.public_bytes(Encoding.DER), "/ca-2025.crt": ca2025.pem})
    leaf_der = certificate_for_the_tpms_ak(provisioned_tpm, ca11, aia_server.url("/ca-11.crt"))
    with provisioned_tpm.open() as tpm:
        store_ak_certificate(tpm, leaf_der, replace=True)
        ak = ak_identity(tpm, ())
    chained, report = chain_at_start(ak, only_root(root), tmp_path, fetch_aia=True, at=NOW)
    assert report.chained, report.message
    embedded = [x509.load_pem_x509_certificate(p.encode()) for p in chained.certificate_chain]
    assert embedded == [x509.load_der_x509_certificate(leaf_der), ca11.cert, ca2025.cert]
    assert chained.public_pem == provisioned_tpm.result.ak_public_pem
