"""The agent's confidential-VM evidence against a real swtpm and a real HTTP server on loopback:
a synthetic HCL report written to NV index 0x01400001 as Azure's paravisor writes it, read back
through `Tpm.read_nv` and `read_hcl_report`, then verified as the verifier will."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography import x509
from tests.cvm_vectors import AT, make_vector
from tests.local_http import Answer, serving
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

from aicert.cvm import verify_platform
from aicert_agent.platform import HCL_REPORT_NV_INDEX, PlatformError, platform_evidence, read_hcl_report
from aicert_agent.tpm.client import Tpm, TpmError
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration

NV_ATTRIBUTES = TPMA_NV.OWNERWRITE | TPMA_NV.AUTHWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA


def write_nv_index(tpm: Tpm, index: int, data: bytes) -> None:
    """Define `index` sized to `data` and write it in chunks, as the paravisor fills its index."""
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=NV_ATTRIBUTES, dataSize=len(data)
        )
    )
    nv = tpm.esapi.nv_define_space(None, public, ESYS_TR.OWNER)
    try:
        for offset in range(0, len(data), tpm.nv_buffer_max):
            chunk = data[offset : offset + tpm.nv_buffer_max]
            tpm.esapi.nv_write(nv, chunk, offset, auth_handle=ESYS_TR.OWNER)
    finally:
        tpm.tr_close(nv)


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[Tpm]:
    with Tpm(swtpm.spec) as opened:
        yield opened


@pytest.fixture
def imds() -> Iterator[Answer]:
    with serving() as answer:
        yield answer


def test_the_hcl_report_is_read_back_from_nv_and_verifies(tpm: Tpm) -> None:
    vector = make_vector()
    assert len(vector.hcl_report) == 2048  # the size of Azure's index, more than one NV read
    write_nv_index(tpm, HCL_REPORT_NV_INDEX, vector.hcl_report)
    assert tpm.read_nv(HCL_REPORT_NV_INDEX) == vector.hcl_report
    report = read_hcl_report(tpm)
    assert report == vector.hcl_report
    facts = verify_platform(
        report,
        vector.certificates,
        vector.ak_spki_der,
        AT,
        vector.ark_fingerprints,
        known_measurements=vector.known_measurements,
    )
    assert facts.product == "Milan-B0"


def test_no_nv_index_means_no_confidential_vm(tpm: Tpm) -> None:
    with pytest.raises(TpmError, match="NV index 0x01400001 is not defined"):
        tpm.read_nv(HCL_REPORT_NV_INDEX)
    with pytest.raises(PlatformError, match="is this an Azure confidential VM"):
        read_hcl_report(tpm)


def test_an_index_without_an_hcl_report_is_refused_naming_the_field(tpm: Tpm) -> None:
    write_nv_index(tpm, HCL_REPORT_NV_INDEX, b"HCLB" + make_vector().hcl_report[4:])
    with pytest.raises(
        PlatformError, match=r"evidence.platform.hclReport: header.signature \(offset 0x000\)"
    ):
        read_hcl_report(tpm)


def test_platform_evidence_holds_the_nv_report_and_the_imds_chain(tpm: Tpm, imds: Answer) -> None:
    vector = make_vector()
    write_nv_index(tpm, HCL_REPORT_NV_INDEX, vector.hcl_report)
    imds.body = vector.thim_answer()
    evidence = platform_evidence(tpm, thim_url=imds.url)
    assert evidence == vector.evidence_platform()
    certificates = [x509.load_pem_x509_certificate(pem.encode()) for pem in evidence["certificateChain"]]
    report = base64.b64decode(evidence["hclReport"])
    verify_platform(
        report,
        certificates,
        vector.ak_spki_der,
        AT,
        vector.ark_fingerprints,
        known_measurements=vector.known_measurements,
    )


def test_a_vcek_for_another_chip_is_caught_by_the_agent(tpm: Tpm, imds: Answer) -> None:
    write_nv_index(tpm, HCL_REPORT_NV_INDEX, make_vector().hcl_report)
    imds.body = make_vector(vcek_chip_id=bytes(64)).thim_answer()
    with pytest.raises(PlatformError, match="does not fit the HCL report: the VCEK is for chip 0000"):
        platform_evidence(tpm, thim_url=imds.url)
