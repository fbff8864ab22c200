"""The agent fetches the VCEK chain from Azure's IMDS (THIM), here a real HTTP server on loopback
answering as IMDS does: `{"vcekCert": PEM, "certificateChain": PEM of ASK then ARK, ...}`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.cvm_vectors import AT, make_vector
from tests.local_http import Answer, serving

from aicert.cvm import check_vcek_chain
from aicert_agent.platform import PlatformError, fetch_vcek_chain


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
