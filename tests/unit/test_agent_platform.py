"""The agent fetches the VCEK chain from Azure's IMDS (THIM), here a real HTTP server on loopback
answering as IMDS does: `{"vcekCert": PEM, "certificateChain": PEM of ASK then ARK, ...}`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.cvm_vectors import AT, MEASUREMENT, make_vector, rsa_key
from tests.local_http import Answer, serving
from tests.pki import issue
from tests.soft_tpm import certificate_with_key

from aicert.cvm import check_vcek_chain
from aicert.trust.measurements import KnownMeasurement, KnownMeasurements
from aicert_agent.platform import PlatformError, cvm_problem, fetch_vcek_chain


@pytest.fixture(scope="module")
def imds_server() -> Iterator[Answer]:
    """One server for the module (shutting one down takes its poll interval)."""
    with serving() as answer:
        yield answer


@pytest.fixture
def imds(imds_server: Answer) -> Answer:
    imds_server.reset()
    return imds_server


def thim_answer(**changes: object) -> bytes:
    return make_vector().thim_answer(**changes)


def test_the_chain_comes_back_vcek_first_and_verifies(imds: Answer) -> None:
    vector = make_vector()
    imds.body = vector.thim_answer()
    chain = fetch_vcek_chain(imds.url)
    assert chain == vector.certificate_chain_pem()
    assert imds.headers[0].get("Metadata") == "true"
    assert check_vcek_chain(vector.certificates, AT, vector.ark_fingerprints) == vector.certificates[0]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b"{}", "could not be fetched"),
        (404, b"", "could not be fetched"),
        (200, b"<html>", "is not JSON"),
        (200, b'{"vcekCert": "", "vcekCert": ""}', "more than once"),
        (200, b"[]", "not an object"),
        (200, thim_answer(vcekCert=None), "without PEM certificates in `vcekCert`"),
        (
            200,
            thim_answer(certificateChain="-----BEGIN CERTIFICATE-----\nAAAA\n"),
            "unreadable `certificateChain`",
        ),
        (200, thim_answer(vcekCert=make_vector().certificate_chain_pem()[0] * 2), "2 VCEK and 2 chain"),
        (
            200,
            thim_answer(certificateChain="".join(make_vector().certificate_chain_pem() * 2)),
            "and 6 chain",
        ),
    ],
)
def test_a_bad_answer_is_a_clear_error(imds: Answer, status: int, body: bytes, message: str) -> None:
    imds.status, imds.body = status, body
    with pytest.raises(PlatformError, match=message):
        fetch_vcek_chain(imds.url)


def test_an_answer_larger_than_the_limit_is_refused(imds: Answer) -> None:
    imds.body = thim_answer(padding="x" * 5000)
    with pytest.raises(PlatformError, match="more than 4096 bytes"):
        fetch_vcek_chain(imds.url, max_bytes=4096)


def test_an_unreachable_endpoint_is_a_clear_error() -> None:
    with pytest.raises(PlatformError, match=r"could not be fetched from http://127\.0\.0\.1:9/"):
        fetch_vcek_chain("http://127.0.0.1:9/metadata/THIM/amd/certification", timeout=5)


# --- the agent's own check before it labels a cvm node --------------------------------------------


def test_a_cvm_node_is_labelled_only_when_a_verifier_would_grant_cvm() -> None:
    """`cvm_problem` runs the verifier's platform checks on the agent's own AK and evidence."""
    vector = make_vector()
    known = vector.known_measurements
    ak = certificate_with_key(issue("vTPM CA"), rsa_key(0).public_key())  # the vector's quote AK
    assert cvm_problem(vector.evidence_platform(), ak, vector.ark_fingerprints, known) is None
    assert "this node read no confidential-VM evidence" in str(
        cvm_problem(None, ak, vector.ark_fingerprints, known)
    )
    other_ak = certificate_with_key(issue("vTPM CA"), rsa_key(7).public_key())
    assert str(cvm_problem(vector.evidence_platform(), other_ak, vector.ark_fingerprints, known)).startswith(
        "cvm-ak:"
    )
    # AMD's own roots (the default) did not sign the test chip
    assert str(cvm_problem(vector.evidence_platform(), ak, None, known)).startswith("cvm-chain:")


def test_a_cvm_node_whose_paravisor_is_not_known_good_is_not_labelled() -> None:
    """The agent holds its own VM to the verifier's `cvm-measurement` rule, by the same function:
    no list, or a list without this VM's launch measurement, and it does not claim cvm."""
    vector = make_vector()
    ak = certificate_with_key(issue("vTPM CA"), rsa_key(0).public_key())
    no_list = cvm_problem(vector.evidence_platform(), ak, vector.ark_fingerprints)
    assert str(no_list).startswith("cvm-measurement:") and "no known-good" in str(no_list)
    other = KnownMeasurements((KnownMeasurement("ab" * 48, "another paravisor"),), "list.txt")
    unknown = cvm_problem(vector.evidence_platform(), ak, vector.ark_fingerprints, other)
    assert str(unknown).startswith("cvm-measurement:") and MEASUREMENT.hex() in str(unknown)
